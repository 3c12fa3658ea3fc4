/* CPU backend matrix multiply: y[n, rows] = x[n, cols] @ W^T (+ bias) with W in its stored
 * dtype (F32, F16, BF16). Work is split over blocks of weight rows across the thread pool;
 * each block is converted to float once into per-worker scratch and reused for every token.
 * The inner dot products use 8 independent lanes so the compiler vectorizes them. */
#include "engine/cpu_backend.h"

#define ROW_BLOCK 16
#define LANES 8

typedef struct {
    float *y;
    const float *x;
    int32_t n;
    const zs_bweight_t *w, *bias;
    zs_cpu_backend_t *cb;
} mm_ctx_t;

/* Four dot products of x against w0..w3, length k. */
static void dot4(const float *restrict x, const float *restrict w0, const float *restrict w1,
                 const float *restrict w2, const float *restrict w3, int64_t k, float out[4]) {
    float a0[LANES] = {0}, a1[LANES] = {0}, a2[LANES] = {0}, a3[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= k; i += LANES) {
        for (int j = 0; j < LANES; j++) {
            float xv = x[i + j];
            a0[j] += xv * w0[i + j];
            a1[j] += xv * w1[i + j];
            a2[j] += xv * w2[i + j];
            a3[j] += xv * w3[i + j];
        }
    }
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int j = 0; j < LANES; j++) {
        s0 += a0[j];
        s1 += a1[j];
        s2 += a2[j];
        s3 += a3[j];
    }
    for (; i < k; i++) {
        s0 += x[i] * w0[i];
        s1 += x[i] * w1[i];
        s2 += x[i] * w2[i];
        s3 += x[i] * w3[i];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

static void mm_task(void *vctx, int64_t begin, int64_t end, int worker) {
    const mm_ctx_t *c = vctx;
    const int64_t rows = c->w->rows, cols = c->w->cols;
    /* [begin, end) are row-block indices */
    for (int64_t blk = begin; blk < end; blk++) {
        int64_t r0 = blk * ROW_BLOCK;
        int64_t nr = rows - r0 < ROW_BLOCK ? rows - r0 : ROW_BLOCK;
        const float *wr[ROW_BLOCK];
        if (c->w->dtype == ZS_F32) {
            for (int64_t r = 0; r < nr; r++) wr[r] = (const float *)c->w->data + (r0 + r) * cols;
        } else {
            float *s = c->cb->scratch[worker];
            zs_wconvert(s, c->w->data, c->w->dtype, r0 * cols, nr * cols);
            for (int64_t r = 0; r < nr; r++) wr[r] = s + r * cols;
        }
        /* pad to a multiple of 4 rows by repeating the last one (results discarded) */
        for (int64_t r = nr; r < ROW_BLOCK; r++) wr[r] = wr[nr - 1];
        float bv[ROW_BLOCK] = {0};
        if (c->bias != NULL && c->bias->data != NULL)
            for (int64_t r = 0; r < nr; r++) bv[r] = zs_wget(c->bias->data, c->bias->dtype, r0 + r);
        for (int32_t t = 0; t < c->n; t++) {
            const float *xt = c->x + (int64_t)t * cols;
            float *yt = c->y + (int64_t)t * rows + r0;
            for (int64_t r = 0; r < nr; r += 4) {
                float o[4];
                dot4(xt, wr[r], wr[r + 1], wr[r + 2], wr[r + 3], cols, o);
                for (int64_t j = 0; j < 4 && r + j < nr; j++) yt[r + j] = o[j] + bv[r + j];
            }
        }
    }
}

int zs_cpu_matmul(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                  const zs_bweight_t *bias, zs_err_t *err) {
    zs_cpu_backend_t *cb = (zs_cpu_backend_t *)b;
    if (n <= 0) return 0;
    if (w->rows < 1 || w->cols < 1)
        return zs_err_set(err, ZS_EINVAL, "cpu matmul: empty weight");
    if (w->dtype != ZS_F32) {
        int rc = zs_cpu_scratch_reserve(cb, (size_t)ROW_BLOCK * (size_t)w->cols, err);
        if (rc) return rc;
    }
    mm_ctx_t c = {.y = y, .x = x, .n = n, .w = w, .bias = bias, .cb = cb};
    int64_t nblk = (w->rows + ROW_BLOCK - 1) / ROW_BLOCK;
    /* chunks small enough to balance, large enough to amortize the hand-out */
    int64_t grain = nblk / ((int64_t)cb->nworkers * 8);
    if (grain < 1) grain = 1;
    zs_cpu_pool_run(cb->pool, nblk, grain, mm_task, &c);
    return 0;
}
