/* Generation engine: owns the backend, the model's forward state, the paged KV cache and
 * the sequences; validates forward requests (sequence ids, token ids, positions), reserves
 * KV blocks, splits requests into steps of at most max_step_tokens tokens and describes each
 * step (positions, KV slots, block tables) for the backend. With tensor parallelism it owns
 * one backend, model part and KV pool per rank, the communicator and the rank threads, and
 * runs every step on all ranks in lockstep; sequences and block tables stay single. It also
 * moves whole KV blocks between the cache and host memory (import into a sequence;
 * asynchronous export that holds the blocks until the copy lands), on one rank. */
#include "zerostart/engine.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/backend.h"
#include "engine/comm.h"
#include "engine/forward.h"
#include "engine/rank_threads.h"
#include "gpu/gpu_rt.h"

typedef struct {
    uint64_t ticket;
    int32_t *blocks;           /* referenced until the copy is done */
    int32_t n;
} export_t;

typedef struct {
    zs_kv_seq_t kv;
    int used;
    uint64_t stamp;            /* last forward call that listed it (duplicate check) */
    int64_t base;              /* ntokens at the start of the current call */
} seq_entry_t;

/* What one rank (the only one without tensor parallelism) owns: its backend, its part of the
 * model and the KV pool of its KV heads. The pools of all ranks have the same blocks, so one
 * block table serves them all. */
typedef struct engine_rank {
    zs_backend_t *be;
    zs_model_t model;
    int model_ready;
    zs_model_shard_t shard;
    zs_tp_rank_view_t view;    /* tensor parallel: lookup of the rank's slices */
    zs_kv_layout_t layout;
    void *pool;
    size_t gpu_free;           /* kv_gpu_fraction: free GPU memory once the model is in */
} engine_rank_t;

/* Where an engine's weights come from. */
typedef struct engine_src {
    const char *config_json;
    size_t len;
    zs_wlookup_fn lookup;      /* one rank */
    void *ctx;
    zs_device_kind_t weights_device;
    int weights_index;         /* CUDA device of the weights (-1: the current device) */
    const zs_tp_weights_t *tp; /* tensor parallel: per-rank slices (lookup unused) */
} engine_src_t;

struct zs_engine {
    zs_model_config_t cfg;
    zs_engine_opts_t opts;     /* normalised */
    const engine_src_t *src;   /* during creation only */
    int nranks;
    engine_rank_t *ranks;
    zs_comm_t *comm;           /* tensor parallel */
    zs_rank_threads_t *threads;
    int broken;                /* a tensor-parallel step failed: the group was aborted */
    uint64_t kv_nblocks;
    zs_kv_layout_t layout;     /* the whole model's KV heads (bookkeeping) */
    zs_kv_cache_t kv;
    int kv_ready;
    seq_entry_t *seqs;
    int32_t nseqs, cap_seqs;
    uint64_t stamp;
    int32_t T;
    /* per-step host metadata, T entries each */
    int32_t *ids, *pos, *tseq, *slot, *nblocks, *rows, *seq_of_local;
    const int32_t **blocks;
    /* KV exports in flight (oldest first) */
    export_t *exports;
    int32_t nexports, cap_exports;
    uint64_t sync_tickets;     /* tickets of exports done synchronously (no backend op) */
    /* the step the rank threads run */
    const zs_fwd_batch_t *job_bt;
    const int32_t *job_rows;
    int32_t job_nrows;
    float *job_logits;
};

void zs_engine_opts_default(zs_engine_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->backend = ZS_BACKEND_CPU;
}

const zs_model_config_t *zs_engine_config(const zs_engine_t *e) { return &e->cfg; }
const zs_kv_cache_t *zs_engine_kv(const zs_engine_t *e) { return &e->kv; }
int zs_engine_ranks(const zs_engine_t *e) { return e->nranks; }

void zs_engine_weights_resident(zs_engine_t *e) {
    for (int r = 0; r < e->nranks; r++) {
        e->ranks[r].model.wait = NULL;
        e->ranks[r].model.wait_ctx = NULL;
    }
}

/* --- ranks: set-up, KV pools, teardown (on the rank's own thread when there are several) --- */

/* Runs job on every rank: inline for one rank, else on the rank threads (lockstep). */
static void engine_abort(void *ctx) {
    zs_engine_t *e = ctx;
    if (e->comm != NULL) e->comm->ops->abort(e->comm);
}

static int on_ranks(zs_engine_t *e, zs_rank_job_fn job, zs_err_t *err) {
    if (e->threads == NULL) return job(e, 0, err);
    return zs_rank_threads_run(e->threads, job, e, engine_abort, e, err);
}

static int rank_teardown(void *ctx, int r, zs_err_t *err) {
    (void)err;
    zs_engine_t *e = ctx;
    engine_rank_t *rk = &e->ranks[r];
    if (rk->model_ready) zs_model_destroy(&rk->model);
    rk->model_ready = 0;
    if (rk->be) {
        if (rk->pool) rk->be->ops->free(rk->be, rk->pool);
        rk->be->ops->destroy(rk->be);
    }
    rk->pool = NULL;
    rk->be = NULL;
    return ZS_OK;
}

/* The rank's backend for the weights' device. */
static int rank_backend(zs_engine_t *e, int r, zs_err_t *err) {
    const engine_src_t *src = e->src;
    engine_rank_t *rk = &e->ranks[r];
    int threads = e->opts.threads;
    if (src->tp != NULL && threads == 0) { /* share the cores between the ranks */
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc > e->nranks ? (int)(nc / e->nranks) : 1;
    }
    int rc;
    switch (e->opts.backend) {
    case ZS_BACKEND_CPU:
        if (src->weights_device != ZS_DEV_CPU)
            return zs_err_set(err, ZS_EINVAL, "engine: the CPU backend needs weights loaded on the CPU");
        return zs_cpu_backend_create(threads, &rk->be, err);
    case ZS_BACKEND_CUDA:
        /* first, so that builds without CUDA say so whatever the weights */
        rc = zs_cuda_backend_create(src->tp ? src->tp->devices[r] : src->weights_index, &rk->be, err);
        if (rc) return rc;
        if (src->weights_device != ZS_DEV_CUDA)
            return zs_err_set(err, ZS_EINVAL, "engine: the CUDA backend needs weights loaded on a CUDA device");
        return ZS_OK;
    default:
        return zs_err_set(err, ZS_EINVAL, "engine: unknown backend %d", (int)e->opts.backend);
    }
}

/* Backend, the rank's part of the model, its KV layout (and free GPU memory for sizing). */
static int rank_setup(void *ctx, int r, zs_err_t *err) {
    zs_engine_t *e = ctx;
    const engine_src_t *src = e->src;
    engine_rank_t *rk = &e->ranks[r];
    int rc = rank_backend(e, r, err);
    if (rc) return rc;
    zs_wlookup_fn lookup = src->lookup;
    void *lctx = src->ctx;
    if (src->tp != NULL) {
        rk->view.w = src->tp;
        rk->view.rank = r;
        lookup = zs_tp_lookup;
        lctx = &rk->view;
        /* the slices must have the shapes of the rank's part of the model */
        zs_model_config_t *local = malloc(sizeof *local);
        if (local == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory");
        *local = e->cfg;
        local->nheads = rk->shard.nheads;
        local->nkv_heads = rk->shard.nkv_heads;
        local->intermediate = rk->shard.intermediate;
        local->vocab = (int32_t)rk->shard.vocab_rows;
        rc = zs_model_check_weights(local, lookup, lctx, err);
        free(local);
        if (rc) return rc;
    }
    if ((rc = zs_model_init(&rk->model, &e->cfg, &rk->shard, rk->be, lookup, lctx, e->T, err))) return rc;
    rk->model_ready = 1;
    if (e->opts.wait_weights != NULL) {
        rk->model.weights_ready = calloc((size_t)e->cfg.nlayers + 2, 1);
        if (rk->model.weights_ready == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory");
        rk->model.wait = e->opts.wait_weights;
        rk->model.wait_ctx = e->opts.wait_ctx;
    }
    zs_dtype_t kv_dtype = e->opts.backend == ZS_BACKEND_CUDA ? ZS_BF16 : ZS_F32;
    if ((rc = zs_kv_layout_init(&rk->layout, e->cfg.nlayers, rk->shard.nkv_heads, e->cfg.head_dim,
                                e->opts.block_size, kv_dtype, err)))
        return rc;
    size_t tot = 0;
    if (e->opts.kv_gpu_fraction > 0.0 && e->opts.kv_blocks == 0 && e->opts.kv_bytes == 0)
        return zs_gpu_mem_info(&rk->gpu_free, &tot, err);
    return ZS_OK;
}

static int rank_pool(void *ctx, int r, zs_err_t *err) {
    zs_engine_t *e = ctx;
    engine_rank_t *rk = &e->ranks[r];
    rk->pool = rk->be->ops->alloc(rk->be, (size_t)e->kv_nblocks * rk->layout.block_bytes, err);
    if (rk->pool == NULL) return err && err->code ? err->code : ZS_ENOMEM;
    return ZS_OK;
}

/* KV blocks every rank can hold: kv_blocks, else kv_bytes per rank, else kv_gpu_fraction of
 * each rank's free GPU memory (the smallest count over the ranks). */
static int engine_kv_blocks(zs_engine_t *e, int kv_from_gpu, zs_err_t *err) {
    const zs_engine_opts_t *o = &e->opts;
    const uint64_t max_blocks = (uint64_t)INT32_MAX / 4096u;
    uint64_t nblocks = UINT64_MAX;
    size_t kv_bytes = o->kv_bytes, largest = 0;
    for (int r = 0; r < e->nranks; r++) {
        const size_t bb = e->ranks[r].layout.block_bytes;
        if (bb > largest) largest = bb;
        uint64_t n;
        if (kv_from_gpu) {
            kv_bytes = (size_t)floor((double)e->ranks[r].gpu_free * o->kv_gpu_fraction);
            n = kv_bytes / bb;
            if (n > max_blocks) n = max_blocks;
            if (n > SIZE_MAX / bb) n = SIZE_MAX / bb;
        } else {
            n = o->kv_blocks ? o->kv_blocks : o->kv_bytes / bb;
        }
        if (n < nblocks) nblocks = n;
    }
    if (nblocks < 1)
        return zs_err_set(err, ZS_EINVAL, "engine: KV capacity of %zu bytes holds no block (%zu bytes each)",
                          kv_bytes, largest);
    if (nblocks > max_blocks || nblocks > SIZE_MAX / largest)
        return zs_err_set(err, ZS_ERANGE, "engine: %llu KV blocks is too many", (unsigned long long)nblocks);
    e->kv_nblocks = nblocks;
    return ZS_OK;
}

static void exports_release(zs_engine_t *e, uint64_t upto);

void zs_engine_free(zs_engine_t *e) {
    if (e == NULL) return;
    if (e->nexports > 0) { /* let the copies land before the pool goes */
        zs_err_t err = {0};
        zs_backend_t *be = e->ranks[0].be;
        if (be->ops->kv_out_done) (void)be->ops->kv_out_done(be, e->exports[e->nexports - 1].ticket, 1, &err);
        exports_release(e, UINT64_MAX);
    }
    free(e->exports);
    if (e->kv_ready) {
        for (int32_t i = 0; i < e->nseqs; i++)
            if (e->seqs[i].used) zs_kv_seq_release(&e->kv, &e->seqs[i].kv);
        zs_kv_cache_destroy(&e->kv);
    }
    free(e->seqs);
    if (e->ranks != NULL && (e->threads != NULL || e->nranks == 1)) (void)on_ranks(e, rank_teardown, NULL);
    zs_rank_threads_destroy(e->threads);
    if (e->comm != NULL) e->comm->ops->destroy(e->comm);
    free(e->ranks);
    free(e->ids);
    free(e->pos);
    free(e->tseq);
    free(e->slot);
    free(e->nblocks);
    free(e->rows);
    free(e->seq_of_local);
    free(e->blocks);
    free(e);
}

static int engine_create(const engine_src_t *src, const zs_engine_opts_t *opts, zs_engine_t **out,
                         zs_err_t *err) {
    *out = NULL;
    zs_engine_opts_t o;
    if (opts) o = *opts;
    else zs_engine_opts_default(&o);
    if (o.block_size == 0) o.block_size = 16;
    if (o.max_step_tokens == 0) o.max_step_tokens = 256;
    if (!(o.kv_gpu_fraction >= 0.0 && o.kv_gpu_fraction <= 1.0))
        return zs_err_set(err, ZS_EINVAL, "engine: kv_gpu_fraction %g outside [0, 1]",
                          o.kv_gpu_fraction);
    if (o.kv_gpu_fraction > 0.0 && o.backend != ZS_BACKEND_CUDA)
        return zs_err_set(err, ZS_EINVAL, "engine: kv_gpu_fraction needs the CUDA backend");
    const int kv_from_gpu = o.kv_blocks == 0 && o.kv_bytes == 0 && o.kv_gpu_fraction > 0.0;
    if (o.kv_blocks == 0 && o.kv_bytes == 0 && !kv_from_gpu) o.kv_bytes = (size_t)64 << 20;
    if (o.block_size < 1 || o.block_size > 1024)
        return zs_err_set(err, ZS_EINVAL, "engine: block_size %d outside [1, 1024]", o.block_size);
    if (o.max_step_tokens < 1 || o.max_step_tokens > 65536)
        return zs_err_set(err, ZS_EINVAL, "engine: max_step_tokens %d outside [1, 65536]",
                          o.max_step_tokens);
    if (src->tp != NULL && o.wait_weights != NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: tensor parallel: weights must be resident (no wait_weights)");

    zs_engine_t *e = calloc(1, sizeof *e);
    if (e == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory");
    e->opts = o;
    e->src = src;
    e->T = o.max_step_tokens;
    e->nranks = src->tp ? src->tp->ranks : 1;
    int rc;
    if ((rc = zs_model_config_parse(src->config_json, src->len, &e->cfg, err))) goto fail;
    /* tensor parallel: zs_tp_load checked the checkpoint; rank_setup checks each rank's slices */
    if (src->tp == NULL && (rc = zs_model_check_weights(&e->cfg, src->lookup, src->ctx, err))) goto fail;
    e->ranks = calloc((size_t)e->nranks, sizeof *e->ranks);
    if (e->ranks == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "engine: out of memory");
        goto fail;
    }
    if (src->tp != NULL && e->nranks > 1) {
        rc = src->tp->kind == ZS_DEV_CUDA ? zs_comm_nccl_create(e->nranks, src->tp->devices, &e->comm, err)
                                          : zs_comm_cpu_create(e->nranks, &e->comm, err);
        if (rc == ZS_OK) rc = zs_rank_threads_create(e->nranks, &e->threads, err);
        if (rc) goto fail;
    }
    for (int r = 0; r < e->nranks && rc == ZS_OK; r++)
        rc = zs_model_shard_init(&e->ranks[r].shard, &e->cfg, r, e->nranks, e->comm, err);
    if (rc == ZS_OK) rc = on_ranks(e, rank_setup, err);
    if (rc == ZS_OK) rc = zs_kv_layout_init(&e->layout, e->cfg.nlayers, e->cfg.nkv_heads, e->cfg.head_dim,
                                            o.block_size, e->ranks[0].layout.dtype, err);
    if (rc == ZS_OK) rc = engine_kv_blocks(e, kv_from_gpu, err);
    if (rc == ZS_OK) rc = on_ranks(e, rank_pool, err);
    /* bookkeeping only: each rank's pool holds the blocks' bytes of its KV heads */
    if (rc == ZS_OK) rc = zs_kv_cache_init(&e->kv, &e->layout, (uint32_t)e->kv_nblocks, e->ranks[0].pool, err);
    if (rc) goto fail;
    e->kv_ready = 1;

    size_t T = (size_t)e->T;
    e->ids = malloc(T * sizeof(int32_t));
    e->pos = malloc(T * sizeof(int32_t));
    e->tseq = malloc(T * sizeof(int32_t));
    e->slot = malloc(T * sizeof(int32_t));
    e->nblocks = malloc(T * sizeof(int32_t));
    e->rows = malloc(T * sizeof(int32_t));
    e->seq_of_local = malloc(T * sizeof(int32_t));
    e->blocks = malloc(T * sizeof(*e->blocks));
    if (!e->ids || !e->pos || !e->tseq || !e->slot || !e->nblocks || !e->rows ||
        !e->seq_of_local || !e->blocks) {
        rc = zs_err_set(err, ZS_ENOMEM, "engine: out of memory for step metadata");
        goto fail;
    }
    e->src = NULL;
    *out = e;
    return 0;
fail:
    zs_engine_free(e);
    return rc;
}

int zs_engine_create_from(const char *config_json, size_t len, zs_wlookup_fn lookup, void *ctx,
                          zs_device_kind_t weights_device, const zs_engine_opts_t *opts,
                          zs_engine_t **out, zs_err_t *err) {
    engine_src_t src = {.config_json = config_json, .len = len, .lookup = lookup, .ctx = ctx,
                        .weights_device = weights_device, .weights_index = -1};
    return engine_create(&src, opts, out, err);
}

static int weights_lookup(void *ctx, const char *name, zs_wref_t *out) {
    const zs_tensor_t *t = zs_weights_find((const zs_weights_t *)ctx, name);
    if (t == NULL || t->info == NULL) return 1;
    out->data = t->data;
    out->dtype = t->info->dtype;
    out->ndim = t->info->ndim;
    memcpy(out->shape, t->info->shape, sizeof out->shape);
    return 0;
}

/* The checkpoint's config.json, or an error naming the directory. */
static int ckpt_config(const zs_ckpt_t *ck, engine_src_t *src, zs_err_t *err) {
    if (ck->config_json == NULL)
        return zs_err_set(err, ZS_ENOENT, "engine: %s has no config.json", ck->dir ? ck->dir : "checkpoint");
    src->config_json = ck->config_json;
    src->len = strlen(ck->config_json);
    return ZS_OK;
}

int zs_engine_create(const zs_ckpt_t *ck, const zs_weights_t *w, const zs_engine_opts_t *opts,
                     zs_engine_t **out, zs_err_t *err) {
    *out = NULL;
    if (ck == NULL || w == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: NULL checkpoint or weights");
    engine_src_t src = {.lookup = weights_lookup, .ctx = (void *)w, .weights_device = w->device.kind,
                        .weights_index = w->device.kind == ZS_DEV_CUDA ? w->device.index : -1};
    int rc = ckpt_config(ck, &src, err);
    return rc ? rc : engine_create(&src, opts, out, err);
}

int zs_engine_create_tp(const zs_tp_weights_t *w, const zs_engine_opts_t *opts, zs_engine_t **out,
                        zs_err_t *err) {
    *out = NULL;
    if (w == NULL || w->ckpt == NULL) return zs_err_set(err, ZS_EINVAL, "engine: NULL tensor-parallel weights");
    engine_src_t src = {.weights_device = w->kind, .weights_index = -1, .tp = w};
    int rc = ckpt_config(w->ckpt, &src, err);
    return rc ? rc : engine_create(&src, opts, out, err);
}

/* --- sequences ---------------------------------------------------------------------------- */

static seq_entry_t *get_seq(const zs_engine_t *e, int32_t seq) {
    if (seq < 0 || seq >= e->nseqs || !e->seqs[seq].used) return NULL;
    return &e->seqs[seq];
}

int zs_engine_seq_new(zs_engine_t *e, int32_t *seq, zs_err_t *err) {
    int32_t id = -1;
    for (int32_t i = 0; i < e->nseqs; i++)
        if (!e->seqs[i].used) {
            id = i;
            break;
        }
    if (id < 0) {
        if (e->nseqs == e->cap_seqs) {
            if (e->cap_seqs >= (1 << 24))
                return zs_err_set(err, ZS_ERANGE, "engine: too many sequences");
            int32_t cap = e->cap_seqs ? e->cap_seqs * 2 : 16;
            seq_entry_t *ns = realloc(e->seqs, (size_t)cap * sizeof *ns);
            if (ns == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory for sequences");
            e->seqs = ns;
            e->cap_seqs = cap;
        }
        id = e->nseqs++;
    }
    memset(&e->seqs[id], 0, sizeof e->seqs[id]);
    zs_kv_seq_init(&e->seqs[id].kv);
    e->seqs[id].used = 1;
    *seq = id;
    return 0;
}

int zs_engine_seq_fork(zs_engine_t *e, int32_t src, int32_t *dst, zs_err_t *err) {
    if (get_seq(e, src) == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: fork of unknown sequence %d", src);
    int32_t d;
    int rc = zs_engine_seq_new(e, &d, err);
    if (rc) return rc;
    /* e->seqs may have moved: look both up again */
    if ((rc = zs_kv_seq_fork(&e->kv, &e->seqs[d].kv, &e->seqs[src].kv, err))) {
        e->seqs[d].used = 0;
        return rc;
    }
    *dst = d;
    return 0;
}

int zs_engine_seq_free(zs_engine_t *e, int32_t seq, zs_err_t *err) {
    seq_entry_t *s = get_seq(e, seq);
    if (s == NULL) return zs_err_set(err, ZS_EINVAL, "engine: free of unknown sequence %d", seq);
    zs_kv_seq_release(&e->kv, &s->kv);
    s->used = 0;
    return 0;
}

int64_t zs_engine_seq_len(const zs_engine_t *e, int32_t seq) {
    const seq_entry_t *s = get_seq(e, seq);
    return s ? s->kv.ntokens : -1;
}

int zs_engine_seq_fork_prefix(zs_engine_t *e, int32_t src, int64_t ntokens, int32_t *dst,
                              zs_err_t *err) {
    const seq_entry_t *s = get_seq(e, src);
    if (s == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: fork of unknown sequence %d", src);
    const int64_t bs = e->layout.block_size;
    if (ntokens < 0 || ntokens % bs != 0 || ntokens > (s->kv.ntokens / bs) * bs)
        return zs_err_set(err, ZS_EINVAL,
                          "engine: fork of %lld positions of sequence %d (length %lld, block "
                          "size %lld): not a whole number of its full blocks",
                          (long long)ntokens, src, (long long)s->kv.ntokens, (long long)bs);
    int32_t d;
    int rc = zs_engine_seq_fork(e, src, &d, err);
    if (rc) return rc;
    zs_kv_seq_t *kv = &e->seqs[d].kv;
    int32_t keep = (int32_t)(ntokens / bs);
    for (int32_t i = keep; i < kv->nblocks; i++) (void)zs_kv_block_unref(&e->kv, kv->blocks[i]);
    kv->nblocks = keep;
    kv->ntokens = ntokens;
    *dst = d;
    return 0;
}

int32_t zs_engine_seq_blocks(const zs_engine_t *e, int32_t seq, const int32_t **blocks) {
    const seq_entry_t *s = get_seq(e, seq);
    if (s == NULL) return -1;
    if (blocks) *blocks = s->kv.blocks;
    return s->kv.nblocks;
}

/* --- KV blocks to and from host memory -------------------------------------------------- */

int zs_engine_seq_import(zs_engine_t *e, int32_t seq, const void *const *srcs, int32_t n,
                         zs_err_t *err) {
    if (e->nranks != 1) return zs_err_set(err, ZS_EUNSUPPORTED, "engine: KV import with tensor parallelism");
    seq_entry_t *s = get_seq(e, seq);
    if (s == NULL) return zs_err_set(err, ZS_EINVAL, "engine: import into unknown sequence %d", seq);
    engine_rank_t *rk = &e->ranks[0];
    const int64_t bs = e->layout.block_size;
    if (n < 0 || (n > 0 && srcs == NULL))
        return zs_err_set(err, ZS_EINVAL, "engine: import of %d blocks into sequence %d", n, seq);
    if (s->kv.ntokens % bs != 0)
        return zs_err_set(err, ZS_EINVAL,
                          "engine: import into sequence %d of length %lld: not a whole number of "
                          "blocks of %lld",
                          seq, (long long)s->kv.ntokens, (long long)bs);
    if (n == 0) return 0;
    const int64_t len = s->kv.ntokens + (int64_t)n * bs;
    if (len > e->cfg.max_pos)
        return zs_err_set(err, ZS_ERANGE,
                          "engine: import of %d blocks into sequence %d: %lld positions exceed "
                          "max_position_embeddings (%lld)",
                          n, seq, (long long)len, (long long)e->cfg.max_pos);
    const int32_t first = (int32_t)(s->kv.ntokens / bs);
    int rc = zs_kv_seq_reserve(&e->kv, &s->kv, len, err);
    if (rc) return rc;
    const int32_t *ids = s->kv.blocks + first;
    if (rk->be->ops->kv_blocks_in) {
        rc = rk->be->ops->kv_blocks_in(rk->be, rk->pool, &rk->layout, ids, srcs, n, err);
    } else {
        for (int32_t i = 0; i < n && rc == 0; i++)
            rc = rk->be->ops->upload(rk->be, (char *)rk->pool + (size_t)ids[i] * rk->layout.block_bytes,
                                     srcs[i], rk->layout.block_bytes, err);
    }
    if (rc) return rc; /* the reserved blocks stay in the table, unused, until the sequence goes */
    s->kv.ntokens = len;
    return 0;
}

/* Releases the blocks of every export with a ticket <= upto. */
static void exports_release(zs_engine_t *e, uint64_t upto) {
    int32_t k = 0;
    while (k < e->nexports && e->exports[k].ticket <= upto) {
        export_t *x = &e->exports[k++];
        for (int32_t i = 0; i < x->n; i++) (void)zs_kv_block_unref(&e->kv, x->blocks[i]);
        free(x->blocks);
    }
    if (k > 0) memmove(e->exports, e->exports + k, (size_t)(e->nexports - k) * sizeof *e->exports);
    e->nexports -= k;
}

int zs_engine_kv_export(zs_engine_t *e, int32_t seq, const int32_t *idx, int32_t n, void *const *dsts,
                        uint64_t *ticket, zs_err_t *err) {
    if (e->nranks != 1) return zs_err_set(err, ZS_EUNSUPPORTED, "engine: KV export with tensor parallelism");
    const seq_entry_t *s = get_seq(e, seq);
    if (s == NULL) return zs_err_set(err, ZS_EINVAL, "engine: export of unknown sequence %d", seq);
    engine_rank_t *rk = &e->ranks[0];
    const int64_t full = s->kv.ntokens / e->layout.block_size;
    if (n < 1 || idx == NULL || dsts == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: export of %d blocks of sequence %d", n, seq);
    int32_t *held = malloc((size_t)n * sizeof *held);
    if (held == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory for an export of %d blocks", n);
    for (int32_t i = 0; i < n; i++) {
        if (idx[i] < 0 || idx[i] >= full) {
            free(held);
            return zs_err_set(err, ZS_EINVAL,
                              "engine: export of block %d of sequence %d, which has %lld full blocks",
                              idx[i], seq, (long long)full);
        }
        held[i] = s->kv.blocks[idx[i]];
    }
    if (rk->be->ops->kv_blocks_out == NULL) { /* synchronous */
        for (int32_t i = 0; i < n; i++) {
            int rc = rk->be->ops->download(rk->be, dsts[i], (const char *)rk->pool + (size_t)held[i] * rk->layout.block_bytes,
                                           rk->layout.block_bytes, err);
            if (rc) {
                free(held);
                return rc;
            }
        }
        free(held);
        *ticket = ++e->sync_tickets;
        return 0;
    }
    if (e->nexports == e->cap_exports) {
        int32_t cap = e->cap_exports ? e->cap_exports * 2 : 16;
        export_t *nx = realloc(e->exports, (size_t)cap * sizeof *nx);
        if (nx == NULL) {
            free(held);
            return zs_err_set(err, ZS_ENOMEM, "engine: out of memory for KV exports");
        }
        e->exports = nx;
        e->cap_exports = cap;
    }
    uint64_t t = 0;
    int rc = rk->be->ops->kv_blocks_out(rk->be, rk->pool, &rk->layout, held, dsts, n, &t, err);
    if (rc) {
        free(held);
        return rc;
    }
    for (int32_t i = 0; i < n; i++) (void)zs_kv_block_ref(&e->kv, held[i], NULL);
    e->exports[e->nexports++] = (export_t){.ticket = t, .blocks = held, .n = n};
    *ticket = t;
    return 0;
}

int zs_engine_kv_export_done(zs_engine_t *e, uint64_t ticket, int wait, zs_err_t *err) {
    zs_backend_t *be = e->ranks[0].be;
    if (be->ops->kv_out_done == NULL) return 1; /* exports were synchronous */
    if (e->nexports == 0 || ticket < e->exports[0].ticket) return 1;
    int rc = be->ops->kv_out_done(be, ticket, wait, err);
    if (rc == 1) exports_release(e, ticket);
    return rc;
}

static int rank_sync(void *ctx, int r, zs_err_t *err) {
    zs_engine_t *e = ctx;
    return e->ranks[r].be->ops->sync(e->ranks[r].be, err);
}

int zs_engine_sync(zs_engine_t *e, zs_err_t *err) {
    if (e->broken) return zs_err_set(err, ZS_ESTATE, "engine: a tensor-parallel step failed earlier");
    return on_ranks(e, rank_sync, err);
}

/* --- forward ------------------------------------------------------------------------------ */

static int rank_step(void *ctx, int r, zs_err_t *err) {
    zs_engine_t *e = ctx;
    engine_rank_t *rk = &e->ranks[r];
    return zs_model_step(&rk->model, e->job_bt, rk->pool, &rk->layout, e->job_rows, e->job_nrows,
                         e->job_logits, err);
}

/* One forward step: on the one rank, or on every rank in lockstep (a failure aborts the
 * group, and the engine refuses further steps). */
static int engine_step(zs_engine_t *e, const zs_fwd_batch_t *bt, int32_t nrows, float *logits,
                       zs_err_t *err) {
    if (e->threads == NULL)
        return zs_model_step(&e->ranks[0].model, bt, e->ranks[0].pool, &e->ranks[0].layout, e->rows,
                             nrows, logits, err);
    e->job_bt = bt;
    e->job_rows = e->rows;
    e->job_nrows = nrows;
    e->job_logits = logits;
    int rc = zs_rank_threads_run(e->threads, rank_step, e, engine_abort, e, err);
    if (rc) e->broken = 1;
    return rc;
}

int zs_engine_forward(zs_engine_t *e, const zs_engine_item_t *items, int32_t nitems,
                      float *logits, int all_positions, zs_err_t *err) {
    if (nitems < 1 || items == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: forward with no items");
    if (e->broken)
        return zs_err_set(err, ZS_ESTATE, "engine: a tensor-parallel step failed earlier; the engine cannot run");
    const int32_t V = e->cfg.vocab;
    uint64_t stamp = ++e->stamp;
    for (int32_t i = 0; i < nitems; i++) {
        const zs_engine_item_t *it = &items[i];
        seq_entry_t *s = get_seq(e, it->seq);
        if (s == NULL) return zs_err_set(err, ZS_EINVAL, "engine: unknown sequence %d", it->seq);
        if (s->stamp == stamp)
            return zs_err_set(err, ZS_EINVAL, "engine: sequence %d listed twice in one step",
                              it->seq);
        s->stamp = stamp;
        if (it->n < 1 || it->ids == NULL)
            return zs_err_set(err, ZS_EINVAL, "engine: sequence %d: no tokens", it->seq);
        for (int32_t j = 0; j < it->n; j++)
            if (it->ids[j] < 0 || it->ids[j] >= V)
                return zs_err_set(err, ZS_ERANGE,
                                  "engine: sequence %d: token id %d at index %d is outside the "
                                  "vocabulary (%d)",
                                  it->seq, it->ids[j], j, V);
        if (s->kv.ntokens + it->n > e->cfg.max_pos)
            return zs_err_set(err, ZS_ERANGE,
                              "engine: sequence %d: %lld positions exceed "
                              "max_position_embeddings (%lld)",
                              it->seq, (long long)(s->kv.ntokens + it->n),
                              (long long)e->cfg.max_pos);
    }
    /* reserve KV for everything first: ZS_EBUSY before any compute */
    uint32_t need = 0;
    for (int32_t i = 0; i < nitems; i++) {
        seq_entry_t *s = &e->seqs[items[i].seq];
        int64_t bs = e->layout.block_size;
        int64_t want = (s->kv.ntokens + items[i].n + bs - 1) / bs;
        if (want > s->kv.nblocks) need += (uint32_t)(want - s->kv.nblocks);
    }
    if (need > zs_kv_free_blocks(&e->kv))
        return zs_err_set(err, ZS_EBUSY, "engine: KV cache full: step needs %u more blocks, %u free",
                          need, zs_kv_free_blocks(&e->kv));
    for (int32_t i = 0; i < nitems; i++) {
        seq_entry_t *s = &e->seqs[items[i].seq];
        int rc = zs_kv_seq_reserve(&e->kv, &s->kv, s->kv.ntokens + items[i].n, err);
        if (rc) return rc;
        s->base = s->kv.ntokens;
    }

    /* steps of at most T tokens, walking items in order */
    int32_t item = 0, off = 0; /* cursor */
    int64_t out_row = 0;       /* logits rows written so far */
    while (item < nitems) {
        int32_t ntok = 0, nseq = 0, nrows = 0;
        int64_t first_out = out_row;
        while (item < nitems && ntok < e->T) {
            const zs_engine_item_t *it = &items[item];
            seq_entry_t *s = &e->seqs[it->seq];
            int32_t take = it->n - off;
            if (take > e->T - ntok) take = e->T - ntok;
            int32_t local = nseq++;
            e->seq_of_local[local] = it->seq;
            e->blocks[local] = s->kv.blocks;
            e->nblocks[local] = s->kv.nblocks;
            for (int32_t j = 0; j < take; j++) {
                int64_t p = s->base + off + j;
                e->ids[ntok] = it->ids[off + j];
                e->pos[ntok] = (int32_t)p;
                e->tseq[ntok] = local;
                e->slot[ntok] = zs_kv_seq_slot(&e->layout, &s->kv, p);
                if (all_positions || off + j == it->n - 1) e->rows[nrows++] = ntok;
                ntok++;
            }
            off += take;
            if (off == it->n) {
                item++;
                off = 0;
            }
        }
        zs_fwd_batch_t bt = {.ntok = ntok, .nseq = nseq, .tok_ids = e->ids, .tok_pos = e->pos,
                             .tok_seq = e->tseq, .tok_slot = e->slot, .seq_blocks = e->blocks,
                             .seq_nblocks = e->nblocks};
        float *dst = logits ? logits + (size_t)first_out * (size_t)V : NULL;
        int rc = engine_step(e, &bt, logits ? nrows : 0, dst, err);
        if (rc) return rc;
        out_row += nrows;
        /* the tokens of this step are now in the cache */
        for (int32_t t = 0; t < ntok; t++) {
            seq_entry_t *s = &e->seqs[e->seq_of_local[e->tseq[t]]];
            s->kv.ntokens = (int64_t)e->pos[t] + 1;
        }
    }
    return 0;
}

int zs_engine_prefill(zs_engine_t *e, int32_t seq, const int32_t *ids, int32_t n, float *logits,
                      zs_err_t *err) {
    zs_engine_item_t it = {.seq = seq, .ids = ids, .n = n};
    return zs_engine_forward(e, &it, 1, logits, 0, err);
}

int zs_engine_decode(zs_engine_t *e, int32_t nseq, const int32_t *seqs, const int32_t *ids,
                     float *logits, zs_err_t *err) {
    if (nseq < 1 || seqs == NULL || ids == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: decode with no sequences");
    zs_engine_item_t stack[64];
    zs_engine_item_t *its = nseq <= 64 ? stack : malloc((size_t)nseq * sizeof *its);
    if (its == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory for %d items", nseq);
    for (int32_t i = 0; i < nseq; i++) {
        its[i].seq = seqs[i];
        its[i].ids = &ids[i];
        its[i].n = 1;
    }
    int rc = zs_engine_forward(e, its, nseq, logits, 0, err);
    if (its != stack) free(its);
    return rc;
}
