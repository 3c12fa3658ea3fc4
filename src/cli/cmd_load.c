/* `zerostart load`: open a checkpoint, load it to a device, print the timing breakdown
 * (or one JSON object with --json), optionally verify every byte. `--tp N` hands over to
 * cmd_load_tp.c. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "zerostart/ckpt.h"
#include "zerostart/load.h"
#include "zerostart/pool.h"
#include "zerostart/verify.h"

typedef struct load_args {
    const char *path;
    const char *device;
    zs_load_opts_t opts;
    int verify, json, use_pool, tp, staging_set;
    zs_pool_opts_t pool;
} load_args_t;

static _Atomic uint64_t g_progress_done;

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    (void)ctx;
    (void)total;
    uint64_t cur = atomic_load(&g_progress_done);
    while (done > cur && !atomic_compare_exchange_weak(&g_progress_done, &cur, done)) {
    }
}

static void draw_bar(uint64_t done, uint64_t total, double elapsed) {
    int width = 40, fill = total ? (int)((double)done / (double)total * width) : width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %5.1f%% %6.2f GB/s", bar, total ? 100.0 * (double)done / (double)total : 100.0,
            elapsed > 0 ? (double)done / elapsed / 1e9 : 0.0);
}

static int parse_load_args(int argc, char **argv, load_args_t *a) {
    zs_load_opts_default(&a->opts);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        uint64_t sz;
        if (strcmp(o, "--verify") == 0) a->verify = 1;
        else if (strcmp(o, "--json") == 0) a->json = 1;
        else if (strcmp(o, "--readahead") == 0) a->opts.readahead = 1;
        else if (strcmp(o, "--pool") == 0) a->use_pool = 1;
        else if (strcmp(o, "--pool-dir") == 0 && v) a->pool.dir = argv[++i], a->use_pool = 1;
        else if (strcmp(o, "--pool-size") == 0 && v) {
            if (zs_cli_parse_size(argv[++i], &a->pool.capacity) != 0) {
                fprintf(stderr, "zerostart load: --pool-size wants a size like 64G, got '%s'\n", v);
                return -1;
            }
            a->use_pool = 1;
        }
        else if (strcmp(o, "--device") == 0 && v) a->device = argv[++i];
        else if (strcmp(o, "--tp") == 0 && v) {
            if (zs_cli_parse_int(argv[++i], 1, ZS_TP_MAX_RANKS, &n) != 0) {
                fprintf(stderr, "zerostart load: --tp wants 1..%d ranks, got '%s'\n", ZS_TP_MAX_RANKS, v);
                return -1;
            }
            a->tp = (int)n;
        }
        else if (strcmp(o, "--threads") == 0 && v) {
            if (zs_cli_parse_int(argv[++i], 1, 256, &n) != 0) {
                fprintf(stderr, "zerostart load: --threads wants 1..256, got '%s'\n", v);
                return -1;
            }
            a->opts.threads = (int)n;
        } else if (strcmp(o, "--slots") == 0 && v) {
            if (zs_cli_parse_int(argv[++i], 1, 8, &n) != 0) {
                fprintf(stderr, "zerostart load: --slots wants 1..8, got '%s'\n", v);
                return -1;
            }
            a->opts.staging_slots = (int)n;
        } else if ((strcmp(o, "--chunk") == 0 || strcmp(o, "--staging") == 0) && v) {
            if (zs_cli_parse_size(argv[++i], &sz) != 0 || sz == 0) {
                fprintf(stderr, "zerostart load: %s wants a size like 4M or 1G, got '%s'\n", o, v);
                return -1;
            }
            if (o[2] == 'c') a->opts.chunk_bytes = sz;
            else a->opts.staging_bytes = sz, a->staging_set = 1;
        } else if (strcmp(o, "--direct") == 0 && v) {
            i++;
            if (strcmp(v, "auto") == 0) a->opts.direct_io = -1;
            else if (strcmp(v, "on") == 0) a->opts.direct_io = 1;
            else if (strcmp(v, "off") == 0) a->opts.direct_io = 0;
            else {
                fprintf(stderr, "zerostart load: --direct wants auto, on or off, got '%s'\n", v);
                return -1;
            }
        } else if (o[0] == '-') {
            fprintf(stderr, "zerostart load: unknown or incomplete option '%s'\n", o);
            return -1;
        } else if (a->path == NULL) a->path = o;
        else {
            fprintf(stderr, "zerostart load: unexpected argument '%s'\n", o);
            return -1;
        }
    }
    if (a->path == NULL) {
        fprintf(stderr, "usage: zerostart load PATH [--device cuda:N|cpu] [--threads N] [--chunk SIZE] "
                        "[--staging SIZE] [--slots N] [--direct auto|on|off] [--readahead] [--pool] [--pool-dir DIR] "
                        "[--pool-size SIZE] [--tp N] [--verify] [--json]\n");
        return -1;
    }
    if (a->tp > 0 && (a->use_pool || a->opts.readahead || a->staging_set)) {
        fprintf(stderr, "zerostart load: --tp does not support --pool, --readahead or --staging\n");
        return -1;
    }
    return 0;
}

static void print_json(const load_args_t *a, const zs_ckpt_t *ck, const zs_weights_t *w,
                       double t_exec_start, double t_resident, int verified, int pool_how, double pool_s,
                       double pin_s) {
    const zs_load_stats_t *s = &w->stats;
    double load_s = s->total_s - s->setup_s;
    printf("{\"path\":\"%s\",\"device\":\"%s\",\"device_name\":\"%s\",\"files\":%u,\"tensors\":%zu,"
           "\"bytes\":%llu,\"alloc_bytes\":%llu,\"parse_s\":%.6f,\"setup_s\":%.6f,\"read_s\":%.6f,"
           "\"copy_tail_s\":%.6f,\"load_s\":%.6f,\"total_s\":%.6f,\"gbps\":%.3f,\"bytes_direct\":%llu,"
           "\"readahead\":%s,\"threads\":%d,\"chunk_bytes\":%zu,\"staging_bytes\":%zu,\"main_start_mono\":%.6f,"
           "\"resident_mono\":%.6f,\"verified\":%s,\"source\":\"%s\",\"pool_s\":%.6f,\"pin_s\":%.6f}\n",
           a->path, w->device.kind == ZS_DEV_CUDA ? "cuda" : "cpu",
           w->device.kind == ZS_DEV_CUDA ? zs_gpu_device_name(w->device.index) : "host",
           ck->nfiles, ck->ntensors, (unsigned long long)s->bytes, (unsigned long long)w->bytes,
           s->parse_s, s->setup_s, s->read_s, s->copy_tail_s, load_s, s->parse_s + s->total_s,
           load_s > 0 ? (double)s->bytes / load_s / 1e9 : 0.0, (unsigned long long)s->bytes_direct,
           a->opts.readahead ? "true" : "false", s->threads, s->chunk_bytes, s->staging_bytes, t_exec_start, t_resident,
           verified ? "true" : "false",
           pool_how == 0 ? "storage" : pool_how == ZS_POOL_HIT ? "pool" : "pool-filled", pool_s, pin_s);
}

static void print_table(const zs_ckpt_t *ck, const zs_weights_t *w, int pool_how, double pool_s, double pin_s) {
    const zs_load_stats_t *s = &w->stats;
    char b1[32], b2[32], b3[32];
    double load_s = s->total_s - s->setup_s;
    printf("model    %s: %u file(s), %zu tensors, %s (allocation %s)\n", ck->dir, ck->nfiles,
           ck->ntensors, zs_cli_fmt_bytes(ck->total_bytes, b1, sizeof b1),
           zs_cli_fmt_bytes(w->bytes, b2, sizeof b2));
    if (w->device.kind == ZS_DEV_CUDA)
        printf("device   cuda:%d (%s), %d reader threads, %s chunks, %s pinned staging\n", w->device.index,
               zs_gpu_device_name(w->device.index), s->threads,
               zs_cli_fmt_bytes(s->chunk_bytes, b1, sizeof b1), zs_cli_fmt_bytes(s->staging_bytes, b3, sizeof b3));
    else
        printf("device   cpu (host memory), %d reader threads, %s chunks\n", s->threads,
               zs_cli_fmt_bytes(s->chunk_bytes, b1, sizeof b1));
    printf("parse    %8.3f s   headers and index\n", s->parse_s);
    if (pool_how != 0) {
        printf("pool     %8.3f s   %s\n", pool_s, zs_cli_pool_source_name(pool_how));
        if (w->device.kind == ZS_DEV_CUDA) printf("pin      %8.3f s   page-locking the pool segment\n", pin_s);
    }
    printf("setup    %8.3f s   %s\n", s->setup_s,
           w->device.kind == ZS_DEV_CUDA ? "CUDA context + device allocation" : "host allocation");
    printf("read     %8.3f s   %s %s, %.0f%% with O_DIRECT\n", s->read_s, zs_cli_fmt_bytes(s->bytes, b1, sizeof b1),
           pool_how ? "copied from the pool" : "read", s->bytes ? 100.0 * (double)s->bytes_direct / (double)s->bytes : 0.0);
    printf("copy     %8.3f s   after the last read (copies overlap the reads)\n", s->copy_tail_s);
    printf("total    %8.3f s   load %.2f GB/s (read + copy), %.2f GB/s including setup\n",
           s->parse_s + s->total_s, load_s > 0 ? (double)s->bytes / load_s / 1e9 : 0.0,
           s->total_s > 0 ? (double)s->bytes / s->total_s / 1e9 : 0.0);
}

int zs_cmd_load(int argc, char **argv) {
    double t_exec_start = zs_now();
    load_args_t a = {0};
    if (parse_load_args(argc, argv, &a) != 0) return 2;
    zs_err_t err = {0};
    if (a.device != NULL) {
        if (zs_device_parse(a.device, &a.opts.device, &err) != ZS_OK) {
            fprintf(stderr, "zerostart load: %s\n", err.msg);
            return 2;
        }
    } else {
        a.opts.device.kind = zs_cuda_device_count() > 0 ? ZS_DEV_CUDA : ZS_DEV_CPU;
    }
    if (a.tp > 0) {
        zs_tp_load_opts_t to;
        zs_tp_load_opts_default(&to);
        to.kind = a.opts.device.kind;
        to.ranks = a.tp;
        to.threads = a.opts.threads;
        to.unit_bytes = a.opts.chunk_bytes;
        to.staging_slots = a.opts.staging_slots;
        to.direct_io = a.opts.direct_io;
        return zs_cli_load_tp(a.path, &a.opts.device, &to, a.verify, a.json, t_exec_start);
    }
    double t0 = zs_now();
    zs_ckpt_t *ck = NULL;
    if (zs_ckpt_open(a.path, &ck, &err) != ZS_OK) {
        fprintf(stderr, "zerostart load: %s\n", err.msg);
        return 1;
    }
    double parse_s = zs_now() - t0;
    /* Through the hot model pool: attach (filling it from storage when missing or stale),
     * page-lock it for the GPU, and copy from there. */
    zs_pool_t *pool = NULL;
    zs_pool_model_t *pm = NULL;
    zs_pool_source_t how = ZS_POOL_HIT;
    double pool_s = 0, pin_s = 0;
    if (a.use_pool) {
        double tp = zs_now();
        int prc = zs_pool_open(&a.pool, &pool, &err);
        if (prc == ZS_OK) prc = zs_pool_acquire(pool, ck, &pm, &how, &err);
        pool_s = zs_now() - tp;
        if (prc == ZS_OK && a.opts.device.kind == ZS_DEV_CUDA) {
            tp = zs_now();
            prc = zs_gpu_set_device(a.opts.device.index, &err);
            if (prc == ZS_OK) prc = zs_pool_model_pin(pm, &err);
            pin_s = zs_now() - tp;
        }
        if (prc != ZS_OK) {
            fprintf(stderr, "zerostart load: %s\n", err.msg);
            zs_pool_release(pm);
            zs_pool_close(pool);
            zs_ckpt_close(ck);
            return 1;
        }
        zs_pool_model_load_opts(pm, &a.opts);
    }
    int tty = !a.json && isatty(STDERR_FILENO);
    a.opts.on_progress = on_progress;
    zs_load_t *ld = NULL;
    double t_load = zs_now();
    if (zs_load_begin(ck, &a.opts, &ld, &err) != ZS_OK) {
        fprintf(stderr, "zerostart load: %s\n", err.msg);
        zs_pool_release(pm);
        zs_pool_close(pool);
        zs_ckpt_close(ck);
        return 1;
    }
    int drew = 0;
    while (tty && !zs_load_done(ld)) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        double el = zs_now() - t_load;
        if (el > 1.0) {
            draw_bar(atomic_load(&g_progress_done), ck->total_bytes, el);
            drew = 1;
        }
    }
    zs_weights_t *w = NULL;
    int rc = zs_load_finish(ld, &w, &err);
    double t_resident = zs_now();
    if (drew) {
        draw_bar(ck->total_bytes, ck->total_bytes, zs_now() - t_load);
        fputc('\n', stderr);
    }
    if (rc != ZS_OK) {
        fprintf(stderr, "zerostart load: %s\n", err.msg);
        zs_pool_release(pm);
        zs_pool_close(pool);
        zs_ckpt_close(ck);
        return 1;
    }
    w->stats.parse_s = parse_s;
    int verified = 0;
    uint64_t checked = 0;
    if (a.verify) {
        if (zs_weights_verify(w, &checked, &err) != ZS_OK) {
            fprintf(stderr, "zerostart load: verification FAILED: %s\n", err.msg);
            zs_weights_free(w);
            zs_pool_release(pm);
            zs_pool_close(pool);
            zs_ckpt_close(ck);
            return 1;
        }
        verified = 1;
    }
    if (a.json) print_json(&a, ck, w, t_exec_start, t_resident, verified, a.use_pool ? (int)how : 0, pool_s, pin_s);
    else print_table(ck, w, a.use_pool ? (int)how : 0, pool_s, pin_s);
    if (verified && !a.json)
        printf("verify   every tensor (%llu bytes) matches a buffered read of its file\n", (unsigned long long)checked);
    zs_weights_free(w);
    zs_pool_release(pm);
    zs_pool_close(pool);
    zs_ckpt_close(ck);
    return 0;
}
