/* CPU backend: the backend vtable for host memory. Owns the thread pool and per-worker
 * scratch, memory ops, the current batch description and the elementwise ops (embedding,
 * RMSNorm, RoPE, KV store, SiLU-mul, add, row gather; the vocabulary-parallel embedding of a
 * tensor-parallel rank). Matmul and attention live in
 * cpu_matmul.c and cpu_attention.c. Compute is float32. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/cpu_backend.h"
#include "zerostart/model.h"

static zs_cpu_backend_t *CB(zs_backend_t *b) { return (zs_cpu_backend_t *)b; }

int zs_cpu_scratch_reserve(zs_cpu_backend_t *cb, size_t nfloats, zs_err_t *err) {
    if (nfloats <= cb->scratch_floats) return 0;
    for (int i = 0; i < cb->nworkers; i++) {
        float *p = realloc(cb->scratch[i], nfloats * sizeof(float));
        if (p == NULL)
            return zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory for %zu-float scratch",
                              nfloats);
        cb->scratch[i] = p;
    }
    cb->scratch_floats = nfloats;
    return 0;
}

static void cpu_destroy(zs_backend_t *b) {
    zs_cpu_backend_t *cb = CB(b);
    if (cb == NULL) return;
    zs_cpu_pool_destroy(cb->pool);
    if (cb->scratch)
        for (int i = 0; i < cb->nworkers; i++) free(cb->scratch[i]);
    free(cb->scratch);
    free(cb);
}

static void *cpu_alloc(zs_backend_t *b, size_t bytes, zs_err_t *err) {
    (void)b;
    size_t n = (bytes + 63) / 64 * 64;
    if (n < bytes || n == 0) n = 64;
    void *p = aligned_alloc(64, n);
    if (p == NULL) zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory allocating %zu bytes", bytes);
    return p;
}

static void cpu_free(zs_backend_t *b, void *p) {
    (void)b;
    free(p);
}

static int cpu_copy(zs_backend_t *b, void *dst, const void *src, size_t bytes, zs_err_t *err) {
    (void)b;
    (void)err;
    if (bytes) memmove(dst, src, bytes);
    return 0;
}

static int cpu_sync(zs_backend_t *b, zs_err_t *err) {
    (void)b;
    (void)err;
    return 0;
}

static int cpu_begin_batch(zs_backend_t *b, const zs_fwd_batch_t *batch, zs_err_t *err) {
    if (batch->ntok < 0 || batch->nseq < 0)
        return zs_err_set(err, ZS_EINVAL, "cpu backend: bad batch");
    CB(b)->batch = *batch;
    CB(b)->have_batch = 1;
    return 0;
}

/* Rows [row0, row0 + table->rows) of the vocabulary; other ids: an error (whole table) or
 * zeros (a tensor-parallel rank's rows). */
static int embed_from(zs_backend_t *b, float *x, const zs_bweight_t *table, int64_t row0,
                      int zero_others, zs_err_t *err) {
    zs_cpu_backend_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cpu embed: no batch begun");
    const int64_t dim = table->cols;
    for (int32_t t = 0; t < cb->batch.ntok; t++) {
        const int64_t id = (int64_t)cb->batch.tok_ids[t] - row0;
        float *dst = x + (int64_t)t * dim;
        if (id >= 0 && id < table->rows) zs_wconvert(dst, table->data, table->dtype, id * dim, dim);
        else if (zero_others) memset(dst, 0, (size_t)dim * sizeof(float));
        else
            return zs_err_set(err, ZS_ERANGE, "cpu embed: token id %d outside [0, %lld)",
                              cb->batch.tok_ids[t], (long long)table->rows);
    }
    return 0;
}

static int cpu_embed(zs_backend_t *b, float *x, const zs_bweight_t *table, zs_err_t *err) {
    return embed_from(b, x, table, 0, 0, err);
}

static int cpu_embed_rows(zs_backend_t *b, float *x, const zs_bweight_t *table, int64_t row0,
                          zs_err_t *err) {
    return embed_from(b, x, table, row0, 1, err);
}

typedef struct {
    float *y;
    const float *x;
    int32_t dim;
    const zs_bweight_t *w;
    float eps;
} norm_ctx_t;

static void norm_task(void *vctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const norm_ctx_t *c = vctx;
    for (int64_t r = begin; r < end; r++) {
        const float *x = c->x + r * c->dim;
        float *y = c->y + r * c->dim;
        double ss = 0;
        for (int32_t i = 0; i < c->dim; i++) ss += (double)x[i] * x[i];
        const float inv = (float)(1.0 / sqrt(ss / c->dim + (double)c->eps));
        for (int32_t i = 0; i < c->dim; i++)
            y[i] = zs_wget(c->w->data, c->w->dtype, i) * (x[i] * inv);
    }
}

static int cpu_rmsnorm(zs_backend_t *b, float *y, const float *x, int32_t n, int32_t dim,
                       const zs_bweight_t *w, float eps, zs_err_t *err) {
    if (w->rows * w->cols != dim)
        return zs_err_set(err, ZS_EINVAL, "cpu rmsnorm: weight has %lld elements, rows have %d",
                          (long long)(w->rows * w->cols), dim);
    norm_ctx_t c = {.y = y, .x = x, .dim = dim, .w = w, .eps = eps};
    int64_t grain = (int64_t)n / (CB(b)->nworkers * 2);
    if (grain < 8) grain = 8;
    zs_cpu_pool_run(CB(b)->pool, n, grain, norm_task, &c);
    return 0;
}

static int cpu_rope(zs_backend_t *b, float *x, int32_t nheads, int32_t head_dim,
                    const float *inv_freq, float attn_factor, zs_err_t *err) {
    zs_cpu_backend_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cpu rope: no batch begun");
    if (head_dim % 2 || head_dim > ZS_MODEL_MAX_HEAD_DIM)
        return zs_err_set(err, ZS_EINVAL, "cpu rope: head_dim %d", head_dim);
    const int32_t half = head_dim / 2;
    float cs[ZS_MODEL_MAX_HEAD_DIM / 2], sn[ZS_MODEL_MAX_HEAD_DIM / 2];
    for (int32_t t = 0; t < cb->batch.ntok; t++) {
        /* transformers: freqs = inv_freq (f32) * position (f32), cos/sin in f32, times scale */
        const float pos = (float)cb->batch.tok_pos[t];
        for (int32_t i = 0; i < half; i++) {
            const float ang = pos * inv_freq[i];
            cs[i] = (float)cos((double)ang) * attn_factor;
            sn[i] = (float)sin((double)ang) * attn_factor;
        }
        for (int32_t h = 0; h < nheads; h++) {
            float *v = x + ((int64_t)t * nheads + h) * head_dim;
            for (int32_t i = 0; i < half; i++) {
                const float a = v[i], c2 = v[i + half];
                v[i] = a * cs[i] - c2 * sn[i];
                v[i + half] = c2 * cs[i] + a * sn[i];
            }
        }
    }
    return 0;
}

static int cpu_kv_store(zs_backend_t *b, void *pool, const zs_kv_layout_t *l, int32_t layer,
                        const float *k, const float *v, zs_err_t *err) {
    zs_cpu_backend_t *cb = CB(b);
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cpu kv_store: no batch begun");
    if (l->dtype != ZS_F32)
        return zs_err_set(err, ZS_EUNSUPPORTED, "cpu kv_store: KV cache dtype must be F32");
    const int32_t hd = l->head_dim, nkv = l->nkv_heads;
    unsigned char *base = pool;
    for (int32_t t = 0; t < cb->batch.ntok; t++) {
        const int32_t slot = cb->batch.tok_slot[t];
        const int32_t blk = slot / l->block_size, off = slot % l->block_size;
        for (int32_t h = 0; h < nkv; h++) {
            const size_t src = ((size_t)t * nkv + h) * hd;
            memcpy(base + zs_kv_offset(l, blk, layer, 0, h, off), k + src, (size_t)hd * 4);
            memcpy(base + zs_kv_offset(l, blk, layer, 1, h, off), v + src, (size_t)hd * 4);
        }
    }
    return 0;
}

static int cpu_silu_mul(zs_backend_t *b, float *y, const float *gate, const float *up, size_t n,
                        zs_err_t *err) {
    (void)b;
    (void)err;
    for (size_t i = 0; i < n; i++) {
        const float g = gate[i];
        y[i] = g / (1.0f + expf(-g)) * up[i];
    }
    return 0;
}

static int cpu_add(zs_backend_t *b, float *y, const float *x, size_t n, zs_err_t *err) {
    (void)b;
    (void)err;
    for (size_t i = 0; i < n; i++) y[i] += x[i];
    return 0;
}

static int cpu_gather_rows(zs_backend_t *b, float *y, const float *x, const int32_t *rows,
                           int32_t nrows, int32_t dim, zs_err_t *err) {
    (void)b;
    (void)err;
    for (int32_t i = 0; i < nrows; i++)
        memmove(y + (int64_t)i * dim, x + (int64_t)rows[i] * dim, (size_t)dim * sizeof(float));
    return 0;
}

/* Fused ops: the CPU gains nothing from fusing (no launches), so these are the compositions
 * model.c would otherwise do, with the same float32 results. */
static int cpu_matmul3(zs_backend_t *b, float *y0, float *y1, float *y2, const float *x, int32_t n,
                       const zs_bweight_t *w0, const zs_bweight_t *w1, const zs_bweight_t *w2,
                       const zs_bweight_t *b0, const zs_bweight_t *b1, const zs_bweight_t *b2,
                       zs_err_t *err) {
    int rc = zs_cpu_matmul(b, y0, x, n, w0, b0, err);
    if (rc == 0) rc = zs_cpu_matmul(b, y1, x, n, w1, b1, err);
    if (rc == 0) rc = zs_cpu_matmul(b, y2, x, n, w2, b2, err);
    return rc;
}

static int cpu_matmul_add(zs_backend_t *b, float *y, const float *x, int32_t n,
                          const zs_bweight_t *w, const zs_bweight_t *bias, float *scratch,
                          zs_err_t *err) {
    int rc = zs_cpu_matmul(b, scratch, x, n, w, bias, err);
    if (rc == 0) rc = cpu_add(b, y, scratch, (size_t)n * (size_t)w->rows, err);
    return rc;
}

static int cpu_matmul_silu(zs_backend_t *b, float *y, const float *x, int32_t n,
                           const zs_bweight_t *wg, const zs_bweight_t *wu, float *scratch,
                           zs_err_t *err) {
    int rc = zs_cpu_matmul(b, y, x, n, wg, NULL, err);
    if (rc == 0) rc = zs_cpu_matmul(b, scratch, x, n, wu, NULL, err);
    if (rc == 0) rc = cpu_silu_mul(b, y, y, scratch, (size_t)n * (size_t)wg->rows, err);
    return rc;
}

static const zs_backend_ops_t cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .begin_batch = cpu_begin_batch,
    .embed = cpu_embed,
    .matmul = zs_cpu_matmul,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = zs_cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
    .gather_rows = cpu_gather_rows,
    .matmul3 = cpu_matmul3,
    .matmul_add = cpu_matmul_add,
    .matmul_silu = cpu_matmul_silu,
    .embed_rows = cpu_embed_rows,
    .collective_stream = NULL, /* ops complete before they return */
};

int zs_cpu_backend_create(int threads, zs_backend_t **out, zs_err_t *err) {
    *out = NULL;
    if (threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc > 0 ? (int)nc : 1;
    }
    if (threads > 64) threads = 64;
    zs_cpu_backend_t *cb = calloc(1, sizeof *cb);
    if (cb == NULL) return zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory");
    cb->base.ops = &cpu_ops;
    cb->base.device = ZS_DEV_CPU;
    cb->nworkers = threads;
    cb->scratch = calloc((size_t)threads, sizeof *cb->scratch);
    if (cb->scratch == NULL) {
        free(cb);
        return zs_err_set(err, ZS_ENOMEM, "cpu backend: out of memory");
    }
    int rc = zs_cpu_pool_create(threads, &cb->pool, err);
    if (rc) {
        free(cb->scratch);
        free(cb);
        return rc;
    }
    *out = &cb->base;
    return 0;
}
