/* CUDA backend: the engine's backend vtable (engine/backend.h) on one GPU. Owns the stream,
 * the cuBLAS handle, the per-step metadata (one packed host->device copy per step from a
 * pinned buffer), the RoPE cos/sin tables (computed by a kernel the way the CPU backend
 * computes them, grown on demand), the half-precision copy of the last matrix-product input
 * and the attention scratch. Matrix products go through cuBLAS (bf16/f16 weights: the float32
 * input is rounded once to the weights' type, products accumulate in fp32; f32 weights: pure
 * fp32); everything else runs in the kernels of src/gpu/kernels. Activations are float32, the
 * KV pool bf16. Built only in CUDA builds (none_backend.c stands in otherwise).
 *
 * Decode steps (every token from its own sequence, <= 8 tokens) are replayed as CUDA graphs:
 * from begin_batch on, each op records its kernel launch (a command: kernel and arguments)
 * instead of launching it; the first download/sync compares the step's command list with the
 * lists of the cached graphs and launches the matching graph, or captures and caches a new
 * one. Per-step data (token ids, positions, slots, block tables) live in the fixed metadata
 * buffer the graph's kernels read, and the decode attention uses a split count bucketed by
 * powers of two of the sequence length, so one graph serves many steps. Anything that cannot
 * be recorded (cuBLAS, uploads, frees, growing a scratch buffer) first launches the recorded
 * commands directly and runs the rest of the step eagerly. ZS_CUDA_GRAPH=0 turns graphs off,
 * ZS_CUDA_FUSE=0 the fused ops (q/k/v in one GEMV, gate/up + SiLU-mul, projection + residual).
 *
 * KV blocks move to and from host memory for the KV warm start. Imports run layer by layer on
 * their own stream (one move per layer, then an event), and the next step's layer
 * l waits only for layer l's event, so a restored prefix's copies overlap the layers computed
 * before them. Where the sources are page-locked the SMs move the bytes (zs_k_kv_move, a few
 * CTAs): one launch per layer, where copy engines need one copy per block and layer, ~1 us of
 * host time each. Exports run on a second stream that waits for an event of the compute
 * stream (and for the imports queued so far), with one completion event per export.
 *
 * cuBLAS handles outlive backends: a destroyed backend gives its handle back to a per-process
 * free list and the next backend on the same device takes it, so an engine brought back after
 * scale-to-zero pays no cublasCreate (nor the handle's first-use set-up) on its request path. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/backend.h"
#include "gpu/kernels/kernels.h"
#include "zerostart/model.h"

enum { ATTN_AUTO = 0, ATTN_SIMPLE = 1 };
/* How KV imports reach the pool (ZS_KV_TRANSFER). auto: layer by layer, by the SMs
 * (zs_k_kv_move) when every source is page-locked and mapped for the device, else by batches
 * of copy-engine copies; copy: layer by layer, by the copy engines; blocks: whole blocks by
 * the copy engines on the compute stream, before the step. Exports always use the copy
 * engines. */
enum { XFER_AUTO = 0, XFER_COPY = 1, XFER_BLOCKS = 2 };

/* One recorded kernel launch (see cmd_exec). Built on a zeroed struct so that equal launches
 * compare equal with memcmp. */
enum {
    C_EMBED = 1, C_RMSNORM, C_ROPE, C_KV, C_ATTN_MMA, C_ATTN_SPLIT, C_SILU, C_ADD, C_GATHER,
    C_GEMV, C_EMBED_ROWS, C_NKINDS
};
static const char *const cmd_names[C_NKINDS] = {
    "?", "embedding kernel", "rmsnorm kernel", "rope kernel", "kv_store kernel",
    "attention kernel (tensor-core prefill)", "attention kernel (split)", "silu_mul kernel",
    "add kernel", "gather kernel", "gemv kernel", "embedding kernel (vocabulary rows)"};

typedef struct {
    int32_t kind, i0, i1, i2, i3;
    float f0;
    int64_t l0;
    const void *p0, *p1, *p2, *p3;
    union {
        struct {
            zs_kern_step_t step;
            zs_kern_kv_t kv;
        } a;
        zs_k_rows_t rows;
        zs_k_gemv_t gv;
    } u;
} cmd_t;

#define GRAPH_CACHE 4
#define XFER_EVENTS 64
typedef struct {
    cudaGraphExec_t exec;
    cmd_t *cmds;
    size_t n;
    uint64_t used;
} graph_ent_t;

/* The table one zs_k_kv_move launch reads (host copy, device copy), for one stream. */
typedef struct {
    zs_k_kv_host_t *h, *d;
    size_t cap;
} kv_table_t;

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
    float *d_cos, *d_sin;
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
    /* decode steps as CUDA graphs */
    int use_graph;
    int deferring;       /* recording the current step's commands */
    cmd_t *cmds;
    size_t ncmd, cmd_cap;
    graph_ent_t graphs[GRAPH_CACHE];
    uint64_t graph_clock;
    /* KV block exports: GPU->host copies on their own stream, after an event of the compute
     * stream, so that decode steps keep running while they land */
    cudaStream_t xst;
    cudaEvent_t xstart;
    cudaEvent_t xev[XFER_EVENTS];
    uint64_t x_issued, x_done;
    int x_wait_import;   /* an import was queued since the export stream last waited for one */
    /* KV block imports (layer by layer unless ZS_KV_TRANSFER=blocks): host->GPU moves on
     * their own stream, one launch or batch of copies per layer followed by that layer's
     * event; the compute stream waits for layer l's event just before it first touches
     * layer l of the pool */
    int xfer_mode;       /* XFER_* (ZS_KV_TRANSFER) */
    int batch_copy;      /* cudaMemcpyBatchAsync works here (else one call per copy) */
    kv_table_t itab;     /* the move kernel's table */
    cudaStream_t ist;
    cudaEvent_t istart, iall;
    cudaEvent_t *iev;    /* one per layer */
    uint8_t *ipend;      /* layer's import not yet waited for by the compute stream */
    int32_t iev_n, ipend_n;
    void **idst;         /* one layer's copies, the arrays cudaMemcpyBatchAsync takes */
    const void **isrc;
    size_t *isize, icap;
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

/* --- cuBLAS handles kept across backends (freed when the process ends) -------------------- */
#define BLAS_KEEP 64
static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    cublasHandle_t h;
    int dev;
} blas_kept[BLAS_KEEP];
static int blas_nkept;

/* A handle for `dev` (the current device): a kept one, else a new one. */
static int blas_take(int dev, cublasHandle_t *out, zs_err_t *err) {
    *out = NULL;
    pthread_mutex_lock(&blas_mu);
    for (int i = blas_nkept - 1; i >= 0 && *out == NULL; i--)
        if (blas_kept[i].dev == dev) {
            *out = blas_kept[i].h;
            blas_kept[i] = blas_kept[--blas_nkept];
        }
    pthread_mutex_unlock(&blas_mu);
    if (*out != NULL) return 0;
    cublasStatus_t s = cublasCreate(out);
    if (s != CUBLAS_STATUS_SUCCESS) {
        *out = NULL;
        return blas_err(err, s, "cublasCreate");
    }
    return 0;
}

/* Gives a handle back (its stream is going away: it is detached first). */
static void blas_give(int dev, cublasHandle_t h) {
    if (h == NULL) return;
    if (cublasSetStream(h, NULL) != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        return;
    }
    pthread_mutex_lock(&blas_mu);
    if (blas_nkept < BLAS_KEEP) {
        blas_kept[blas_nkept].h = h;
        blas_kept[blas_nkept++].dev = dev;
        h = NULL;
    }
    pthread_mutex_unlock(&blas_mu);
    if (h != NULL) cublasDestroy(h);
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

static int flush_eager(cuda_be_t *cb, zs_err_t *err);
static int flush(cuda_be_t *cb, zs_err_t *err);
static int import_wait(cuda_be_t *cb, int32_t layer, zs_err_t *err);

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
    int rc = flush_eager(cb, err); /* recorded commands may use the old buffer */
    if (rc) return rc;
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
    zs_err_t e2;
    memset(&e2, 0, sizeof e2);
    (void)flush_eager(cb, &e2); /* recorded commands may use p */
    if (p) {
        (void)cudaStreamSynchronize(cb->st);
        if (cb->ist) (void)cudaStreamSynchronize(cb->ist); /* p may be the pool an import writes */
        cudaFree(p);
    }
}

static int cu_upload(zs_backend_t *b, void *dst, const void *src, size_t bytes, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    touched(cb, dst, bytes);
    int rc = flush_eager(cb, err);
    if (rc) return rc;
    if (bytes == 0) return 0;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cb->st), "upload (cudaMemcpyAsync H2D)");
    CU(cudaStreamSynchronize(cb->st), "upload (cudaStreamSynchronize)");
    return 0;
}

static int cu_download(zs_backend_t *b, void *dst, const void *src, size_t bytes, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    int rc = flush(cb, err);
    if (!rc) rc = import_wait(cb, -1, err);
    if (rc) return rc;
    if (bytes == 0) return 0;
    CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cb->st), "download (cudaMemcpyAsync D2H)");
    CU(cudaStreamSynchronize(cb->st), "download (cudaStreamSynchronize)");
    return 0;
}

static int cu_sync(zs_backend_t *b, zs_err_t *err) {
    int rc = flush(CB(b), err);
    if (!rc) rc = import_wait(CB(b), -1, err);
    if (rc) return rc;
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
    cb->deferring = 0; /* a step that failed half-way leaves its commands unlaunched */
    cb->ncmd = 0;
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
    cb->deferring = cb->use_graph && cb->decode_only && n <= 8;
    return 0;
}

/* --- elementwise ops -------------------------------------------------------------------- */
static int launch(cudaError_t e, const char *what, zs_err_t *err) {
    if (e != cudaSuccess) return cu_err(err, e, what);
    return 0;
}

static cudaError_t cmd_exec(cudaStream_t st, const cmd_t *c) {
    switch (c->kind) {
    case C_EMBED:
        return zs_k_embed(st, (float *)c->p0, c->p1, c->i0, c->l0, c->u.a.step.ids, c->u.a.step.ntok);
    case C_RMSNORM:
        return zs_k_rmsnorm(st, (float *)c->p0, (void *)c->p1, (const float *)c->p2, c->i0, c->i1,
                            c->p3, c->i2, c->f0);
    case C_ROPE:
        return zs_k_rope(st, (float *)c->p0, c->i0, c->i1, c->i2, (const int32_t *)c->p1,
                         (const float *)c->p2, (const float *)c->p3);
    case C_KV:
        return zs_k_kv_store(st, &c->u.a.kv, c->i0, (const float *)c->p0, (const float *)c->p1,
                             (const int32_t *)c->p2, c->i1);
    case C_ATTN_MMA:
        return zs_k_attn_prefill(st, (float *)c->p0, (const float *)c->p1, &c->u.a.kv, c->i0,
                                 &c->u.a.step, c->i1, c->i2, c->f0);
    case C_ATTN_SPLIT:
        return zs_k_attn_split(st, (float *)c->p0, (const float *)c->p1, &c->u.a.kv, c->i0,
                               &c->u.a.step, c->i1, c->i2, c->f0, c->i3, (float *)c->p2);
    case C_SILU:
        return zs_k_silu_mul(st, (float *)c->p0, (void *)c->p1, (const float *)c->p2,
                             (const float *)c->p3, (size_t)c->l0);
    case C_ADD:
        return zs_k_add(st, (float *)c->p0, (const float *)c->p1, (size_t)c->l0);
    case C_GATHER:
        return zs_k_gather(st, (float *)c->p0, (const float *)c->p1, c->u.rows, c->i0, c->i1);
    case C_GEMV:
        return zs_k_gemv_multi(st, &c->u.gv, (const float *)c->p0, c->i0, c->l0);
    case C_EMBED_ROWS:
        return zs_k_embed_rows(st, (float *)c->p0, c->p1, c->i0, c->l0, c->i1, c->i2,
                               c->u.a.step.ids, c->u.a.step.ntok);
    default:
        return cudaErrorInvalidValue;
    }
}

static const char *cmd_name(const cmd_t *c) {
    return c->kind > 0 && c->kind < C_NKINDS ? cmd_names[c->kind] : "?";
}

/* Launches the recorded commands directly and runs the rest of the step eagerly. */
static int flush_eager(cuda_be_t *cb, zs_err_t *err) {
    if (!cb->deferring) return 0;
    cb->deferring = 0;
    const size_t n = cb->ncmd;
    cb->ncmd = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = launch(cmd_exec(cb->st, &cb->cmds[i]), cmd_name(&cb->cmds[i]), err);
        if (rc) return rc;
    }
    return 0;
}

static void graph_drop(graph_ent_t *g) {
    if (g->exec) (void)cudaGraphExecDestroy(g->exec);
    free(g->cmds);
    memset(g, 0, sizeof *g);
}

/* Captures the recorded commands into a graph; *out = NULL (and 0) when capturing failed in
 * a way that eager launches may not (the caller then runs them eagerly). */
static int graph_capture(cuda_be_t *cb, cudaGraphExec_t *out, zs_err_t *err) {
    *out = NULL;
    cudaError_t e = cudaStreamBeginCapture(cb->st, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    cudaError_t le = cudaSuccess;
    size_t bad = 0;
    for (size_t i = 0; i < cb->ncmd && le == cudaSuccess; i++) {
        le = cmd_exec(cb->st, &cb->cmds[i]);
        bad = i;
    }
    cudaGraph_t g = NULL;
    e = cudaStreamEndCapture(cb->st, &g);
    if (le != cudaSuccess) {
        if (g) (void)cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return launch(le, cmd_name(&cb->cmds[bad]), err);
    }
    if (e != cudaSuccess || g == NULL) {
        if (g) (void)cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return 0;
    }
    cudaGraphExec_t ge = NULL;
    e = cudaGraphInstantiate(&ge, g, 0);
    (void)cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    *out = ge;
    return 0;
}

/* Runs the recorded step: a cached graph with the same command list, else a new capture. */
static int flush(cuda_be_t *cb, zs_err_t *err) {
    if (!cb->deferring) return 0;
    const size_t n = cb->ncmd;
    if (n == 0) {
        cb->deferring = 0;
        return 0;
    }
    graph_ent_t *hit = NULL, *victim = &cb->graphs[0];
    for (int i = 0; i < GRAPH_CACHE; i++) {
        graph_ent_t *g = &cb->graphs[i];
        if (g->exec && g->n == n && memcmp(g->cmds, cb->cmds, n * sizeof(cmd_t)) == 0) {
            hit = g;
            break;
        }
        if (!g->exec || (victim->exec && g->used < victim->used)) victim = g;
    }
    if (hit == NULL) {
        cmd_t *copy = malloc(n * sizeof(cmd_t));
        if (copy == NULL) return flush_eager(cb, err);
        cudaGraphExec_t ge = NULL;
        int rc = graph_capture(cb, &ge, err);
        if (rc || ge == NULL) {
            free(copy);
            if (rc) {
                cb->deferring = 0;
                cb->ncmd = 0;
                return rc;
            }
            cb->use_graph = 0; /* capture is not possible here: eager from now on */
            return flush_eager(cb, err);
        }
        memcpy(copy, cb->cmds, n * sizeof(cmd_t));
        graph_drop(victim);
        victim->exec = ge;
        victim->cmds = copy;
        victim->n = n;
        hit = victim;
    }
    cb->deferring = 0;
    cb->ncmd = 0;
    hit->used = ++cb->graph_clock;
    CU(cudaGraphLaunch(hit->exec, cb->st), "cudaGraphLaunch (decode step)");
    return 0;
}

/* Records the command while a decode step is being recorded, else launches it. */
static int submit(cuda_be_t *cb, const cmd_t *c, zs_err_t *err) {
    if (cb->deferring) {
        if (cb->ncmd == cb->cmd_cap) {
            size_t cap = cb->cmd_cap ? cb->cmd_cap * 2 : 1024;
            cmd_t *nc = realloc(cb->cmds, cap * sizeof(cmd_t));
            if (nc == NULL) {
                int rc = flush_eager(cb, err);
                if (rc) return rc;
                return launch(cmd_exec(cb->st, c), cmd_name(c), err);
            }
            cb->cmds = nc;
            cb->cmd_cap = cap;
        }
        cb->cmds[cb->ncmd++] = *c;
        return 0;
    }
    return launch(cmd_exec(cb->st, c), cmd_name(c), err);
}

/* The embedding command: C_EMBED (the whole table) or C_EMBED_ROWS (vocabulary rows from row0;
 * other tokens get zeros). */
static int embed_submit(cuda_be_t *cb, float *x, const zs_bweight_t *table, int kind, int64_t row0,
                        zs_err_t *err) {
    touched(cb, x, (size_t)cb->batch.ntok * (size_t)table->cols * sizeof(float));
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.p0 = x;
    c.p1 = table->data;
    c.i0 = kw_dtype(table->dtype);
    c.l0 = table->cols;
    c.u.a.step = cb->step;
    if (kind == C_EMBED_ROWS) {
        c.i1 = (int32_t)row0;
        c.i2 = (int32_t)table->rows;
    }
    return submit(cb, &c, err);
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
    return embed_submit(cb, x, table, C_EMBED, 0, err);
}

/* A tensor-parallel rank's embedding: its vocabulary rows, zeros for other tokens. */
static int cu_embed_rows(zs_backend_t *b, float *x, const zs_bweight_t *table, int64_t row0,
                         zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cuda embed_rows: no batch begun");
    int rc = check_wdtype(table, "embed_rows", err);
    if (rc) return rc;
    if (row0 < 0 || row0 > INT32_MAX || table->rows > INT32_MAX)
        return zs_err_set(err, ZS_ERANGE, "cuda embed_rows: rows [%lld, +%lld)", (long long)row0,
                          (long long)table->rows);
    return embed_submit(cb, x, table, C_EMBED_ROWS, row0, err);
}

/* A collective (NCCL) is about to run on this backend's stream and write [p, p + bytes):
 * launch what is recorded (the rest of the step runs eagerly) and drop a half-precision copy
 * of that memory. */
static int cu_collective_stream(zs_backend_t *b, void *p, size_t bytes, void **stream,
                                zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (p != NULL && bytes > 0) touched(cb, p, bytes);
    int rc = flush_eager(cb, err);
    if (rc) return rc;
    *stream = (void *)cb->st;
    return 0;
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
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = C_RMSNORM;
    c.p0 = y;
    c.p1 = cb->shadow;
    c.p2 = x;
    c.i0 = n;
    c.i1 = dim;
    c.p3 = w->data;
    c.i2 = kw_dtype(w->dtype);
    c.f0 = eps;
    if ((rc = submit(cb, &c, err))) return rc;
    shadow_set(cb, y, elems, 0);
    return 0;
}

static int rope_tables(cuda_be_t *cb, const float *inv_freq, int32_t half, float af, int64_t rows,
                       zs_err_t *err) {
    if (cb->rope_inv_dev != inv_freq || cb->rope_half != half || cb->rope_af != af) {
        cb->rope_inv_dev = inv_freq; /* new frequencies: the tables start over */
        cb->rope_half = half;
        cb->rope_af = af;
        cb->tab_rows = 0;
    }
    if (rows <= cb->tab_rows) return 0;
    int rc = flush_eager(cb, err); /* recorded commands may use the old tables */
    if (rc) return rc;
    int64_t nr = cb->tab_rows * 2;
    if (nr < rows) nr = rows;
    if (nr < 1024) nr = 1024;
    const size_t n = (size_t)nr * (size_t)half;
    /* computed on the device: on the host, growing them was in the time to first token of
     * the first request past the positions seen so far (a 32k prefix: ~60 ms, RESULTS.md) */
    CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (growing RoPE tables)");
    cudaFree(cb->d_cos);
    cb->d_cos = cb->d_sin = NULL;
    cb->tab_rows = 0;
    CU(cudaMalloc((void **)&cb->d_cos, 2 * n * sizeof(float)), "cudaMalloc (RoPE tables)");
    cb->d_sin = cb->d_cos + n;
    if ((rc = launch(zs_k_rope_table(cb->st, cb->d_cos, cb->d_sin, nr, half, inv_freq, af), "RoPE table kernel", err)))
        return rc;
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
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = C_ROPE;
    c.p0 = x;
    c.i0 = cb->batch.ntok;
    c.i1 = nheads;
    c.i2 = head_dim;
    c.p1 = cb->step.pos;
    c.p2 = cb->d_cos;
    c.p3 = cb->d_sin;
    return submit(cb, &c, err);
}

static void kern_kv(zs_kern_kv_t *k, void *pool, const zs_kv_layout_t *l) {
    memset(k, 0, sizeof *k);
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
    int rc = import_wait(cb, layer, err);
    if (rc) return rc;
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = C_KV;
    kern_kv(&c.u.a.kv, pool, l);
    c.i0 = layer;
    c.p0 = k;
    c.p1 = v;
    c.p2 = cb->step.slot;
    c.i1 = cb->batch.ntok;
    return submit(cb, &c, err);
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
    int rc = import_wait(cb, layer, err);
    if (rc) return rc;
    cmd_t c;
    memset(&c, 0, sizeof c);
    kern_kv(&c.u.a.kv, (void *)pool, l);
    c.u.a.step = cb->step;
    c.p0 = out;
    c.p1 = q;
    c.i0 = layer;
    c.i1 = nheads;
    c.i2 = window;
    c.f0 = scale;
    const int32_t ntok = cb->batch.ntok, hd = l->head_dim;
    touched(cb, out, (size_t)ntok * nheads * hd * sizeof(float));
    if (cb->attn_mode != ATTN_SIMPLE && !cb->decode_only && zs_k_attn_mma_supported(hd)) {
        c.kind = C_ATTN_MMA;
        return submit(cb, &c, err);
    }
    /* split-K over the key range: enough CTAs to fill the GPU, at least one chunk each */
    const int64_t ch = zs_k_attn_split_chunk(hd);
    int64_t maxlen = (int64_t)cb->max_pos + 1;
    if (cb->deferring) { /* the same split count for a range of lengths: graphs get reused */
        int64_t bucket = ch;
        while (bucket < maxlen) bucket *= 2;
        maxlen = bucket;
    }
    if (window > 0 && maxlen > window) maxlen = window;
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
        rc = flush_eager(cb, err); /* recorded commands may use the old scratch */
        if (rc) return rc;
        CU(cudaStreamSynchronize(cb->st), "cudaStreamSynchronize (growing attention scratch)");
        cudaFree(cb->part);
        cb->part = NULL;
        cb->part_cap = 0;
        CU(cudaMalloc((void **)&cb->part, need * sizeof(float)), "cudaMalloc (attention scratch)");
        cb->part_cap = need;
    }
    c.kind = C_ATTN_SPLIT;
    c.i3 = (int32_t)nsplit;
    c.p2 = cb->part;
    return submit(cb, &c, err);
}

static int cu_silu_mul(zs_backend_t *b, float *y, const float *gate, const float *up, size_t n,
                       zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n == 0) return 0;
    touched(cb, y, n * sizeof(float));
    int rc = shadow_reserve(cb, n * 2, err);
    if (rc) return rc;
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = C_SILU;
    c.p0 = y;
    c.p1 = cb->shadow;
    c.p2 = gate;
    c.p3 = up;
    c.l0 = (int64_t)n;
    if ((rc = submit(cb, &c, err))) return rc;
    shadow_set(cb, y, n, 0);
    return 0;
}

static int cu_add(zs_backend_t *b, float *y, const float *x, size_t n, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    touched(cb, y, n * sizeof(float));
    if (n == 0) return 0;
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = C_ADD;
    c.p0 = y;
    c.p1 = x;
    c.l0 = (int64_t)n;
    return submit(cb, &c, err);
}

static int cu_gather_rows(zs_backend_t *b, float *y, const float *x, const int32_t *rows,
                          int32_t nrows, int32_t dim, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    touched(cb, y, (size_t)nrows * dim * sizeof(float));
    for (int32_t r0 = 0; r0 < nrows; r0 += ZS_K_GATHER_MAX) {
        int32_t nr = nrows - r0 < ZS_K_GATHER_MAX ? nrows - r0 : ZS_K_GATHER_MAX;
        cmd_t c;
        memset(&c, 0, sizeof c);
        c.kind = C_GATHER;
        for (int32_t i = 0; i < nr; i++) c.u.rows.r[i] = rows[r0 + i];
        c.p0 = y + (size_t)r0 * dim;
        c.p1 = x;
        c.i0 = nr;
        c.i1 = dim;
        int rc = submit(cb, &c, err);
        if (rc) return rc;
    }
    return 0;
}

/* --- matrix products ---------------------------------------------------------------------- */
static int check_mm(const zs_bweight_t *w, const zs_bweight_t *bias, zs_err_t *err) {
    int rc = check_wdtype(w, "matmul", err);
    if (rc) return rc;
    if (w->rows < 1 || w->cols < 1 || w->rows > INT32_MAX || w->cols > INT32_MAX)
        return zs_err_set(err, ZS_EINVAL, "cuda matmul: weight of %lld x %lld", (long long)w->rows,
                          (long long)w->cols);
    if (bias != NULL && bias->data != NULL) {
        if ((rc = check_wdtype(bias, "matmul bias", err))) return rc;
        if (bias->rows * bias->cols != w->rows)
            return zs_err_set(err, ZS_EINVAL, "cuda matmul: bias of %lld for %lld outputs",
                              (long long)(bias->rows * bias->cols), (long long)w->rows);
    }
    return 0;
}

static int has_data(const zs_bweight_t *bias) { return bias != NULL && bias->data != NULL; }

/* decode-sized step the GEMV kernel takes: stream the weights once, float32 activations */
static int gemv_ok(const cuda_be_t *cb, int32_t n, const zs_bweight_t *w, const float *x) {
    return cb->use_gemv && zs_k_gemv_supported(n, w->cols, kw_dtype(w->dtype)) &&
           ((uintptr_t)w->data & 15u) == 0 && ((uintptr_t)x & 15u) == 0;
}

static void gemv_seg(zs_k_gemv_t *g, int i, float *y, const zs_bweight_t *w,
                     const zs_bweight_t *bias) {
    g->seg[i].W = w->data;
    g->seg[i].bias = has_data(bias) ? bias->data : NULL;
    g->seg[i].y = y;
    g->seg[i].rows = w->rows;
}

static int gemv_submit(cuda_be_t *cb, const float *x, int32_t n, int64_t cols, const zs_k_gemv_t *g,
                       zs_err_t *err) {
    cmd_t c;
    memset(&c, 0, sizeof c);
    c.kind = C_GEMV;
    c.p0 = x;
    c.i0 = n;
    c.l0 = cols;
    c.u.gv = *g;
    return submit(cb, &c, err);
}

static int cu_matmul(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                     const zs_bweight_t *bias, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n <= 0) return 0;
    int rc = check_mm(w, bias, err);
    if (rc) return rc;
    const int m = (int)w->rows, k = (int)w->cols;
    const int hb = has_data(bias);
    if (gemv_ok(cb, n, w, x)) {
        touched(cb, y, (size_t)n * (size_t)m * sizeof(float));
        zs_k_gemv_t g;
        memset(&g, 0, sizeof g);
        g.nseg = 1;
        g.wdt = kw_dtype(w->dtype);
        g.bdt = hb ? kw_dtype(bias->dtype) : 0;
        gemv_seg(&g, 0, y, w, bias);
        return gemv_submit(cb, x, n, k, &g, err);
    }
    if ((rc = flush_eager(cb, err))) return rc; /* cuBLAS is not recorded */
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
    if (hb)
        return launch(zs_k_bias(cb->st, y, bias->data, kw_dtype(bias->dtype), n, m), "bias kernel", err);
    return 0;
}

/* q/k/v: one GEMV launch over the three matrices when all qualify, else three products. */
static int cu_matmul3(zs_backend_t *b, float *y0, float *y1, float *y2, const float *x, int32_t n,
                      const zs_bweight_t *w0, const zs_bweight_t *w1, const zs_bweight_t *w2,
                      const zs_bweight_t *b0, const zs_bweight_t *b1, const zs_bweight_t *b2,
                      zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n <= 0) return 0;
    const zs_bweight_t *w[3] = {w0, w1, w2}, *bs[3] = {b0, b1, b2};
    float *y[3] = {y0, y1, y2};
    int rc;
    for (int i = 0; i < 3; i++)
        if ((rc = check_mm(w[i], bs[i], err))) return rc;
    int fuse = 1;
    for (int i = 0; i < 3; i++) {
        fuse = fuse && gemv_ok(cb, n, w[i], x) && w[i]->cols == w0->cols &&
               w[i]->dtype == w0->dtype && has_data(bs[i]) == has_data(b0) &&
               (!has_data(bs[i]) || bs[i]->dtype == b0->dtype);
    }
    if (!fuse) {
        for (int i = 0; i < 3; i++)
            if ((rc = cu_matmul(b, y[i], x, n, w[i], bs[i], err))) return rc;
        return 0;
    }
    zs_k_gemv_t g;
    memset(&g, 0, sizeof g);
    g.nseg = 3;
    g.wdt = kw_dtype(w0->dtype);
    g.bdt = has_data(b0) ? kw_dtype(b0->dtype) : 0;
    for (int i = 0; i < 3; i++) {
        touched(cb, y[i], (size_t)n * (size_t)w[i]->rows * sizeof(float));
        gemv_seg(&g, i, y[i], w[i], bs[i]);
    }
    return gemv_submit(cb, x, n, w0->cols, &g, err);
}

/* y += x @ w^T (+ bias): GEMV adding into y, else product into scratch + add. */
static int cu_matmul_add(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                         const zs_bweight_t *bias, float *scratch, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n <= 0) return 0;
    int rc = check_mm(w, bias, err);
    if (rc) return rc;
    if (!gemv_ok(cb, n, w, x)) {
        if ((rc = cu_matmul(b, scratch, x, n, w, bias, err))) return rc;
        return cu_add(b, y, scratch, (size_t)n * (size_t)w->rows, err);
    }
    touched(cb, y, (size_t)n * (size_t)w->rows * sizeof(float));
    zs_k_gemv_t g;
    memset(&g, 0, sizeof g);
    g.nseg = 1;
    g.acc = 1;
    g.wdt = kw_dtype(w->dtype);
    g.bdt = has_data(bias) ? kw_dtype(bias->dtype) : 0;
    gemv_seg(&g, 0, y, w, bias);
    return gemv_submit(cb, x, n, w->cols, &g, err);
}

/* y = silu(x @ wg^T) * (x @ wu^T): one GEMV reading both matrices, else two products +
 * silu_mul. */
static int cu_matmul_silu(zs_backend_t *b, float *y, const float *x, int32_t n,
                          const zs_bweight_t *wg, const zs_bweight_t *wu, float *scratch,
                          zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (n <= 0) return 0;
    int rc = check_mm(wg, NULL, err);
    if (rc == 0) rc = check_mm(wu, NULL, err);
    if (rc) return rc;
    if (!(gemv_ok(cb, n, wg, x) && gemv_ok(cb, n, wu, x) && wg->rows == wu->rows &&
          wg->cols == wu->cols && wg->dtype == wu->dtype)) {
        if ((rc = cu_matmul(b, y, x, n, wg, NULL, err))) return rc;
        if ((rc = cu_matmul(b, scratch, x, n, wu, NULL, err))) return rc;
        return cu_silu_mul(b, y, y, scratch, (size_t)n * (size_t)wg->rows, err);
    }
    touched(cb, y, (size_t)n * (size_t)wg->rows * sizeof(float));
    zs_k_gemv_t g;
    memset(&g, 0, sizeof g);
    g.nseg = 2;
    g.pair = 1;
    g.wdt = kw_dtype(wg->dtype);
    gemv_seg(&g, 0, y, wg, NULL);
    gemv_seg(&g, 1, scratch, wu, NULL);
    return gemv_submit(cb, x, n, wg->cols, &g, err);
}

/* --- KV block transfers ------------------------------------------------------------------ */
/* The compute stream waits for the imports of `layer` (all layers when layer < 0) that it
 * has not waited for yet. A wait cannot be part of a recorded decode graph: the step's
 * recorded commands are launched first and the rest of it runs eagerly. */
static int import_wait(cuda_be_t *cb, int32_t layer, zs_err_t *err) {
    if (cb->ipend_n == 0 || (layer >= 0 && (layer >= cb->iev_n || !cb->ipend[layer]))) return 0;
    int rc = flush_eager(cb, err);
    if (rc) return rc;
    if (layer >= 0) {
        CU(cudaStreamWaitEvent(cb->st, cb->iev[layer], 0), "KV import (cudaStreamWaitEvent, one layer)");
        cb->ipend[layer] = 0;
        cb->ipend_n--;
        return 0;
    }
    CU(cudaStreamWaitEvent(cb->st, cb->iall, 0), "KV import (cudaStreamWaitEvent)");
    memset(cb->ipend, 0, (size_t)cb->iev_n);
    cb->ipend_n = 0;
    return 0;
}

static int import_init(cuda_be_t *cb, int32_t nlayers, size_t n, zs_err_t *err) {
    if (cb->istart == NULL)
        CU(cudaEventCreateWithFlags(&cb->istart, cudaEventDisableTiming), "cudaEventCreate (KV import)");
    if (cb->iall == NULL)
        CU(cudaEventCreateWithFlags(&cb->iall, cudaEventDisableTiming), "cudaEventCreate (KV import)");
    if (cb->ist == NULL) {
        int least = 0, greatest = 0; /* the import's few CTAs go ahead of the step's */
        CU(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
        CU(cudaStreamCreateWithPriority(&cb->ist, cudaStreamNonBlocking, greatest), "cudaStreamCreate (KV import)");
    }
    if (nlayers > cb->iev_n) {
        /* grown only while nothing is pending (a pool's layout does not change) */
        if (cb->ipend_n) return zs_err_set(err, ZS_ESTATE, "cuda backend: KV import of %d layers while imports of %d are pending", nlayers, cb->iev_n);
        cudaEvent_t *ev = realloc(cb->iev, (size_t)nlayers * sizeof *ev);
        if (ev == NULL) return zs_err_set(err, ZS_ENOMEM, "cuda backend: out of memory for %d KV import events", nlayers);
        cb->iev = ev;
        uint8_t *pend = realloc(cb->ipend, (size_t)nlayers);
        if (pend == NULL) return zs_err_set(err, ZS_ENOMEM, "cuda backend: out of memory for %d KV import events", nlayers);
        cb->ipend = pend;
        for (; cb->iev_n < nlayers; cb->iev_n++) {
            cb->ipend[cb->iev_n] = 0;
            CU(cudaEventCreateWithFlags(&cb->iev[cb->iev_n], cudaEventDisableTiming), "cudaEventCreate (KV import, per layer)");
        }
    }
    if (n > cb->icap) {
        void **d = realloc(cb->idst, n * sizeof *d);
        if (d) cb->idst = d;
        const void **s = realloc(cb->isrc, n * sizeof *s);
        if (s) cb->isrc = s;
        size_t *z = realloc(cb->isize, n * sizeof *z);
        if (z) cb->isize = z;
        if (!d || !s || !z) return zs_err_set(err, ZS_ENOMEM, "cuda backend: out of memory for a KV import of %zu blocks", n);
        cb->icap = n;
    }
    return 0;
}

/* The n copies in idst/isrc/isize on the import stream: one cudaMemcpyBatchAsync, or one
 * cudaMemcpyAsync each where the driver has no batch copies. */
static int import_copies(cuda_be_t *cb, size_t n, zs_err_t *err) {
    if (cb->batch_copy) {
        struct cudaMemcpyAttributes a;
        memset(&a, 0, sizeof a);
        a.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        a.flags = cudaMemcpyFlagPreferOverlapWithCompute;
        size_t first = 0;
        cudaError_t e = cudaMemcpyBatchAsync(cb->idst, cb->isrc, cb->isize, n, &a, &first, 1, cb->ist);
        if (e == cudaSuccess) return 0;
        if (e != cudaErrorNotSupported && e != cudaErrorCallRequiresNewerDriver)
            return cu_err(err, e, "KV import (cudaMemcpyBatchAsync H2D)");
        (void)cudaGetLastError();
        cb->batch_copy = 0;
    }
    for (size_t i = 0; i < n; i++)
        CU(cudaMemcpyAsync(cb->idst[i], cb->isrc[i], cb->isize[i], cudaMemcpyHostToDevice, cb->ist),
           "KV import (cudaMemcpyAsync H2D)");
    return 0;
}

/* Fills the move kernel's table (device addresses of the host blocks, pool block ids) and
 * queues its upload on `st`, the stream of the launch that reads it. 0 with *ok = 0 when a
 * host block is not page-locked and mapped for the device, or not 16-byte aligned: the
 * caller uses the copy engines instead. */
static int kv_table_fill(kv_table_t *t, cudaStream_t st, const int32_t *ids, const void *const *host, int32_t n,
                         int *ok, zs_err_t *err) {
    *ok = 0;
    if ((size_t)n > t->cap) {
        zs_k_kv_host_t *h = realloc(t->h, (size_t)n * sizeof *h);
        if (h == NULL) return zs_err_set(err, ZS_ENOMEM, "cuda backend: out of memory for a KV transfer of %d blocks", n);
        t->h = h;
        /* earlier launches may still read the old table */
        CU(cudaStreamSynchronize(st), "cudaStreamSynchronize (growing a KV transfer table)");
        cudaFree(t->d);
        t->d = NULL;
        t->cap = 0;
        CU(cudaMalloc((void **)&t->d, (size_t)n * sizeof *t->d), "cudaMalloc (KV transfer table)");
        t->cap = (size_t)n;
    }
    for (int32_t i = 0; i < n; i++) {
        struct cudaPointerAttributes a;
        if (cudaPointerGetAttributes(&a, host[i]) != cudaSuccess) {
            (void)cudaGetLastError();
            return 0;
        }
        if (a.type != cudaMemoryTypeHost || a.devicePointer == NULL || (uintptr_t)a.devicePointer % 16) return 0;
        t->h[i].host = (const char *)a.devicePointer;
        t->h[i].block = ids[i];
    }
    /* from pageable memory: staged before the call returns, so the host table is free again */
    CU(cudaMemcpyAsync(t->d, t->h, (size_t)n * sizeof *t->h, cudaMemcpyHostToDevice, st),
       "KV transfer (uploading the move kernel's table)");
    *ok = 1;
    return 0;
}

static void kv_table_free(kv_table_t *t) {
    free(t->h);
    cudaFree(t->d);
    memset(t, 0, sizeof *t);
}

static int cu_kv_blocks_in(zs_backend_t *b, void *pool, const zs_kv_layout_t *l, const int32_t *ids,
                           const void *const *srcs, int32_t n, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    int rc = flush_eager(cb, err);
    if (rc || n <= 0) return rc;
    if (cb->xfer_mode == XFER_BLOCKS || l->nlayers < 1 ||
        l->block_bytes != (size_t)l->nlayers * l->layer_stride) {
        for (int32_t i = 0; i < n; i++)
            CU(cudaMemcpyAsync((char *)pool + (size_t)ids[i] * l->block_bytes, srcs[i], l->block_bytes,
                               cudaMemcpyHostToDevice, cb->st),
               "KV import (cudaMemcpyAsync H2D)");
        return 0;
    }
    if ((rc = import_init(cb, l->nlayers, (size_t)n, err))) return rc;
    /* the new blocks may have been read by steps queued before (their previous sequence) */
    CU(cudaEventRecord(cb->istart, cb->st), "KV import (cudaEventRecord)");
    CU(cudaStreamWaitEvent(cb->ist, cb->istart, 0), "KV import (cudaStreamWaitEvent)");
    int gather = 0;
    if (cb->xfer_mode == XFER_AUTO && l->layer_stride % 16 == 0 &&
        (rc = kv_table_fill(&cb->itab, cb->ist, ids, srcs, n, &gather, err)))
        return rc;
    for (int32_t layer = 0; layer < l->nlayers; layer++) {
        const size_t off = (size_t)layer * l->layer_stride;
        if (gather) {
            rc = launch(zs_k_kv_move(cb->ist, pool, cb->itab.d, n, l->block_bytes, off, l->layer_stride),
                        "KV import (zs_k_kv_move)", err);
        } else {
            for (int32_t i = 0; i < n; i++) {
                cb->idst[i] = (char *)pool + (size_t)ids[i] * l->block_bytes + off;
                cb->isrc[i] = (const char *)srcs[i] + off;
                cb->isize[i] = l->layer_stride;
            }
            rc = import_copies(cb, (size_t)n, err);
        }
        if (rc) return rc;
        CU(cudaEventRecord(cb->iev[layer], cb->ist), "KV import (cudaEventRecord, per layer)");
        if (!cb->ipend[layer]) {
            cb->ipend[layer] = 1;
            cb->ipend_n++;
        }
    }
    CU(cudaEventRecord(cb->iall, cb->ist), "KV import (cudaEventRecord)");
    cb->x_wait_import = 1;
    return 0;
}

static int xfer_init(cuda_be_t *cb, zs_err_t *err) {
    if (cb->xst) return 0;
    CU(cudaEventCreateWithFlags(&cb->xstart, cudaEventDisableTiming), "cudaEventCreate (KV export)");
    for (int i = 0; i < XFER_EVENTS; i++)
        CU(cudaEventCreateWithFlags(&cb->xev[i], cudaEventDisableTiming), "cudaEventCreate (KV export)");
    CU(cudaStreamCreateWithFlags(&cb->xst, cudaStreamNonBlocking), "cudaStreamCreate (KV export)");
    return 0;
}

static int cu_kv_out_done(zs_backend_t *b, uint64_t ticket, int wait, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    if (ticket <= cb->x_done) return 1;
    if (ticket > cb->x_issued) return zs_err_set(err, ZS_EINVAL, "cuda backend: unknown KV export ticket %llu", (unsigned long long)ticket);
    cudaEvent_t ev = cb->xev[(ticket - 1) % XFER_EVENTS];
    cudaError_t e = wait ? cudaEventSynchronize(ev) : cudaEventQuery(ev);
    if (e == cudaErrorNotReady) return 0;
    if (e != cudaSuccess) return cu_err(err, e, "KV export (cudaEventQuery)");
    cb->x_done = ticket; /* one stream: every earlier export is done too */
    return 1;
}

static int cu_kv_blocks_out(zs_backend_t *b, const void *pool, const zs_kv_layout_t *l, const int32_t *ids,
                            void *const *dsts, int32_t n, uint64_t *ticket, zs_err_t *err) {
    cuda_be_t *cb = CB(b);
    int rc = flush_eager(cb, err);
    if (!rc) rc = xfer_init(cb, err);
    /* the event slot of this ticket must be free: wait for the export that used it */
    if (!rc && cb->x_issued - cb->x_done >= XFER_EVENTS) rc = cu_kv_out_done(b, cb->x_issued + 1 - XFER_EVENTS, 1, err);
    if (rc < 0) return rc;
    CU(cudaEventRecord(cb->xstart, cb->st), "KV export (cudaEventRecord)");
    CU(cudaStreamWaitEvent(cb->xst, cb->xstart, 0), "KV export (cudaStreamWaitEvent)");
    if (cb->x_wait_import) { /* an exported block may be one an import is still writing */
        CU(cudaStreamWaitEvent(cb->xst, cb->iall, 0), "KV export (cudaStreamWaitEvent, imports)");
        cb->x_wait_import = 0;
    }
    /* copy engines: the SMs (zs_k_kv_move) made a step running beside a 4.3 GB export slower
     * (docs/kvstore.md) */
    for (int32_t i = 0; i < n; i++)
        CU(cudaMemcpyAsync(dsts[i], (const char *)pool + (size_t)ids[i] * l->block_bytes, l->block_bytes,
                           cudaMemcpyDeviceToHost, cb->xst),
           "KV export (cudaMemcpyAsync D2H)");
    uint64_t t = cb->x_issued + 1;
    CU(cudaEventRecord(cb->xev[(t - 1) % XFER_EVENTS], cb->xst), "KV export (cudaEventRecord)");
    cb->x_issued = t;
    *ticket = t;
    return 0;
}

/* --- lifetime --------------------------------------------------------------------------- */
static void cu_destroy(zs_backend_t *b) {
    cuda_be_t *cb = CB(b);
    if (cb == NULL) return;
    if (cb->st) (void)cudaStreamSynchronize(cb->st);
    if (cb->xst) {
        (void)cudaStreamSynchronize(cb->xst);
        cudaStreamDestroy(cb->xst);
    }
    for (int i = 0; i < XFER_EVENTS; i++)
        if (cb->xev[i]) cudaEventDestroy(cb->xev[i]);
    if (cb->xstart) cudaEventDestroy(cb->xstart);
    if (cb->ist) {
        (void)cudaStreamSynchronize(cb->ist);
        cudaStreamDestroy(cb->ist);
    }
    for (int32_t i = 0; i < cb->iev_n; i++) cudaEventDestroy(cb->iev[i]);
    if (cb->istart) cudaEventDestroy(cb->istart);
    if (cb->iall) cudaEventDestroy(cb->iall);
    free(cb->iev);
    free(cb->ipend);
    free(cb->idst);
    free(cb->isrc);
    free(cb->isize);
    kv_table_free(&cb->itab);
    for (int i = 0; i < GRAPH_CACHE; i++) graph_drop(&cb->graphs[i]);
    free(cb->cmds);
    cudaFree(cb->d_meta);
    cudaFreeHost(cb->h_meta);
    cudaFree(cb->d_cos);
    cudaFree(cb->shadow);
    cudaFree(cb->part);
    if (cb->meta_ev) cudaEventDestroy(cb->meta_ev);
    blas_give(cb->dev, cb->blas);
    if (cb->st) cudaStreamDestroy(cb->st);
    free(cb);
}

/* The ops both tables share. */
#define CUDA_BASE_OPS \
    .name = "cuda", \
    .destroy = cu_destroy, \
    .alloc = cu_alloc, \
    .free = cu_free, \
    .upload = cu_upload, \
    .download = cu_download, \
    .sync = cu_sync, \
    .begin_batch = cu_begin_batch, \
    .embed = cu_embed, \
    .matmul = cu_matmul, \
    .rmsnorm = cu_rmsnorm, \
    .rope = cu_rope, \
    .kv_store = cu_kv_store, \
    .attention = cu_attention, \
    .silu_mul = cu_silu_mul, \
    .add = cu_add, \
    .gather_rows = cu_gather_rows, \
    .kv_blocks_in = cu_kv_blocks_in, \
    .kv_blocks_out = cu_kv_blocks_out, \
    .kv_out_done = cu_kv_out_done, \
    .embed_rows = cu_embed_rows, \
    .collective_stream = cu_collective_stream,

static const zs_backend_ops_t cuda_ops = {
    CUDA_BASE_OPS
    .matmul3 = cu_matmul3,
    .matmul_add = cu_matmul_add,
    .matmul_silu = cu_matmul_silu,
};

/* ZS_CUDA_FUSE=0: the same backend without the fused ops (model.c composes them). */
static const zs_backend_ops_t cuda_ops_unfused = {
    CUDA_BASE_OPS
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
    if ((rc = blas_take(device, &cb->blas, err)) != 0) goto fail;
    cublasStatus_t s;
    if ((s = cublasSetStream(cb->blas, cb->st)) != CUBLAS_STATUS_SUCCESS) {
        rc = blas_err(err, s, "cublasSetStream");
        goto fail;
    }
    const char *am = getenv("ZS_CUDA_ATTN");
    cb->attn_mode = am && strcmp(am, "simple") == 0 ? ATTN_SIMPLE : ATTN_AUTO;
    const char *gv = getenv("ZS_CUDA_GEMV");
    cb->use_gemv = !(gv && strcmp(gv, "0") == 0);
    const char *gr = getenv("ZS_CUDA_GRAPH");
    cb->use_graph = !(gr && strcmp(gr, "0") == 0);
    const char *fu = getenv("ZS_CUDA_FUSE");
    if (fu && strcmp(fu, "0") == 0) cb->base.ops = &cuda_ops_unfused;
    /* the first restore should not load the move kernel's module (lazy loading) */
    if ((e = zs_k_kv_move_load()) != cudaSuccess) {
        rc = cu_err(err, e, "loading the KV move kernel");
        goto fail;
    }
    const char *kt = getenv("ZS_KV_TRANSFER");
    cb->xfer_mode = kt && strcmp(kt, "blocks") == 0 ? XFER_BLOCKS
                    : kt && strcmp(kt, "copy") == 0 ? XFER_COPY : XFER_AUTO;
    cb->batch_copy = 1;
    *out = &cb->base;
    return 0;
fail:
    cu_destroy(&cb->base);
    return rc;
}
