/* CPU backend internals shared by its source files (cpu_backend.c: memory, batch and
 * elementwise ops; cpu_matmul.c; cpu_attention.c). Not part of the backend interface. */
#ifndef ZS_ENGINE_CPU_BACKEND_H
#define ZS_ENGINE_CPU_BACKEND_H

#include <stdint.h>
#include <string.h>

#include "engine/backend.h"
#include "engine/cpu_pool.h"

typedef struct zs_cpu_backend {
    zs_backend_t base;         /* first member: zs_backend_t* casts to this */
    zs_cpu_pool_t *pool;
    int nworkers;
    float **scratch;           /* per worker */
    size_t scratch_floats;     /* capacity of each */
    zs_fwd_batch_t batch;      /* current step (host memory owned by the caller) */
    int have_batch;
} zs_cpu_backend_t;

/* Grows every worker's scratch to at least nfloats (call before starting a parallel job). */
int zs_cpu_scratch_reserve(zs_cpu_backend_t *cb, size_t nfloats, zs_err_t *err);

int zs_cpu_matmul(zs_backend_t *b, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                  const zs_bweight_t *bias, zs_err_t *err);
int zs_cpu_attention(zs_backend_t *b, float *out, const float *q, const void *pool,
                     const zs_kv_layout_t *l, int32_t layer, int32_t nheads, int32_t window,
                     float scale, zs_err_t *err);

static inline float zs_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float zs_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, ex = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (ex == 0) {
        float f = (float)man * 0x1p-24f; /* zero or subnormal: exact */
        return sign ? -f : f;
    }
    if (ex == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((ex + 112u) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Element i of a weight stored as dtype (F32, F16, BF16). */
static inline float zs_wget(const void *data, zs_dtype_t dt, int64_t i) {
    switch (dt) {
    case ZS_BF16: return zs_bf16_to_f32(((const uint16_t *)data)[i]);
    case ZS_F16: return zs_f16_to_f32(((const uint16_t *)data)[i]);
    default: return ((const float *)data)[i];
    }
}

/* dst[0..n) = elements [off, off + n) of a weight, converted to float. */
static inline void zs_wconvert(float *dst, const void *data, zs_dtype_t dt, int64_t off,
                               int64_t n) {
    if (dt == ZS_F32) {
        memcpy(dst, (const float *)data + off, (size_t)n * sizeof(float));
    } else if (dt == ZS_BF16) {
        const uint16_t *s = (const uint16_t *)data + off;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)s[i] << 16;
            memcpy(&dst[i], &u, sizeof u);
        }
    } else {
        const uint16_t *s = (const uint16_t *)data + off;
        for (int64_t i = 0; i < n; i++) dst[i] = zs_f16_to_f32(s[i]);
    }
}

#endif
