/* Generation engine: owns the backend, the model's forward state, the paged KV cache and
 * the sequences; validates forward requests (sequence ids, token ids, positions), reserves
 * KV blocks, splits requests into steps of at most max_step_tokens tokens and describes each
 * step (positions, KV slots, block tables) for the backend. Also moves whole KV blocks
 * between the cache and host memory (import into a sequence; asynchronous export that holds
 * the blocks until the copy lands). */
#include "zerostart/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/forward.h"
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

struct zs_engine {
    zs_model_config_t cfg;
    zs_backend_t *be;
    zs_model_t model;
    int model_ready;
    zs_kv_layout_t layout;
    zs_kv_cache_t kv;
    int kv_ready;
    void *pool;
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
};

void zs_engine_opts_default(zs_engine_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->backend = ZS_BACKEND_CPU;
}

const zs_model_config_t *zs_engine_config(const zs_engine_t *e) { return &e->cfg; }
const zs_kv_cache_t *zs_engine_kv(const zs_engine_t *e) { return &e->kv; }

void zs_engine_weights_resident(zs_engine_t *e) {
    e->model.wait = NULL;
    e->model.wait_ctx = NULL;
}

static void exports_release(zs_engine_t *e, uint64_t upto);

void zs_engine_free(zs_engine_t *e) {
    if (e == NULL) return;
    if (e->nexports > 0) { /* let the copies land before the pool goes */
        zs_err_t err = {0};
        if (e->be->ops->kv_out_done) (void)e->be->ops->kv_out_done(e->be, e->exports[e->nexports - 1].ticket, 1, &err);
        exports_release(e, UINT64_MAX);
    }
    free(e->exports);
    if (e->kv_ready) {
        for (int32_t i = 0; i < e->nseqs; i++)
            if (e->seqs[i].used) zs_kv_seq_release(&e->kv, &e->seqs[i].kv);
        zs_kv_cache_destroy(&e->kv);
    }
    free(e->seqs);
    if (e->model_ready) zs_model_destroy(&e->model);
    if (e->be) {
        if (e->pool) e->be->ops->free(e->be, e->pool);
        e->be->ops->destroy(e->be);
    }
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

/* weights_index: CUDA device of the weights (-1: the current device). */
static int engine_create(const char *config_json, size_t len, zs_wlookup_fn lookup, void *ctx,
                         zs_device_kind_t weights_device, int weights_index,
                         const zs_engine_opts_t *opts, zs_engine_t **out, zs_err_t *err) {
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

    zs_engine_t *e = calloc(1, sizeof *e);
    if (e == NULL) return zs_err_set(err, ZS_ENOMEM, "engine: out of memory");
    int rc;
    if ((rc = zs_model_config_parse(config_json, len, &e->cfg, err))) goto fail;
    if ((rc = zs_model_check_weights(&e->cfg, lookup, ctx, err))) goto fail;

    zs_dtype_t kv_dtype = ZS_F32;
    switch (o.backend) {
    case ZS_BACKEND_CPU:
        if (weights_device != ZS_DEV_CPU) {
            rc = zs_err_set(err, ZS_EINVAL, "engine: the CPU backend needs weights loaded on the CPU");
            goto fail;
        }
        if ((rc = zs_cpu_backend_create(o.threads, &e->be, err))) goto fail;
        break;
    case ZS_BACKEND_CUDA:
        /* first, so that builds without CUDA say so whatever the weights */
        if ((rc = zs_cuda_backend_create(weights_index, &e->be, err))) goto fail;
        if (weights_device != ZS_DEV_CUDA) {
            rc = zs_err_set(err, ZS_EINVAL,
                            "engine: the CUDA backend needs weights loaded on a CUDA device");
            goto fail;
        }
        kv_dtype = ZS_BF16;
        break;
    default:
        rc = zs_err_set(err, ZS_EINVAL, "engine: unknown backend %d", (int)o.backend);
        goto fail;
    }

    e->T = o.max_step_tokens;
    if ((rc = zs_model_init(&e->model, &e->cfg, e->be, lookup, ctx, e->T, err))) goto fail;
    e->model_ready = 1;
    if (o.wait_weights != NULL) {
        e->model.weights_ready = calloc((size_t)e->cfg.nlayers + 2, 1);
        if (e->model.weights_ready == NULL) {
            rc = zs_err_set(err, ZS_ENOMEM, "engine: out of memory");
            goto fail;
        }
        e->model.wait = o.wait_weights;
        e->model.wait_ctx = o.wait_ctx;
    }

    if ((rc = zs_kv_layout_init(&e->layout, e->cfg.nlayers, e->cfg.nkv_heads, e->cfg.head_dim,
                                o.block_size, kv_dtype, err)))
        goto fail;
    const uint64_t max_blocks = (uint64_t)INT32_MAX / 4096u;
    uint64_t nblocks;
    if (kv_from_gpu) {
        size_t fr = 0, tot = 0;
        if ((rc = zs_gpu_mem_info(&fr, &tot, err))) goto fail;
        o.kv_bytes = (size_t)floor((double)fr * o.kv_gpu_fraction);
        nblocks = o.kv_bytes / e->layout.block_bytes;
        if (nblocks > max_blocks) nblocks = max_blocks;
        if (nblocks > SIZE_MAX / e->layout.block_bytes) nblocks = SIZE_MAX / e->layout.block_bytes;
    } else {
        nblocks = o.kv_blocks ? o.kv_blocks : o.kv_bytes / e->layout.block_bytes;
    }
    if (nblocks < 1) {
        rc = zs_err_set(err, ZS_EINVAL,
                        "engine: KV capacity of %zu bytes holds no block (%zu bytes each)",
                        o.kv_bytes, e->layout.block_bytes);
        goto fail;
    }
    if (nblocks > max_blocks || nblocks > SIZE_MAX / e->layout.block_bytes) {
        rc = zs_err_set(err, ZS_ERANGE, "engine: %llu KV blocks is too many",
                        (unsigned long long)nblocks);
        goto fail;
    }
    e->pool = e->be->ops->alloc(e->be, (size_t)nblocks * e->layout.block_bytes, err);
    if (e->pool == NULL) {
        rc = err && err->code ? err->code : ZS_ENOMEM;
        goto fail;
    }
    if ((rc = zs_kv_cache_init(&e->kv, &e->layout, (uint32_t)nblocks, e->pool, err))) goto fail;
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
    *out = e;
    return 0;
fail:
    zs_engine_free(e);
    return rc;
}

int zs_engine_create_from(const char *config_json, size_t len, zs_wlookup_fn lookup, void *ctx,
                          zs_device_kind_t weights_device, const zs_engine_opts_t *opts,
                          zs_engine_t **out, zs_err_t *err) {
    return engine_create(config_json, len, lookup, ctx, weights_device, -1, opts, out, err);
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

int zs_engine_create(const zs_ckpt_t *ck, const zs_weights_t *w, const zs_engine_opts_t *opts,
                     zs_engine_t **out, zs_err_t *err) {
    *out = NULL;
    if (ck == NULL || w == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: NULL checkpoint or weights");
    if (ck->config_json == NULL)
        return zs_err_set(err, ZS_ENOENT, "engine: %s has no config.json",
                          ck->dir ? ck->dir : "checkpoint");
    return engine_create(ck->config_json, strlen(ck->config_json), weights_lookup, (void *)w,
                         w->device.kind, w->device.kind == ZS_DEV_CUDA ? w->device.index : -1,
                         opts, out, err);
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
    seq_entry_t *s = get_seq(e, seq);
    if (s == NULL) return zs_err_set(err, ZS_EINVAL, "engine: import into unknown sequence %d", seq);
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
    if (e->be->ops->kv_blocks_in) {
        rc = e->be->ops->kv_blocks_in(e->be, e->pool, &e->layout, ids, srcs, n, err);
    } else {
        for (int32_t i = 0; i < n && rc == 0; i++)
            rc = e->be->ops->upload(e->be, (char *)e->pool + (size_t)ids[i] * e->layout.block_bytes,
                                    srcs[i], e->layout.block_bytes, err);
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
    const seq_entry_t *s = get_seq(e, seq);
    if (s == NULL) return zs_err_set(err, ZS_EINVAL, "engine: export of unknown sequence %d", seq);
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
    if (e->be->ops->kv_blocks_out == NULL) { /* synchronous */
        for (int32_t i = 0; i < n; i++) {
            int rc = e->be->ops->download(e->be, dsts[i], (const char *)e->pool + (size_t)held[i] * e->layout.block_bytes,
                                          e->layout.block_bytes, err);
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
    int rc = e->be->ops->kv_blocks_out(e->be, e->pool, &e->layout, held, dsts, n, &t, err);
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
    if (e->be->ops->kv_out_done == NULL) return 1; /* exports were synchronous */
    if (e->nexports == 0 || ticket < e->exports[0].ticket) return 1;
    int rc = e->be->ops->kv_out_done(e->be, ticket, wait, err);
    if (rc == 1) exports_release(e, ticket);
    return rc;
}

int zs_engine_sync(zs_engine_t *e, zs_err_t *err) { return e->be->ops->sync(e->be, err); }

/* --- forward ------------------------------------------------------------------------------ */

int zs_engine_forward(zs_engine_t *e, const zs_engine_item_t *items, int32_t nitems,
                      float *logits, int all_positions, zs_err_t *err) {
    if (nitems < 1 || items == NULL)
        return zs_err_set(err, ZS_EINVAL, "engine: forward with no items");
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
        int rc = zs_model_step(&e->model, &bt, e->pool, &e->layout, e->rows,
                               logits ? nrows : 0, dst, err);
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
