/* `zerostart load PATH --tp N`: load a checkpoint sliced over N ranks (GPUs dev.index ..
 * dev.index + N - 1, or simulated ranks in host memory), every tensor byte read once, and
 * print per-rank bytes and speeds with the total bytes read against the checkpoint's tensor
 * bytes (or one JSON object with --json); --verify checks every shard against the files. */
#include <stdio.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "zerostart/ckpt.h"
#include "zerostart/verify.h"

static void print_tp_json(const char *path, const zs_ckpt_t *ck, const zs_tp_weights_t *w, double parse_s,
                          double t_exec_start, double t_resident, int verified) {
    const zs_tp_load_stats_t *s = &w->stats;
    printf("{\"path\":\"%s\",\"device\":\"%s\",\"device_name\":\"%s\",\"ranks\":%d,\"files\":%u,\"tensors\":%zu,"
           "\"checkpoint_bytes\":%llu,\"bytes\":%llu,\"bytes_direct\":%llu,\"parse_s\":%.6f,\"setup_s\":%.6f,"
           "\"read_s\":%.6f,\"total_s\":%.6f,\"gbps\":%.3f,\"threads\":%d,\"main_start_mono\":%.6f,"
           "\"resident_mono\":%.6f,\"verified\":%s,\"rank\":[",
           path, w->kind == ZS_DEV_CUDA ? "cuda" : "cpu",
           w->kind == ZS_DEV_CUDA ? zs_gpu_device_name(w->devices[0]) : "host", w->ranks, ck->nfiles, ck->ntensors,
           (unsigned long long)ck->total_bytes, (unsigned long long)s->read_bytes, (unsigned long long)s->bytes_direct,
           parse_s, s->setup_s, s->read_s, s->total_s, s->read_s > 0 ? (double)s->read_bytes / s->read_s / 1e9 : 0.0,
           s->threads, t_exec_start, t_resident, verified ? "true" : "false");
    for (int r = 0; r < w->ranks; r++)
        printf("%s{\"rank\":%d,\"gpu\":%d,\"bytes\":%llu,\"alloc_bytes\":%llu,\"gbps\":%.3f}", r ? "," : "", r,
               w->devices[r], (unsigned long long)w->delivered[r], (unsigned long long)w->plan.rank_bytes[r],
               s->read_s > 0 ? (double)w->delivered[r] / s->read_s / 1e9 : 0.0);
    printf("]}\n");
}

static void print_tp_table(const zs_ckpt_t *ck, const zs_tp_weights_t *w, double parse_s) {
    const zs_tp_load_stats_t *s = &w->stats;
    char b1[32], b2[32];
    printf("model    %s: %u file(s), %zu tensors, %s\n", ck->dir, ck->nfiles, ck->ntensors,
           zs_cli_fmt_bytes(ck->total_bytes, b1, sizeof b1));
    if (w->kind == ZS_DEV_CUDA)
        printf("ranks    %d, GPUs %d..%d (%s), %d reader threads\n", w->ranks, w->devices[0], w->devices[w->ranks - 1],
               zs_gpu_device_name(w->devices[0]), s->threads);
    else
        printf("ranks    %d, simulated in host memory, %d reader threads\n", w->ranks, s->threads);
    printf("parse    %8.3f s   headers and index\n", parse_s);
    printf("setup    %8.3f s   plan, %s\n", s->setup_s,
           w->kind == ZS_DEV_CUDA ? "CUDA contexts + one allocation per GPU (in parallel)" : "host allocations");
    printf("read     %8.3f s   %s read once, %.0f%% with O_DIRECT, %.2f GB/s\n", s->read_s,
           zs_cli_fmt_bytes(s->read_bytes, b1, sizeof b1),
           s->read_bytes ? 100.0 * (double)s->bytes_direct / (double)s->read_bytes : 0.0,
           s->read_s > 0 ? (double)s->read_bytes / s->read_s / 1e9 : 0.0);
    for (int r = 0; r < w->ranks; r++)
        printf("rank %-3d %s copied (allocation %s), %.2f GB/s\n", r, zs_cli_fmt_bytes(w->delivered[r], b1, sizeof b1),
               zs_cli_fmt_bytes(w->plan.rank_bytes[r], b2, sizeof b2),
               s->read_s > 0 ? (double)w->delivered[r] / s->read_s / 1e9 : 0.0);
    printf("total    %8.3f s   bytes read %llu %s checkpoint tensor bytes %llu\n", parse_s + s->total_s,
           (unsigned long long)s->read_bytes, s->read_bytes == ck->total_bytes ? "=" : "!=",
           (unsigned long long)ck->total_bytes);
}

int zs_cli_load_tp(const char *path, const zs_device_t *dev, zs_tp_load_opts_t *o, int verify, int json,
                   double t_exec_start) {
    zs_err_t err = {0};
    int devices[ZS_TP_MAX_RANKS];
    for (int r = 0; r < o->ranks; r++) devices[r] = dev->index + r;
    if (o->kind == ZS_DEV_CUDA) o->devices = devices;
    const double t0 = zs_now();
    zs_ckpt_t *ck = NULL;
    if (zs_ckpt_open(path, &ck, &err) != ZS_OK) {
        fprintf(stderr, "zerostart load: %s\n", err.msg);
        return 1;
    }
    const double parse_s = zs_now() - t0;
    zs_tp_weights_t *w = NULL;
    int rc = zs_tp_load(ck, o, &w, &err);
    const double t_resident = zs_now();
    uint64_t checked = 0;
    if (rc == ZS_OK && verify) rc = zs_tp_weights_verify(w, &checked, &err);
    if (rc != ZS_OK) {
        fprintf(stderr, "zerostart load: %s%s\n", verify && w ? "verification FAILED: " : "", err.msg);
        zs_tp_weights_free(w);
        zs_ckpt_close(ck);
        return 1;
    }
    if (json) print_tp_json(path, ck, w, parse_s, t_exec_start, t_resident, verify);
    else print_tp_table(ck, w, parse_s);
    if (verify && !json)
        printf("verify   every rank's slice of every tensor (%llu shard bytes) matches the files\n",
               (unsigned long long)checked);
    zs_tp_weights_free(w);
    zs_ckpt_close(ck);
    return 0;
}
