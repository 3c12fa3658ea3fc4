/* CUDA backend: the engine's backend vtable (engine/backend.h) on one GPU. Owns the stream,
 * the cuBLAS handle, the per-step metadata (one packed host->device copy per step from a
 * pinned buffer), the RoPE cos/sin tables (computed on the host exactly as the CPU backend
 * computes them, grown on demand), the half-precision copy of the last matrix-product input
 * and the attention scratch. Matrix products go through cuBLAS (bf16/f16 weights: the float32
 * input is rounded once to the weights' type, products accumulate in fp32; f32 weights: pure
 * fp32); everything else runs in the kernels of src/gpu/kernels. Activations are float32, the
 * KV pool bf16. Built only in CUDA builds (none_backend.c stands in otherwise). */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "gpu/kernels/kernels.h"
#include "zerostart/model.h"

enum { ATTN_AUTO = 0, ATTN_SIMPLE = 1 };

typedef struct {
    zs_backend_t base; /* first member */
    int dev;
    cudaStream_t st;
    cublasHandle_t blas;
    int attn_mode;
    int use_gemv; /* own kernel for steps of <= 8 tokens (ZS_CUDA_GEMV=0: cuBLAS always) */
    /* step metadata */
    int32_t *h_meta, *d_meta;
    size_t meta_cap; /* int32 capacity of both */
    cudaEvent_t meta_ev;
    int meta_ev_pending;
    zs_fwd_batch_t batch; /* host description (caller's memory) */
    zs_kern_step_t step;  /* device view */
    int have_batch;
    int32_t max_pos;      /* largest position in the step */
    int decode_only;      /* every token from a different sequence */
    /* RoPE tables */
    const float *rope_inv_dev;
    int32_t rope_half;
    float rope_af;
    float rope_inv[ZS_MODEL_MAX_HEAD_DIM / 2];
    float *h_cos, *h_sin, *d_cos, *d_sin;
    int64_t tab_rows;
    /* half-precision copy (bf16 or f16) of one float buffer: the next matmul input */
    void *shadow;
    size_t shadow_cap; /* bytes */
    const float *shadow_src;
    size_t shadow_elems;
    int shadow_f16, shadow_valid;
    /* split attention partials */
    float *part;
    size_t part_cap; /* floats */
} cuda_be_t;

static cuda_be_t *CB(zs_backend_t *b) { return (cuda_be_t *)b; }

static int cu_err(zs_err_t *err, cudaError_t e, const char *what) {
    return zs_err_set(err, e == cudaErrorMemoryAllocation ? ZS_ENOMEM : ZS_ECUDA,
                      "cuda backend: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}
#define CU(call, what)                                                                           \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) return cu_err(err, e_, (what));                                   \
    } while (0)

static int blas_err(zs_err_t *err, cublasStatus_t s, const char *what) {
    return zs_err_set(err, ZS_ECUDA, "cuda backend: %s: %s (cuBLAS status %d)", what,
                      cublasGetStatusString(s), (int)s);
}

static int kw_dtype(zs_dtype_t d) {
    return d == ZS_BF16 ? ZS_KW_BF16 : d == ZS_F16 ? ZS_KW_F16 : ZS_KW_F32;
}

static int check_wdtype(const zs_bweight_t *w, const char *op, zs_err_t *err) {
    if (w->dtype != ZS_F32 && w->dtype != ZS_F16 && w->dtype != ZS_BF16)
        return zs_err_set(err, ZS_EUNSUPPORTED, "cuda %s: weight dtype %d is not F32/F16/BF16", op,
                          (int)w->dtype);
    if (w->data == NULL) return zs_err_set(err, ZS_EINVAL, "cuda %s: weight without data", op);
    return 0;
}

/* --- shadow bookkeeping: drop it when its source is written ---------------------------- */
static void touched(cuda_be_t *cb, const void *p, size_t bytes) {
    if (!cb->shadow_valid) return;
    const char *a = (const char *)cb->shadow_src, *ae = a + cb->shadow_elems * sizeof(float);
    const char *b = (const char *)p, *be = b + bytes;
    if (b < ae && a < be) cb->shadow_valid = 0;
}

static int shadow_reserve(cuda_be_t *cb, size_t bytes, zs_err_t *err) {
    cb->shadow_valid = 0;
    if (bytes <= cb->shadow_cap) return 0;
    CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (growing the half-precision scratch)");
    cudaFree(cb->shadow);
    cb->shadow = NULL;
    cb->shadow_cap = 0;
    size_t cap = bytes < ((size_t)1 << 20) ? (size_t)1 << 20 : bytes;
    CU(cudaMalloc(&cb->shadow, cap), "cudaMalloc (half-precision scratch)");
    cb->shadow_cap = cap;
    return 0;
}

static void shadow_set(cuda_be_t *cb, const float *src, size_t elems, int f16) {
    cb->shadow_src = src;
    cb->shadow_elems = elems;
    cb->shadow_f16 = f16;
    cb->shadow_valid = 1;
}

/* --- memory ------------------------------------------------------------------------------- */
static void *cu_alloc(zs_backend_t *b, size_t bytes, zs_err_t *err) {
    (void)b;
    void *p = NULL;
    if (bytes == 0) bytes = 256;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) (void)cudaGetLastError();
        zs_err_set(err, e == cudaErrorMemoryAllocation ? ZS_ENOMEM : ZS_ECUDA,
                   "cuda backend: cudaMalloc(%zu bytes): %s (%zu of %zu bytes free)", bytes,
                   cudaGetErrorString(e), fr, tot);
        return NULL;
    }
    return p;
}

static void cu_free(zs_backend_t *b, void *p) {
    cuda_be_t *cb = CB(b);
    cb->shadow_valid = 0; /* the address may come back from a later alloc */
    if (p) {
        (void)cudaStreamSynchronize(cb->st);
        cudaFree(p);
    }
}

static int cu_upload(zs_backend_t *b, void *dst, const void *src, size_t bytes, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    touched(cb, dst, bytes);
    if (bytes == 0) return 0;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->st), "upload (cudaMemcpyAsync H2D)");
    CU(cudaStreamSynchronize(cb->st), "upload (cudaStreamSynchronize)");
    return 0;
}

static int cu_download(zs_backend_t *b, void *dst, const void *src, size_t bytes, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (bytes == 0) return 0;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->st), "download (cudaMemcpyAsync D2H)");
    CU(cudaStreamSynchronize(cb->st), "download (cudaStreamSynchronize)");
    return 0;
}

static int cu_sync(zs_backend_t *b, zs_err_t *err) {
    CU(cudaStreamSynchronize(CB(b)->st), "cudaStreamSynchronize");
    return 0;
}

/* --- step metadata -------------------------------------------------------------------- */
static int meta_reserve(cuda_be_t *cb, size_t n, zs_err_t *err) {
    if (n <= cb->meta_cap) return 0;
    CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (growing step metadata)");
    cudaFree(cb->d_meta);
    cudaFreeHost(cb->h_meta);
    cb->d_meta = NULL;
    cb->h_meta = NULL;
    cb->meta_cap = 0;
    size_t cap = n * 2 < 4096 ? 4096 : n * 2;
    CU(cudaMalloc((void **)&cb->d_meta, cap * sizeof(int32_t)), "cudaMalloc (step metadata)");
    CU(cudaMallocHost((void **)&cb->h_meta, cap * sizeof(int32_t)), "cudaMallocHost (step metadata)");
    cb->meta_cap = cap;
    return 0;
}

static int cu_begin_batch(zs_backend_t *b, const zs_fwd_batch_t *bt, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    cb->have_batch = 0;
    if (bt->ntok < 1 || bt->nseq < 1)
        return zs_err_set(err, ZS_EINVAL, "cuda backend: batch of %d tokens, %d sequences",
                          bt->ntok, bt->nseq);
    CU(cudaSetDevice(cb->dev), "cudaSetDevice");
    const int32_t n = bt->ntok, ns = bt->nseq;
    size_t tabs = 0;
    for (int32_t i = 0; i < ns; i++) {
        if (bt->seq_nblocks[i] < 0)
            return zs_err_set(err, ZS_EINVAL, "cuda backend: sequence %d has %d blocks", i,
                              bt->seq_nblocks[i]);
        tabs += (size_t)bt->seq_nblocks[i];
    }
    const size_t need = (size_t)n * 6 + (size_t)ns * 2 + tabs;
    if (cb->meta_ev_pending) {
        CU(cudaEventSynchronize(cb->meta_ev), "cudaEventSynchronize (step metadata)");
        cb->meta_ev_pending = 0;
    }
    int rc = meta_reserve(cb, need, err);
    if (rc) return rc;
    int32_t *h = cb->h_meta;
    int32_t *ids = h, *pos = ids + n, *seq = pos + n, *slot = seq + n, *tf = slot + n, *tc = tf + n;
    int32_t *toff = tc + n, *tlen = toff + ns, *tab = tlen + ns;
    int32_t ntiles = 0, maxpos = 0;
    for (int32_t t = 0; t < n; t++) {
        const int32_t s = bt->tok_seq[t], p = bt->tok_pos[t];
        if (s < 0 || s >= ns || p < 0 || bt->tok_slot[t] < 0)
            return zs_err_set(err, ZS_EINVAL,
                              "cuda backend: token %d: sequence %d of %d, position %d, slot %d", t,
                              s, ns, p, bt->tok_slot[t]);
        ids[t] = bt->tok_ids[t];
        pos[t] = p;
        seq[t] = s;
        slot[t] = bt->tok_slot[t];
        if (p > maxpos) maxpos = p;
        if (t == 0 || s != seq[t - 1] || p <= pos[t - 1] || tc[ntiles - 1] == 64) {
            tf[ntiles] = t;
            tc[ntiles] = 1;
            ntiles++;
        } else {
            tc[ntiles - 1]++;
        }
    }
    size_t off = 0;
    for (int32_t i = 0; i < ns; i++) {
        toff[i] = (int32_t)off;
        tlen[i] = bt->seq_nblocks[i];
        if (tlen[i]) memcpy(tab + off, bt->seq_blocks[i], (size_t)tlen[i] * sizeof(int32_t));
        off += (size_t)tlen[i];
    }
    CU(cudaMemcpyAsync(cb->d_meta, h, need * sizeof(int32_t), cudaMemcpyHostToDevice, cb->st),
       "cudaMemcpyAsync (step metadata)");
    CU(cudaEventRecord(cb->meta_ev, cb->st), "cudaEventRecord (step metadata)");
    cb->meta_ev_pending = 1;
    const int32_t *d = cb->d_meta;
    zs_kern_step_t *k = &cb->step;
    k->ntok = n;
    k->nseq = ns;
    k->ntiles = ntiles;
    k->ids = d;
    k->pos = d + n;
    k->seq = d + 2 * (size_t)n;
    k->slot = d + 3 * (size_t)n;
    k->tile_first = d + 4 * (size_t)n; /* tile arrays are packed with room for n tiles each */
    k->tile_count = d + 5 * (size_t)n;
    k->tab_off = d + 6 * (size_t)n;
    k->tab_len = k->tab_off + ns;
    k->tables = k->tab_len + ns;
    cb->batch = *bt;
    cb->max_pos = maxpos;
    cb->decode_only = ntiles == n && n == ns;
    cb->have_batch = 1;
    return 0;
}

/* --- elementwise ops -------------------------------------------------------------------- */
static int launch(cudaError_t e, const char *what, zs_err_t *err) {
    if (e != cudaSuccess) return cu_err(err, e, what);
    return 0;
}

static int cu_embed(zs_backend_t *b, float *x, const zs_bweight_t *table, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cuda embed: no batch begun");
    int rc = check_wdtype(table, "embed", err);
    if (rc) return rc;
    for (int32_t t = 0; t < cb->batch.ntok; t++)
        if (cb->batch.tok_ids[t] < 0 || cb->batch.tok_ids[t] >= table->rows)
            return zs_err_set(err, ZS_ERANGE, "cuda embed: token id %d outside [0, %lld)",
                              cb->batch.tok_ids[t], (long long)table->rows);
    touched(cb, x, (size_t)cb->batch.ntok * (size_t)table->cols * sizeof(float));
    return launch(zs_k_embed(cb->st, x, table->data, kw_dtype(table->dtype), table->cols,
                             cb->step.ids, cb->batch.ntok),
                  "embedding kernel", err);
}

static int cu_rmsnorm(zs_backend_t *b, float *y, const float *x, int32_t n, int32_t dim,
                      const zs_bweight_t *w, float eps, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (w->rows * w->cols != dim)
        return zs_err_set(err, ZS_EINVAL, "cuda rmsnorm: weight has %lld elements, rows have %d",
                          (long long)(w->rows * w->cols), dim);
    int rc = check_wdtype(w, "rmsnorm", err);
    if (rc) return rc;
    if (n <= 0) return 0;
    const size_t elems = (size_t)n * (size_t)dim;
    touched(cb, y, elems * sizeof(float));
    if ((rc = shadow_reserve(cb, elems * 2, err))) return rc;
    if ((rc = launch(zs_k_rmsnorm(cb->st, y, cb->shadow, x, n, dim, w->data, kw_dtype(w->dtype), eps),
                     "rmsnorm kernel", err)))
        return rc;
    shadow_set(cb, y, elems, 0);
    return 0;
}

static int rope_tables(cuda_be_t *cb, const float *inv_freq, int32_t half, float af, int64_t rows,
                       zs_err_t *err) {
    if (cb->rope_inv_dev != inv_freq || cb->rope_half != half || cb->rope_af != af) {
        /* new frequencies: fetch them (head_dim / 2 floats, once) and start the tables over */
        CU(cudaMemcpyAsync(cb->rope_inv, inv_freq, (size_t)half * sizeof(float),
                           cudaMemcpyDeviceToHost, cb->st),
           "cudaMemcpyAsync (RoPE inverse frequencies)");
        CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (RoPE inverse frequencies)");
        cb->rope_inv_dev = inv_freq;
        cb->rope_half = half;
        cb->rope_af = af;
        cb->tab_rows = 0;
    }
    if (rows <= cb->tab_rows) return 0;
    int64_t nr = cb->tab_rows * 2;
    if (nr < rows) nr = rows;
    if (nr < 1024) nr = 1024;
    const size_t n = (size_t)nr * (size_t)half;
    float *hc = realloc(cb->h_cos, n * sizeof(float));
    if (hc == NULL) return zs_err_set(err, ZS_ENOMEM, "cuda rope: out of memory for %lld rows", (long long)nr);
    cb->h_cos = hc;
    float *hs = realloc(cb->h_sin, n * sizeof(float));
    if (hs == NULL) return zs_err_set(err, ZS_ENOMEM, "cuda rope: out of memory for %lld rows", (long long)nr);
    cb->h_sin = hs;
    /* exactly the CPU backend's values: f32 angle, double cos/sin rounded to f32, times af */
    for (int64_t p = cb->tab_rows; p < nr; p++) {
        const float pos = (float)p;
        for (int32_t i = 0; i < half; i++) {
            const float ang = pos * cb->rope_inv[i];
            hc[p * half + i] = (float)cos((double)ang) * af;
            hs[p * half + i] = (float)sin((double)ang) * af;
        }
    }
    CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (growing RoPE tables)");
    cudaFree(cb->d_cos);
    cb->d_cos = cb->d_sin = NULL;
    cb->tab_rows = 0;
    CU(cudaMalloc((void **)&cb->d_cos, 2 * n * sizeof(float)), "cudaMalloc (RoPE tables)");
    cb->d_sin = cb->d_cos + n;
    CU(cudaMemcpy(cb->d_cos, hc, n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy (RoPE cos table)");
    CU(cudaMemcpy(cb->d_sin, hs, n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy (RoPE sin table)");
    cb->tab_rows = nr;
    return 0;
}

static int cu_rope(zs_backend_t *b, float *x, int32_t nheads, int32_t head_dim,
                   const float *inv_freq, float attn_factor, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cuda rope: no batch begun");
    if (head_dim % 2 || head_dim < 2 || head_dim > ZS_MODEL_MAX_HEAD_DIM)
        return zs_err_set(err, ZS_EINVAL, "cuda rope: head_dim %d", head_dim);
    int rc = rope_tables(cb, inv_freq, head_dim / 2, attn_factor, (int64_t)cb->max_pos + 1, err);
    if (rc) return rc;
    touched(cb, x, (size_t)cb->batch.ntok * nheads * head_dim * sizeof(float));
    return launch(zs_k_rope(cb->st, x, cb->batch.ntok, nheads, head_dim, cb->step.pos, cb->d_cos,
                            cb->d_sin),
                  "rope kernel", err);
}

static void kern_kv(zs_kern_kv_t *k, void *pool, const zs_kv_layout_t *l) {
    k->pool = pool;
    k->block_size = l->block_size;
    k->head_dim = l->head_dim;
    k->nkv_heads = l->nkv_heads;
    k->block_bytes = l->block_bytes;
    k->layer_stride = l->layer_stride;
    k->kv_stride = l->kv_stride;
    k->head_stride = l->head_stride;
}

static int cu_kv_store(zs_backend_t *b, void *pool, const zs_kv_layout_t *l, int32_t layer,
                       const float *k, const float *v, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cuda kv_store: no batch begun");
    if (l->dtype != ZS_BF16)
        return zs_err_set(err, ZS_EUNSUPPORTED, "cuda kv_store: KV cache dtype must be BF16");
    if (layer < 0 || layer >= l->nlayers)
        return zs_err_set(err, ZS_EINVAL, "cuda kv_store: layer %d of %d", layer, l->nlayers);
    zs_kern_kv_t kv;
    kern_kv(&kv, pool, l);
    return launch(zs_k_kv_store(cb->st, &kv, layer, k, v, cb->step.slot, cb->batch.ntok),
                  "kv_store kernel", err);
}

static int cu_attention(zs_backend_t *b, float *out, const float *q, const void *pool,
                        const zs_kv_layout_t *l, int32_t layer, int32_t nheads, int32_t window,
                        float scale, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cuda attention: no batch begun");
    if (l->dtype != ZS_BF16)
        return zs_err_set(err, ZS_EUNSUPPORTED, "cuda attention: KV cache dtype must be BF16");
    if (nheads < l->nkv_heads || nheads % l->nkv_heads != 0 || l->head_dim > ZS_MODEL_MAX_HEAD_DIM ||
        l->head_dim % 2)
        return zs_err_set(err, ZS_EINVAL, "cuda attention: %d heads over %d kv heads, head_dim %d",
                          nheads, l->nkv_heads, l->head_dim);
    if (layer < 0 || layer >= l->nlayers)
        return zs_err_set(err, ZS_EINVAL, "cuda attention: layer %d of %d", layer, l->nlayers);
    zs_kern_kv_t kv;
    kern_kv(&kv, (void *)pool, l);
    const int32_t ntok = cb->batch.ntok, hd = l->head_dim;
    touched(cb, out, (size_t)ntok * nheads * hd * sizeof(float));
    if (cb->attn_mode != ATTN_SIMPLE && !cb->decode_only && zs_k_attn_mma_supported(hd))
        return launch(zs_k_attn_prefill(cb->st, out, q, &kv, layer, &cb->step, nheads, window, scale),
                      "attention kernel (tensor-core prefill)", err);
    /* split-K over the key range: enough CTAs to fill the GPU, at least one chunk each */
    int64_t maxlen = (int64_t)cb->max_pos + 1;
    if (window > 0 && maxlen > window) maxlen = window;
    const int64_t ch = zs_k_attn_split_chunk(hd);
    int64_t chunks = (maxlen + ch - 1) / ch;
    int64_t want = (4 * 132 + (int64_t)ntok * l->nkv_heads - 1) / ((int64_t)ntok * l->nkv_heads);
    int64_t nsplit = want < chunks ? want : chunks;
    if (nsplit > 256) nsplit = 256;
    const size_t per_split = (size_t)ntok * nheads * (size_t)(hd + 2);
    const size_t budget = (size_t)16 << 20; /* floats of partials at most */
    if (nsplit > 1 && (size_t)nsplit * per_split > budget) nsplit = (int64_t)(budget / per_split);
    if (nsplit < 1) nsplit = 1;
    const size_t need = zs_k_attn_split_floats(ntok, nheads, hd, (int32_t)nsplit);
    if (need > cb->part_cap) {
        CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (growing attention scratch)");
        cudaFree(cb->part);
        cb->part = NULL;
        cb->part_cap = 0;
        CU(cudaMalloc((void **)&cb->part, need * sizeof(float)), "cudaMalloc (attention scratch)");
        cb->part_cap = need;
    }
    return launch(zs_k_attn_split(cb->st, out, q, &kv, layer, &cb->step, nheads, window, scale,
                                  (int32_t)nsplit, cb->part),
                  "attention kernel (split)", err);
}

static int cu_silu_mul(zs_backend_t *b, float *y, const float *gate, const float *up, size_t n,
                       zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n == 0) return 0;
    touched(cb, y, n * sizeof(float));
    int rc = shadow_reserve(cb, n * 2, err);
    if (rc) return rc;
    if ((rc = launch(zs_k_silu_mul(cb->st, y, cb->shadow, gate, up, n), "silu_mul kernel", err)))
        return rc;
    shadow_set(cb, y, n, 0);
    return 0;
}

static int cu_add(zs_backend_t *b, float *y, const float *x, size_t n, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    touched(cb, y, n * sizeof(float));
    return launch(zs_k_add(cb->st, y, x, n), "add kernel", err);
}

static int cu_gather_rows(zs_backend_t *b, float *y, const float *x, const int32_t *rows,
                          int32_t nrows, int32_t dim, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    touched(cb, y, (size_t)nrows * dim * sizeof(float));
    for (int32_t r0 = 0; r0 < nrows; r0 += ZS_K_GATHER_MAX) {
        int32_t nr = nrows - r0 < ZS_K_GATHER_MAX ? nrows - r0 : ZS_K_GATHER_MAX;
        zs_k_rows_t rr;
        memset(&rr, 0, sizeof rr);
        for (int32_t i = 0; i < nr; i++) rr.r[i] = rows[r0 + i];
        int rc = launch(zs_k_gather(cb->st, y + (size_t)r0 * dim, x, rr, nr, dim), "gather kernel", err);
        if (rc) return rc;
    }
    return 0;
}

/* --- matrix products ---------------------------------------------------------------------- */
static int cu_matmul(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                     const zs_bweight_t *bias, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n <= 0) return 0;
    int rc = check_wdtype(w, "matmul", err);
    if (rc) return rc;
    if (w->rows < 1 || w->cols < 1 || w->rows > INT32_MAX || w->cols > INT32_MAX)
        return zs_err_set(err, ZS_EINVAL, "cuda matmul: weight of %lld x %lld", (long long)w->rows,
                          (long long)w->cols);
    const int m = (int)w->rows, k = (int)w->cols;
    const int has_bias = bias != NULL && bias->data != NULL;
    if (has_bias) {
        if ((rc = check_wdtype(bias, "matmul bias", err))) return rc;
        if (bias->rows * bias->cols != w->rows)
            return zs_err_set(err, ZS_EINVAL, "cuda matmul: bias of %lld for %d outputs",
                              (long long)(bias->rows * bias->cols), m);
    }
    if (cb->use_gemv && zs_k_gemv_supported(n, k, kw_dtype(w->dtype)) &&
        ((uintptr_t)w->data & 15u) == 0 && ((uintptr_t)x & 15u) == 0) {
        /* decode-sized step: stream the weights once, float32 activations as they are */
        touched(cb, y, (size_t)n * (size_t)m * sizeof(float));
        return launch(zs_k_gemv(cb->st, y, x, n, w->data, kw_dtype(w->dtype), m, k,
                                has_bias ? bias->data : NULL, has_bias ? kw_dtype(bias->dtype) : 0),
                      "gemv kernel", err);
    }
    const float one = 1.0f, zero = 0.0f;
    cublasStatus_t s;
    if (w->dtype == ZS_F32) {
        s = cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w->data, CUDA_R_32F, k,
                         x, CUDA_R_32F, k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT);
    } else {
        const int f16 = w->dtype == ZS_F16;
        const size_t elems = (size_t)n * (size_t)k;
        if (!(cb->shadow_valid && cb->shadow_src == x && cb->shadow_elems == elems &&
              cb->shadow_f16 == f16)) {
            if ((rc = shadow_reserve(cb, elems * 2, err))) return rc;
            if ((rc = launch(zs_k_to_half(cb->st, cb->shadow, x, elems, f16),
                             "float -> half conversion kernel", err)))
                return rc;
            shadow_set(cb, x, elems, f16);
        }
        const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_16BF;
        s = cublasGemmEx(cb->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w->data, t, k,
                         cb->shadow, t, k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT);
    }
    if (s != CUBLAS_STATUS_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "cublasGemmEx (%d x %d x %d)", m, n, k);
        return blas_err(err, s, what);
    }
    touched(cb, y, (size_t)n * (size_t)m * sizeof(float));
    if (has_bias)
        return launch(zs_k_bias(cb->st, y, bias->data, kw_dtype(bias->dtype), n, m), "bias kernel", err);
    return 0;
}

/* --- lifetime --------------------------------------------------------------------------- */
static void cu_destroy(zs_backend_t *b) {
    cuda_be_t *cb = CB(b);
    if (cb == NULL) return;
    if (cb->st) (void)cudaStreamSynchronize(cb->st);
    cudaFree(cb->d_meta);
    cudaFreeHost(cb->h_meta);
    cudaFree(cb->d_cos);
    cudaFree(cb->shadow);
    cudaFree(cb->part);
    free(cb->h_cos);
    free(cb->h_sin);
    if (cb->meta_ev) cudaEventDestroy(cb->meta_ev);
    if (cb->blas) cublasDestroy(cb->blas);
    if (cb->st) cudaStreamDestroy(cb->st);
    free(cb);
}

static const zs_backend_ops_t cuda_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .sync = cu_sync,
    .begin_batch = cu_begin_batch,
    .embed = cu_embed,
    .matmul = cu_matmul,
    .rmsnorm = cu_rmsnorm,
    .rope = cu_rope,
    .kv_store = cu_kv_store,
    .attention = cu_attention,
    .silu_mul = cu_silu_mul,
    .add = cu_add,
    .gather_rows = cu_gather_rows,
};

int zs_cuda_backend_create(int device, zs_backend_t **out, zs_err_t *err) {
    *out = NULL;
    cuda_be_t *cb = calloc(1, sizeof *cb);
    if (cb == NULL) return zs_err_set(err, ZS_ENOMEM, "cuda backend: out of memory");
    cb->base.ops = &cuda_ops;
    cb->base.device = ZS_DEV_CUDA;
    int rc = 0;
    cudaError_t e;
    if (device < 0) {
        if ((e = cudaGetDevice(&device)) != cudaSuccess) {
            rc = cu_err(err, e, "cudaGetDevice");
            goto fail;
        }
    }
    cb->dev = device;
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        char what[48];
        snprintf(what, sizeof what, "cudaSetDevice(%d)", device);
        rc = cu_err(err, e, what);
        goto fail;
    }
    if ((e = cudaStreamCreateWithFlags(&cb->st, cudaStreamNonBlocking)) != cudaSuccess) {
        rc = cu_err(err, e, "cudaStreamCreate");
        goto fail;
    }
    if ((e = cudaEventCreateWithFlags(&cb->meta_ev, cudaEventDisableTiming)) != cudaSuccess) {
        rc = cu_err(err, e, "cudaEventCreate");
        goto fail;
    }
    cublasStatus_t s = cublasCreate(&cb->blas);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cb->blas = NULL;
        rc = blas_err(err, s, "cublasCreate");
        goto fail;
    }
    if ((s = cublasSetStream(cb->blas, cb->st)) != CUBLAS_STATUS_SUCCESS) {
        rc = blas_err(err, s, "cublasSetStream");
        goto fail;
    }
    const char *am = getenv("ZS_CUDA_ATTN");
    cb->attn_mode = am && strcmp(am, "simple") == 0 ? ATTN_SIMPLE : ATTN_AUTO;
    const char *gv = getenv("ZS_CUDA_GEMV");
    cb->use_gemv = !(gv && strcmp(gv, "0") == 0);
    *out = &cb->base;
    return 0;
fail:
    cu_destroy(&cb->base);
    return rc;
}
