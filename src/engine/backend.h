/* Compute backend interface of the engine: the few ops a Llama-family forward pass needs,
 * plus memory management on the backend. The model code (model.c) only calls through this
 * vtable, so the same forward pass runs on the CPU backend (cpu_*.c) and, later, a CUDA one.
 *
 * Conventions every backend implements:
 *  - Pointers named "backend memory" come from ops->alloc (or, for weights, from the loader's
 *    allocation on the same device); the model never dereferences them.
 *  - Activations are float32, row-major [rows, dim], densely packed.
 *  - Weights (zs_bweight_t) keep their file dtype (F32, F16 or BF16) and are converted on the
 *    fly; a matrix is [rows = out_features, cols = in_features] like torch Linear.
 *  - begin_batch hands the backend the host-side description of one forward step (token ids,
 *    positions, cache slots, block tables); ops that need per-token data (embed, rope,
 *    kv_store, attention) read it from there. A device backend copies it over once per step.
 *  - Ops run in call order; `sync` waits for all of them. Host-visible results only come out
 *    through `download`. Every op returns 0 or a negative zs_status and fills err. */
#ifndef ZS_ENGINE_BACKEND_H
#define ZS_ENGINE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"
#include "zerostart/kv_cache.h"
#include "zerostart/load.h"

typedef struct zs_bweight {
    const void *data;          /* backend memory; NULL = absent (e.g. no bias) */
    zs_dtype_t dtype;          /* ZS_F32, ZS_F16, ZS_BF16 */
    int64_t rows, cols;        /* 1-D vectors: rows = 1 */
} zs_bweight_t;

/* One forward step over ntok tokens drawn from nseq sequences (host memory, valid until the
 * next begin_batch). Tokens of the same sequence appear in increasing position order. */
typedef struct zs_fwd_batch {
    int32_t ntok, nseq;
    const int32_t *tok_ids;    /* [ntok] token ids (validated < vocab) */
    const int32_t *tok_pos;    /* [ntok] position of the token in its sequence */
    const int32_t *tok_seq;    /* [ntok] index into the seq_* arrays */
    const int32_t *tok_slot;   /* [ntok] KV slot (block * block_size + offset) it writes */
    const int32_t *const *seq_blocks; /* [nseq] block tables */
    const int32_t *seq_nblocks;       /* [nseq] their lengths */
} zs_fwd_batch_t;

typedef struct zs_backend zs_backend_t;

typedef struct zs_backend_ops {
    const char *name;
    void (*destroy)(zs_backend_t *b);

    /* --- memory ---------------------------------------------------------------------- */
    void *(*alloc)(zs_backend_t *b, size_t bytes, zs_err_t *err);   /* 64-byte aligned */
    void (*free)(zs_backend_t *b, void *p);
    int (*upload)(zs_backend_t *b, void *dst, const void *src_host, size_t bytes, zs_err_t *err);
    int (*download)(zs_backend_t *b, void *dst_host, const void *src, size_t bytes,
                    zs_err_t *err);
    int (*sync)(zs_backend_t *b, zs_err_t *err);

    /* --- one forward step -------------------------------------------------------------- */
    int (*begin_batch)(zs_backend_t *b, const zs_fwd_batch_t *batch, zs_err_t *err);
    /* x[t, :] = table[tok_ids[t], :] for every batch token. */
    int (*embed)(zs_backend_t *b, float *x, const zs_bweight_t *table, zs_err_t *err);
    /* y[n, w.rows] = x[n, w.cols] @ w^T (+ bias). y and x do not overlap. */
    int (*matmul)(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                  const zs_bweight_t *bias, zs_err_t *err);
    /* y[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w, for n rows of dim; y may equal x. */
    int (*rmsnorm)(zs_backend_t *b, float *y, const float *x, int32_t n, int32_t dim,
                   const zs_bweight_t *w, float eps, zs_err_t *err);
    /* In-place rotary embedding (rotate-half convention) of x[ntok, nheads, head_dim] at the
     * batch positions; inv_freq is backend memory of head_dim/2 floats; cos and sin are
     * multiplied by attn_factor. */
    int (*rope)(zs_backend_t *b, float *x, int32_t nheads, int32_t head_dim,
                const float *inv_freq, float attn_factor, zs_err_t *err);
    /* Writes k, v ([ntok, nkv_heads, head_dim]) of `layer` into the pool at tok_slot. */
    int (*kv_store)(zs_backend_t *b, void *pool, const zs_kv_layout_t *l, int32_t layer,
                    const float *k, const float *v, zs_err_t *err);
    /* out[t, h, :] = softmax(q[t, h, :] . K[j] * scale) V[j] over the positions j of token t's
     * sequence with j <= pos(t) (and j > pos(t) - window when window > 0), reading K/V of
     * `layer` through the sequence's block table. Query head h uses kv head
     * h / (nheads / nkv_heads). */
    int (*attention)(zs_backend_t *b, float *out, const float *q, const void *pool,
                     const zs_kv_layout_t *l, int32_t layer, int32_t nheads, int32_t window,
                     float scale, zs_err_t *err);
    /* y[i] = silu(gate[i]) * up[i]; y may equal gate. */
    int (*silu_mul)(zs_backend_t *b, float *y, const float *gate, const float *up, size_t n,
                    zs_err_t *err);
    /* y[i] += x[i] */
    int (*add)(zs_backend_t *b, float *y, const float *x, size_t n, zs_err_t *err);
    /* y[i, :] = x[rows[i], :] (rows: host array of nrows indices) */
    int (*gather_rows)(zs_backend_t *b, float *y, const float *x, const int32_t *rows,
                       int32_t nrows, int32_t dim, zs_err_t *err);

    /* --- fused ops (optional: NULL = model.c composes them from the ops above; a backend
     * that sets them must give the composition's result up to float32 rounding) ---------- */
    /* y0, y1, y2 = x @ w0^T (+ b0), x @ w1^T (+ b1), x @ w2^T (+ b2): the q/k/v projections of
     * one input in one pass (bias pointers may be NULL or hold no data). */
    int (*matmul3)(zs_backend_t *b, float *y0, float *y1, float *y2, const float *x, int32_t n,
                   const zs_bweight_t *w0, const zs_bweight_t *w1, const zs_bweight_t *w2,
                   const zs_bweight_t *b0, const zs_bweight_t *b1, const zs_bweight_t *b2,
                   zs_err_t *err);
    /* y[n, w.rows] += x @ w^T (+ bias): a projection straight into the residual stream;
     * scratch ([n, w.rows] floats of backend memory) may be used for the product. */
    int (*matmul_add)(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                      const zs_bweight_t *bias, float *scratch, zs_err_t *err);
    /* y[n, wg.rows] = silu(x @ wg^T) * (x @ wu^T): the gated MLP input; scratch ([n, wu.rows]
     * floats) may be used for the up product. */
    int (*matmul_silu)(zs_backend_t *b, float *y, const float *x, int32_t n,
                       const zs_bweight_t *wg, const zs_bweight_t *wu, float *scratch,
                       zs_err_t *err);

    /* --- KV block transfers (optional: NULL = the engine copies each block with upload /
     * download, synchronously) ------------------------------------------------------------ */
    /* Queues copies of n blocks (l->block_bytes each) from host memory srcs[i] into pool block
     * ids[i], ordered before the ops that follow; srcs must stay valid until the next
     * download or sync returns. */
    int (*kv_blocks_in)(zs_backend_t *b, void *pool, const zs_kv_layout_t *l, const int32_t *ids,
                        const void *const *srcs, int32_t n, zs_err_t *err);
    /* Starts copies of n pool blocks ids[i] to host memory dsts[i] (page-locked for them to
     * be asynchronous), ordered after every op issued so far, without waiting for them;
     * *ticket (increasing) names the batch for kv_out_done. The blocks must not be written
     * until it is done. */
    int (*kv_blocks_out)(zs_backend_t *b, const void *pool, const zs_kv_layout_t *l,
                         const int32_t *ids, void *const *dsts, int32_t n, uint64_t *ticket,
                         zs_err_t *err);
    /* 1 when the copies of ticket and of every earlier ticket are done, 0 when not yet (wait
     * = 1: blocks until they are), or a negative status. */
    int (*kv_out_done)(zs_backend_t *b, uint64_t ticket, int wait, zs_err_t *err);

    /* --- tensor parallelism (optional: NULL where the backend cannot be a rank) ---------- */
    /* x[t, :] = table[tok_ids[t] - row0, :] when row0 <= tok_ids[t] < row0 + table->rows,
     * else zeros: one rank's part of a vocabulary-parallel embedding. */
    int (*embed_rows)(zs_backend_t *b, float *x, const zs_bweight_t *table, int64_t row0,
                      zs_err_t *err);
    /* Hands the backend's ordering to a collective that will write `bytes` at `p` (may be
     * NULL/0): launches the work the backend has recorded but not launched yet, forgets
     * cached data derived from [p, p + bytes), and returns in *stream the native stream
     * (cudaStream_t) the collective must be enqueued on. NULL for backends whose ops have
     * completed when they return (CPU): collectives then run on the calling thread. */
    int (*collective_stream)(zs_backend_t *b, void *p, size_t bytes, void **stream,
                             zs_err_t *err);
} zs_backend_ops_t;

struct zs_backend {
    const zs_backend_ops_t *ops;
    zs_device_kind_t device;   /* where its memory lives; weights must be on the same device */
};

/* CPU backend: threads = 0 picks the number of online CPUs (capped at 64). */
int zs_cpu_backend_create(int threads, zs_backend_t **out, zs_err_t *err);
/* CUDA backend on GPU `device` (-1: the calling thread's current device); its KV pool must be
 * BF16. Builds without CUDA answer ZS_EUNSUPPORTED (src/gpu/none_backend.c). */
int zs_cuda_backend_create(int device, zs_backend_t **out, zs_err_t *err);

#endif
