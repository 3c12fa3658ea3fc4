/* The KV warm start of one served model (see kv_tier.h): model identity, the store and its
 * page-locked host arena, restore planning through the cost model, and asynchronous exports
 * from the GPU into reserved host slots. */
#include "server/kv_tier.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"

typedef struct kvt_export {
    uint64_t ticket;
    zs_kv_ns_t ns;
    int32_t n;
    zs_kv_key_t *keys;
    void **slots;
    uint64_t *index;
    int write_to_disk;
} kvt_export_t;

struct zs_kvt {
    zs_kvt_opts_t o;
    char *disk_dir;
    char ident[2 * ZS_KV_HASH_BYTES + 1]; /* checkpoint part */
    char model_id[64 + ZS_KV_LAYOUT_MAX + 16];
    zs_kvstore_t *store;
    zs_engine_t *e;               /* the bound engine */
    zs_kv_layout_t layout;
    int bound_once;
    zs_kv_cost_t cost;
    double early_prefill[3];      /* a prefill noted before the first bind: tokens, positions, s */
    /* page-locking the host arena (CUDA), one chunk per idle scheduler step */
    atomic_int pinned;            /* 1 done, -1 failed, 0 in progress / not asked */
    void *arena;
    size_t arena_bytes;
    size_t pin_chunk;             /* bytes per registration: whole blocks */
    size_t pin_done;              /* bytes registered so far, from the arena's start */
    /* exports in flight, oldest first */
    kvt_export_t *ex;
    int nex, cap_ex;
    pthread_mutex_t mu;           /* stats (read by the metrics thread) */
    zs_kvt_stats_t st;
    char warning[512];            /* set by bind when the store runs degraded */
    char disk_path[4096];         /* the model's disk tier directory ("" = none) */
};

/* --- identity -------------------------------------------------------------------------------- */

static int sha_update_file(EVP_MD_CTX *c, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    char buf[1 << 16];
    ssize_t n;
    int ok = 1;
    while (ok && (n = read(fd, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) continue;
            ok = 0;
            break;
        }
        ok = EVP_DigestUpdate(c, buf, (size_t)n) == 1;
    }
    close(fd);
    return ok ? 0 : -1;
}

/* SHA-256 over what makes this checkpoint's KV what it is: each file's name, size, mtime and
 * inode, the tensor table (names, dtypes, shapes, offsets), config.json, tokenizer.json's
 * bytes and the caller's extra text (the pooled content hash). */
static int identity(const zs_ckpt_t *ck, const char *tok_path, const char *extra, char out[65], zs_err_t *err) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1;
    ok = ok && EVP_DigestUpdate(c, "zerostart-kv-model-v1", 21) == 1;
    for (uint32_t i = 0; ok && i < ck->nfiles; i++) {
        const zs_ckpt_file_t *f = &ck->files[i];
        const char *base = strrchr(f->path, '/');
        base = base ? base + 1 : f->path;
        struct stat st;
        uint64_t ino = stat(f->path, &st) == 0 ? (uint64_t)st.st_ino : 0;
        char line[600];
        int k = snprintf(line, sizeof line, "file %s %llu %lld %llu\n", base, (unsigned long long)f->size,
                         (long long)f->mtime_ns, (unsigned long long)ino);
        ok = k > 0 && EVP_DigestUpdate(c, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1) == 1;
    }
    for (size_t i = 0; ok && i < ck->ntensors; i++) {
        const zs_tensor_info_t *t = &ck->tensors[i];
        char line[160];
        int k = snprintf(line, sizeof line, " %d %d %lld %lld %u %llu\n", (int)t->dtype, t->ndim,
                         (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0), t->file,
                         (unsigned long long)t->file_offset);
        ok = EVP_DigestUpdate(c, t->name, strlen(t->name)) == 1 &&
             EVP_DigestUpdate(c, line, (size_t)k < sizeof line ? (size_t)k : sizeof line - 1) == 1;
    }
    if (ok && ck->config_json) ok = EVP_DigestUpdate(c, ck->config_json, strlen(ck->config_json)) == 1;
    if (ok && tok_path) ok = sha_update_file(c, tok_path) == 0;
    if (ok && extra) ok = EVP_DigestUpdate(c, extra, strlen(extra)) == 1;
    unsigned char md[32];
    unsigned int mdl = 0;
    ok = ok && EVP_DigestFinal_ex(c, md, &mdl) == 1 && mdl == 32;
    EVP_MD_CTX_free(c);
    if (!ok) return zs_err_set(err, ZS_EIO, "kv store: cannot hash the identity of %s", ck->dir);
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
    return ZS_OK;
}

/* --- lifecycle --------------------------------------------------------------------------------- */

int zs_kvt_create(const zs_kvt_opts_t *o, const zs_ckpt_t *ck, const char *tokenizer_path,
                  const char *identity_extra, zs_kvt_t **out, zs_err_t *err) {
    *out = NULL;
    zs_kvt_t *t = calloc(1, sizeof *t);
    if (t == NULL) return zs_err_set(err, ZS_ENOMEM, "kv store: out of memory");
    t->o = *o;
    t->o.disk_dir = NULL;
    if (o->disk_dir && (t->disk_dir = strdup(o->disk_dir)) == NULL) {
        free(t);
        return zs_err_set(err, ZS_ENOMEM, "kv store: out of memory");
    }
    atomic_init(&t->pinned, 0);
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        free(t->disk_dir);
        free(t);
        return zs_err_set(err, ZS_ENOMEM, "kv store: mutex");
    }
    int rc = identity(ck, tokenizer_path, identity_extra, t->ident, err);
    if (rc != ZS_OK) {
        zs_kvt_free(t);
        return rc;
    }
    snprintf(t->model_id, sizeof t->model_id, "zs-kv1:%s", t->ident);
    *out = t;
    return ZS_OK;
}

/* Registrations of about 32 MiB: each takes a few ms (faulting the pages in and locking
 * them, holding the CUDA driver's lock), so a request arriving meanwhile hardly waits.
 * (Faulting the arena in ahead on a thread, MADV_POPULATE_WRITE, made a fresh server's first
 * token 0.7 s slower on the H200: not done.) */
#define PIN_CHUNK_BYTES ((size_t)32 << 20)

int zs_kvt_pin_pending(const zs_kvt_t *t) {
    return t != NULL && t->arena != NULL && t->pin_done < t->arena_bytes && atomic_load(&t->pinned) == 0;
}

int zs_kvt_pin_step(zs_kvt_t *t, zs_err_t *err) {
    if (!zs_kvt_pin_pending(t)) return ZS_OK;
    size_t n = t->arena_bytes - t->pin_done < t->pin_chunk ? t->arena_bytes - t->pin_done : t->pin_chunk;
    int rc = zs_gpu_host_register((char *)t->arena + t->pin_done, n, err);
    if (rc != ZS_OK) { /* the chunks registered so far stay (unregistered at free) */
        atomic_store(&t->pinned, -1);
        return rc;
    }
    t->pin_done += n;
    if (t->pin_done == t->arena_bytes) atomic_store(&t->pinned, 1);
    return ZS_OK;
}

/* Opens the store for the bound engine's layout. */
static int store_open(zs_kvt_t *t, zs_err_t *err) {
    char desc[ZS_KV_LAYOUT_MAX];
    int rc = zs_kv_layout_desc(&t->layout, desc, sizeof desc, err);
    if (rc != ZS_OK) return rc;
    snprintf(t->model_id, sizeof t->model_id, "zs-kv1:%s:%s", t->ident, desc);
    if (t->o.host_bytes == 0) return ZS_OK;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* a write-back borrows its host slot, so the queue can hold every slot: nothing the host
     * tier keeps is dropped on its way to disk (a shutdown saves the whole GPU cache) */
    uint64_t slots = t->o.host_bytes / t->layout.block_bytes;
    zs_kvstore_opts_t so = {.host_capacity = t->o.host_bytes, .block_bytes = t->layout.block_bytes,
                            .readers = ncpu >= 16 ? 16 : ncpu >= 2 ? (int)ncpu : 2,
                            .queue_depth = slots + 64 > (uint64_t)1 << 24 ? 1u << 24 : (uint32_t)(slots + 64)};
    char dir[4096];
    if (t->disk_dir) {
        /* one subdirectory per model identity and layout: the disk tier removes files of any
         * other layout as foreign, so models must not share one */
        char lid[65];
        unsigned char md[32];
        unsigned int mdl = 0;
        EVP_Digest(t->model_id, strlen(t->model_id), md, &mdl, EVP_sha256(), NULL);
        for (int i = 0; i < 8; i++) snprintf(lid + 2 * i, 3, "%02x", md[i]);
        if (mkdir(t->disk_dir, 0700) != 0 && errno != EEXIST)
            return zs_err_set(err, zs_status_from_errno(errno), "kv store: mkdir %s: %s", t->disk_dir,
                              strerror(errno));
        int k = snprintf(dir, sizeof dir, "%s/%s", t->disk_dir, lid);
        if (k < 0 || (size_t)k >= sizeof dir) return zs_err_set(err, ZS_ERANGE, "kv store: %s: path too long", t->disk_dir);
        so.disk.dir = dir;
        snprintf(t->disk_path, sizeof t->disk_path, "%s", dir);
        so.disk.layout = desc;
        so.disk.capacity = t->o.disk_bytes;
        so.disk.no_fsync = t->o.no_fsync;
        so.read_delay_ms = t->o.read_delay_ms;
    }
    if (t->layout.block_bytes > t->o.host_bytes)
        return zs_err_set(err, ZS_EINVAL, "kv store: host tier of %llu bytes holds no KV block of %zu bytes",
                          (unsigned long long)t->o.host_bytes, t->layout.block_bytes);
    rc = zs_kvstore_open(&so, &t->store, err);
    if (rc == ZS_EBUSY && so.disk.dir != NULL) { /* another server holds the directory */
        t->disk_path[0] = '\0';
        snprintf(t->warning, sizeof t->warning, "KV disk tier off: %.400s", err->msg);
        zs_err_clear(err);
        so.disk.dir = NULL;
        rc = zs_kvstore_open(&so, &t->store, err);
    }
    if (rc != ZS_OK) return rc;
    if (t->o.cuda_device >= 0) { /* page-locked by zs_kvt_pin_step, in the scheduler's idle time */
        zs_kvstore_host_arena(t->store, &t->arena, &t->arena_bytes);
        /* whole blocks and whole pages: two registrations never share a page */
        size_t a = t->layout.block_bytes, b = (size_t)sysconf(_SC_PAGESIZE);
        while (b != 0) {
            size_t r = a % b;
            a = b;
            b = r;
        }
        size_t unit = t->layout.block_bytes / a * (size_t)sysconf(_SC_PAGESIZE); /* lcm */
        t->pin_chunk = (PIN_CHUNK_BYTES / unit > 0 ? PIN_CHUNK_BYTES / unit : 1) * unit;
    }
    pthread_mutex_lock(&t->mu);
    t->st.store_open = 1;
    pthread_mutex_unlock(&t->mu);
    return ZS_OK;
}

int zs_kvt_bind(zs_kvt_t *t, zs_engine_t *e, zs_err_t *err) {
    const zs_kv_cache_t *kv = zs_engine_kv(e);
    if (t->bound_once && memcmp(&kv->layout, &t->layout, sizeof t->layout) != 0)
        return zs_err_set(err, ZS_ESTATE, "kv store: the KV layout changed between loads of the model");
    t->e = e;
    if (t->bound_once) return ZS_OK;
    t->layout = kv->layout;
    t->cost.block_bytes = kv->layout.block_bytes;
    t->cost.block_size = kv->layout.block_size;
    t->cost.attn_ratio = zs_kv_cost_attn_ratio(zs_engine_config(e));
    t->cost.per_block_s = 2e-6;
    /* until measured (weights read from the disk or the page cache, restores from disk) */
    if (t->cost.disk_gbps <= 0) t->cost.disk_gbps = 2.0;
    if (t->cost.disk_cached_gbps <= 0) t->cost.disk_cached_gbps = 16.0;
    /* a CPU model's "device" is host memory (no h2d rate): restoring wins against a CPU prefill
     * by orders of magnitude */
    int rc = store_open(t, err);
    if (rc != ZS_OK) return rc;
    t->bound_once = 1;
    if (t->early_prefill[2] > 0)
        zs_kvt_note_prefill(t, (int64_t)t->early_prefill[0], t->early_prefill[1], t->early_prefill[2]);
    return ZS_OK;
}

static void export_free(kvt_export_t *x) {
    free(x->keys);
    free(x->slots);
    free(x->index);
}

void zs_kvt_unbind(zs_kvt_t *t) {
    if (t->e) zs_kvt_poll(t, t->e, 1);
    t->e = NULL;
}

void zs_kvt_free(zs_kvt_t *t) {
    if (t == NULL) return;
    zs_kvt_unbind(t);
    for (int i = 0; i < t->nex; i++) { /* no engine to wait for: the slots were never filled */
        for (int32_t b = 0; b < t->ex[i].n; b++) zs_kvstore_abort(t->store, &t->ex[i].keys[b]);
        export_free(&t->ex[i]);
    }
    free(t->ex);
    if (t->store) zs_kvstore_flush(t->store, NULL);
    for (size_t off = 0; off < t->pin_done; off += t->pin_chunk) zs_gpu_host_unregister((char *)t->arena + off);
    zs_kvstore_close(t->store);
    pthread_mutex_destroy(&t->mu);
    free(t->disk_dir);
    free(t);
}

int zs_kvt_has_store(const zs_kvt_t *t) { return t->store != NULL; }
const char *zs_kvt_warning(const zs_kvt_t *t) { return t->warning[0] ? t->warning : NULL; }
const char *zs_kvt_disk_path(const zs_kvt_t *t) { return t->disk_path[0] ? t->disk_path : NULL; }
const char *zs_kvt_identity(const zs_kvt_t *t) { return t->ident; }

int zs_kvt_namespace(const zs_kvt_t *t, const char *salt, zs_kv_ns_t *ns, zs_err_t *err) {
    return zs_kv_namespace(t->model_id, salt, ns, err);
}

void zs_kvt_set_bandwidth(zs_kvt_t *t, double h2d_gbps, double disk_gbps, double cached_gbps) {
    if (h2d_gbps > 0) t->cost.h2d_gbps = h2d_gbps;
    if (disk_gbps > 0) t->cost.disk_gbps = disk_gbps;
    if (cached_gbps > 0) t->cost.disk_cached_gbps = cached_gbps;
}

/* The share of the disk blocks among keys[0..n) (tiers) whose files are in the page cache,
 * from up to 8 of them spread over the run; -1 when none is on disk. */
static double disk_cached_share(zs_kvt_t *t, const zs_kv_ns_t *ns, const zs_kv_key_t *keys,
                                const zs_kv_tier_t *tiers, size_t n) {
    size_t ndisk = 0;
    for (size_t i = 0; i < n; i++) ndisk += tiers[i] == ZS_KV_TIER_DISK;
    if (ndisk == 0) return -1;
    size_t want = ndisk < 8 ? ndisk : 8, seen = 0, probed = 0, cached = 0;
    for (size_t i = 0; i < n && probed < want; i++) {
        if (tiers[i] != ZS_KV_TIER_DISK) continue;
        if (seen++ * want / ndisk != probed) continue; /* every (ndisk / want)-th disk block */
        probed++;
        cached += zs_kvstore_disk_cached(t->store, ns, &keys[i]) == 1;
    }
    return probed ? (double)cached / (double)probed : -1;
}

void zs_kvt_note_prefill(zs_kvt_t *t, int64_t tokens, double attn_positions, double seconds) {
    if (tokens < 256 || seconds <= 0) return;
    if (!t->bound_once) { /* the attention ratio is known at bind: counted then */
        t->early_prefill[0] = (double)tokens;
        t->early_prefill[1] = attn_positions;
        t->early_prefill[2] = seconds;
        return;
    }
    /* the linear-work rate: the attention part counted in token equivalents */
    double r = ((double)tokens + t->cost.attn_ratio * attn_positions) / seconds;
    t->cost.prefill_tok_s = t->cost.prefill_tok_s > 0 ? 0.7 * t->cost.prefill_tok_s + 0.3 * r : r;
}

double zs_kvt_prefill_rate(const zs_kvt_t *t) { return t->cost.prefill_tok_s; }

/* --- restore ---------------------------------------------------------------------------------- */

int zs_kvt_restore_begin(zs_kvt_t *t, const zs_kv_ns_t *ns, const int32_t *ids, int32_t gpu_blocks,
                         int32_t max_blocks, int overlap, zs_kvstore_job_cb done, void *ctx, zs_kvt_restore_t *r,
                         zs_err_t *err) {
    memset(r, 0, sizeof *r);
    if (t->store == NULL || max_blocks <= gpu_blocks) return 0;
    const int32_t bs = t->layout.block_size, n = max_blocks - gpu_blocks;
    zs_kv_key_t *keys = malloc((size_t)max_blocks * sizeof *keys);
    zs_kv_tier_t *tiers = malloc((size_t)n * sizeof *tiers);
    int rc = keys && tiers ? ZS_OK : zs_err_set(err, ZS_ENOMEM, "kv restore: out of memory for %d keys", max_blocks);
    if (rc == ZS_OK) {
        int k = zs_kv_chain_keys(ns, ids, (size_t)max_blocks * (size_t)bs, bs, keys, err);
        if (k < 0) rc = k;
    }
    size_t run = rc == ZS_OK ? zs_kvstore_lookup(t->store, ns, keys + gpu_blocks, (size_t)n, tiers) : 0;
    int32_t to = gpu_blocks;
    r->disk_cached = -1;
    if (run > 0 && t->o.cuda_device >= 0 && t->cost.h2d_gbps <= 0 && t->o.h2d_gbps) /* a CPU model has none */
        t->cost.h2d_gbps = t->o.h2d_gbps(t->o.h2d_ctx);
    if (run > 0) {
        zs_kv_cost_t c = t->cost;
        c.overlap = overlap;
        r->disk_cached = disk_cached_share(t, ns, keys + gpu_blocks, tiers, run);
        if (r->disk_cached >= 0) c.disk_gbps = zs_kv_cost_disk_gbps(&t->cost, r->disk_cached);
        to = zs_kv_cost_choose(&c, gpu_blocks, gpu_blocks + (int32_t)run, tiers, &r->est_restore_s,
                               &r->est_recompute_s);
        pthread_mutex_lock(&t->mu);
        t->st.skipped_by_cost += (uint64_t)(gpu_blocks + (int32_t)run - to);
        pthread_mutex_unlock(&t->mu);
    }
    if (rc == ZS_OK && to > gpu_blocks) {
        r->t0 = zs_now();
        rc = zs_kvstore_fetch_begin(t->store, ns, keys + gpu_blocks, (size_t)(to - gpu_blocks), done, ctx, &r->job,
                                    err);
        r->from = gpu_blocks;
        r->to = to;
    }
    free(keys);
    free(tiers);
    if (rc != ZS_OK) return rc;
    return r->job != NULL;
}

int zs_kvt_restore_import(zs_kvt_t *t, zs_engine_t *e, int32_t seq, int32_t gpu_blocks, zs_kvt_restore_t *r,
                          zs_err_t *err) {
    if (r->job == NULL || r->complete) return r->imported;
    if (!r->started) {
        r->started = 1;
        r->base = gpu_blocks;
        if (gpu_blocks < r->from) { /* the restore no longer joins the sequence */
            r->complete = 1;
            return 0;
        }
    }
    if (gpu_blocks != r->base)
        return zs_err_set(err, ZS_EINVAL, "kv restore: import at block %d after one at block %d", gpu_blocks,
                          r->base);
    const int finished = zs_kvstore_job_finished(r->job);
    const void *const *data = NULL;
    zs_kvstore_job_stats_t js;
    size_t ok = zs_kvstore_job_result(r->job, &data, &js); /* the payloads; the count once finished */
    if (!finished) ok = zs_kvstore_job_ready(r->job);
    const size_t skip = (size_t)(r->base - r->from), have = skip + (size_t)r->imported;
    double t0 = zs_now();
    if (ok > have) {
        int rc = zs_engine_seq_import(e, seq, data + have, (int32_t)(ok - have), err);
        if (rc != ZS_OK) {
            r->seconds = zs_now() - r->t0;
            return rc;
        }
        for (size_t i = have; i < ok; i++) {
            if (zs_kvstore_job_tier(r->job, i) == ZS_KV_TIER_DISK) r->disk_blocks++;
            else r->host_blocks++;
        }
        r->imported += (int32_t)(ok - have);
        if (!finished) {
            pthread_mutex_lock(&t->mu);
            t->st.restore_overlapped_blocks += ok - have;
            pthread_mutex_unlock(&t->mu);
        }
    }
    if (!finished) return r->imported;
    r->complete = 1;
    /* the job (disk reads) and the import call after it, not the time the request waited for room */
    r->seconds = js.seconds + (zs_now() - t0);
    /* a job of enough disk blocks, all in the page cache or none: its read rate */
    int all_cached = r->disk_cached >= 0.99, none_cached = r->disk_cached >= 0 && r->disk_cached <= 0.01;
    if (js.disk_blocks >= 8 && js.seconds > 0 && (all_cached || none_cached)) {
        double gbps = (double)js.disk_blocks * (double)t->layout.block_bytes / js.seconds / 1e9;
        double *rate = all_cached ? &t->cost.disk_cached_gbps : &t->cost.disk_gbps;
        *rate = 0.5 * *rate + 0.5 * gbps;
    }
    return r->imported;
}

void zs_kvt_restore_end(zs_kvt_t *t, zs_kvt_restore_t *r) {
    (void)t;
    zs_kvstore_job_free(r->job);
    r->job = NULL;
}

/* --- export ------------------------------------------------------------------------------------ */

void zs_kvt_export(zs_kvt_t *t, zs_engine_t *e, int32_t seq, const zs_kv_ns_t *ns, const int32_t *tokens,
                   int32_t nblocks, int write_to_disk) {
    if (t->store == NULL || nblocks <= 0) return;
    const int32_t bs = t->layout.block_size;
    kvt_export_t x = {.ns = *ns, .write_to_disk = write_to_disk};
    zs_kv_key_t *all = malloc((size_t)nblocks * sizeof *all);
    int32_t *idx = malloc((size_t)nblocks * sizeof *idx);
    x.keys = malloc((size_t)nblocks * sizeof *x.keys);
    x.slots = malloc((size_t)nblocks * sizeof *x.slots);
    x.index = malloc((size_t)nblocks * sizeof *x.index);
    uint64_t dropped = 0;
    if (!all || !idx || !x.keys || !x.slots || !x.index ||
        zs_kv_chain_keys(ns, tokens, (size_t)nblocks * (size_t)bs, bs, all, NULL) != nblocks) {
        dropped = (uint64_t)nblocks;
        goto out;
    }
    for (int32_t b = 0; b < nblocks; b++) {
        if (zs_kvstore_tier_of(t->store, ns, &all[b]) != ZS_KV_TIER_NONE) continue;
        void *slot = NULL;
        int rc = zs_kvstore_reserve(t->store, ns, &all[b], (uint64_t)b, &slot, NULL);
        if (rc == 1) continue; /* being filled by another export */
        if (rc != ZS_OK) {
            dropped++;
            continue;
        }
        idx[x.n] = b;
        x.keys[x.n] = all[b];
        x.slots[x.n] = slot;
        x.index[x.n] = (uint64_t)b;
        x.n++;
    }
    if (x.n == 0) goto out;
    zs_err_t err = {0};
    if (t->nex == t->cap_ex) {
        int cap = t->cap_ex ? 2 * t->cap_ex : 8;
        kvt_export_t *nx = realloc(t->ex, (size_t)cap * sizeof *nx);
        if (nx == NULL) goto abort_all;
        t->ex = nx;
        t->cap_ex = cap;
    }
    if (zs_engine_kv_export(e, seq, idx, x.n, x.slots, &x.ticket, &err) != ZS_OK) goto abort_all;
    t->ex[t->nex++] = x;
    pthread_mutex_lock(&t->mu);
    t->st.export_dropped += dropped;
    pthread_mutex_unlock(&t->mu);
    free(all);
    free(idx);
    zs_kvt_poll(t, e, 0); /* synchronous backends are done already */
    return;
abort_all:
    for (int32_t i = 0; i < x.n; i++) zs_kvstore_abort(t->store, &x.keys[i]);
    dropped += (uint64_t)x.n;
out:
    export_free(&x);
    free(all);
    free(idx);
    pthread_mutex_lock(&t->mu);
    t->st.export_dropped += dropped;
    pthread_mutex_unlock(&t->mu);
}

void zs_kvt_poll(zs_kvt_t *t, zs_engine_t *e, int wait) {
    int k = 0;
    uint64_t blocks = 0;
    for (; k < t->nex; k++) {
        kvt_export_t *x = &t->ex[k];
        zs_err_t err = {0};
        int rc = zs_engine_kv_export_done(e, x->ticket, wait, &err);
        if (rc == 0) break;
        for (int32_t i = 0; i < x->n; i++) {
            if (rc == 1) zs_kvstore_commit(t->store, &x->ns, &x->keys[i], x->index[i], x->slots[i], x->write_to_disk);
            else zs_kvstore_abort(t->store, &x->keys[i]);
        }
        if (rc == 1) blocks += (uint64_t)x->n;
        export_free(x);
    }
    if (k == 0) return;
    memmove(t->ex, t->ex + k, (size_t)(t->nex - k) * sizeof *t->ex);
    t->nex -= k;
    pthread_mutex_lock(&t->mu);
    t->st.exported_blocks += blocks;
    pthread_mutex_unlock(&t->mu);
}

int zs_kvt_pending(const zs_kvt_t *t) { return t->nex; }

int zs_kvt_flush(zs_kvt_t *t, zs_err_t *err) { return t->store ? zs_kvstore_flush(t->store, err) : ZS_OK; }

void zs_kvt_stats(zs_kvt_t *t, zs_kvt_stats_t *out) {
    pthread_mutex_lock(&t->mu);
    *out = t->st;
    zs_kvstore_t *store = t->st.store_open ? t->store : NULL; /* published under mu */
    pthread_mutex_unlock(&t->mu);
    memset(&out->store, 0, sizeof out->store);
    if (store) zs_kvstore_stats(store, &out->store);
    out->host_pinned = atomic_load(&t->pinned);
}
