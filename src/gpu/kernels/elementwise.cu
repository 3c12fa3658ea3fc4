/* CUDA backend elementwise kernels: embedding lookup (also of a tensor-parallel rank's
 * vocabulary rows), RMSNorm (optionally also writing a
 * bf16 copy for the next matrix product), RoPE from host-computed cos/sin tables, KV store
 * into the bf16 paged pool, SiLU-mul, residual add, bias add, float -> bf16/f16 conversion
 * and row gather. Launchers are declared in kernels.h. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "gpu/kernels/kernels.h"

static __device__ __forceinline__ float wload(const void *w, int wdt, int64_t i) {
    if (wdt == ZS_KW_BF16) return __bfloat162float(((const __nv_bfloat16 *)w)[i]);
    if (wdt == ZS_KW_F16) return __half2float(((const __half *)w)[i]);
    return ((const float *)w)[i];
}

static unsigned grid1(size_t n, unsigned threads) {
    size_t g = (n + threads - 1) / threads;
    if (g > 1u << 30) g = 1u << 30;
    return g ? (unsigned)g : 1u;
}

/* --- embedding ------------------------------------------------------------------------ */
__global__ void k_embed(float *x, const void *table, int wdt, int64_t dim, const int32_t *ids,
                        int32_t ntok) {
    for (int32_t t = blockIdx.y; t < ntok; t += gridDim.y) {
        const int64_t id = ids[t];
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < dim;
             i += (int64_t)gridDim.x * blockDim.x)
            x[t * dim + i] = wload(table, wdt, id * dim + i);
    }
}

static dim3 embed_grid(int64_t dim, int32_t ntok) {
    return dim3(grid1((size_t)dim, 256) > 64 ? 64 : grid1((size_t)dim, 256),
                ntok > 65535 ? 65535u : (unsigned)ntok);
}

extern "C" cudaError_t zs_k_embed(cudaStream_t st, float *x, const void *table, int wdt,
                                  int64_t dim, const int32_t *ids, int32_t ntok) {
    if (ntok <= 0) return cudaSuccess;
    k_embed<<<embed_grid(dim, ntok), 256, 0, st>>>(x, table, wdt, dim, ids, ntok);
    return cudaGetLastError();
}

/* A tensor-parallel rank's embedding: table holds vocabulary rows [row0, row0 + nrows). */
__global__ void k_embed_rows(float *x, const void *table, int wdt, int64_t dim, int64_t row0,
                             int64_t nrows, const int32_t *ids, int32_t ntok) {
    for (int32_t t = blockIdx.y; t < ntok; t += gridDim.y) {
        const int64_t id = (int64_t)ids[t] - row0;
        const bool mine = id >= 0 && id < nrows;
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < dim;
             i += (int64_t)gridDim.x * blockDim.x)
            x[t * dim + i] = mine ? wload(table, wdt, id * dim + i) : 0.f;
    }
}

extern "C" cudaError_t zs_k_embed_rows(cudaStream_t st, float *x, const void *table, int wdt,
                                       int64_t dim, int64_t row0, int64_t nrows,
                                       const int32_t *ids, int32_t ntok) {
    if (ntok <= 0) return cudaSuccess;
    k_embed_rows<<<embed_grid(dim, ntok), 256, 0, st>>>(x, table, wdt, dim, row0, nrows, ids, ntok);
    return cudaGetLastError();
}

/* --- RMSNorm -------------------------------------------------------------------------- */
static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* one block per row (large rows) */
__global__ void k_rmsnorm_block(float *y, __nv_bfloat16 *ybf, const float *x, int32_t dim,
                                const void *w, int wdt, float eps) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x;
    const float *xr = x + row * dim;
    float ss = 0.f;
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    if (lane == 0) red[wid] = ss;
    __syncthreads();
    if (wid == 0) {
        float v = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    const float inv = rsqrtf(red[0] / (float)dim + eps);
    float *yr = y + row * dim;
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = wload(w, wdt, i) * (xr[i] * inv);
        yr[i] = v;
        if (ybf) ybf[row * dim + i] = __float2bfloat16_rn(v);
    }
}

/* one warp per row (short rows, e.g. per-head q/k norm) */
__global__ void k_rmsnorm_warp(float *y, __nv_bfloat16 *ybf, const float *x, int32_t n,
                               int32_t dim, const void *w, int wdt, float eps) {
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float *xr = x + row * dim;
    float ss = 0.f;
    for (int32_t i = lane; i < dim; i += 32) ss += xr[i] * xr[i];
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / (float)dim + eps);
    float *yr = y + row * dim;
    for (int32_t i = lane; i < dim; i += 32) {
        const float v = wload(w, wdt, i) * (xr[i] * inv);
        yr[i] = v;
        if (ybf) ybf[row * dim + i] = __float2bfloat16_rn(v);
    }
}

extern "C" cudaError_t zs_k_rmsnorm(cudaStream_t st, float *y, void *ybf, const float *x,
                                    int32_t n, int32_t dim, const void *w, int wdt, float eps) {
    if (n <= 0) return cudaSuccess;
    if (dim >= 1024) {
        k_rmsnorm_block<<<(unsigned)n, 512, 0, st>>>(y, (__nv_bfloat16 *)ybf, x, dim, w, wdt, eps);
    } else {
        k_rmsnorm_warp<<<(unsigned)((n + 7) / 8), 256, 0, st>>>(y, (__nv_bfloat16 *)ybf, x, n, dim,
                                                               w, wdt, eps);
    }
    return cudaGetLastError();
}

/* --- RoPE (rotate-half) ------------------------------------------------------------------ */
__global__ void k_rope(float *x, int32_t ntok, int32_t nheads, int32_t half, const int32_t *pos,
                       const float *tc, const float *ts) {
    const int64_t total = (int64_t)ntok * nheads * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int32_t d = (int32_t)(i % half);
        const int64_t th = i / half; /* t * nheads + h */
        const int32_t t = (int32_t)(th / nheads);
        const int64_t p = pos[t];
        const float c = tc[p * half + d], s = ts[p * half + d];
        float *v = x + th * 2 * half;
        const float a = v[d], b = v[d + half];
        v[d] = a * c - b * s;
        v[d + half] = b * c + a * s;
    }
}

extern "C" cudaError_t zs_k_rope(cudaStream_t st, float *x, int32_t ntok, int32_t nheads,
                                 int32_t head_dim, const int32_t *pos, const float *tab_cos,
                                 const float *tab_sin) {
    const size_t n = (size_t)ntok * nheads * (head_dim / 2);
    if (n == 0) return cudaSuccess;
    k_rope<<<grid1(n, 256), 256, 0, st>>>(x, ntok, nheads, head_dim / 2, pos, tab_cos, tab_sin);
    return cudaGetLastError();
}

/* RoPE tables: row p holds cos/sin of the f32 angle p * inv[i] as the CPU backend computes
 * them (in double, rounded to f32, times af). */
__global__ void k_rope_table(float *tc, float *ts, int64_t rows, int32_t half, const float *inv, float af) {
    const int64_t total = rows * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t p = i / half;
        const float ang = __fmul_rn(__ll2float_rn(p), inv[i % half]);
        double s, c;
        sincos((double)ang, &s, &c);
        tc[i] = __fmul_rn((float)c, af);
        ts[i] = __fmul_rn((float)s, af);
    }
}

extern "C" cudaError_t zs_k_rope_table(cudaStream_t st, float *tab_cos, float *tab_sin, int64_t rows,
                                       int32_t half, const float *inv_freq, float af) {
    const size_t n = (size_t)rows * (size_t)half;
    if (n == 0) return cudaSuccess;
    k_rope_table<<<grid1(n, 256), 256, 0, st>>>(tab_cos, tab_sin, rows, half, inv_freq, af);
    return cudaGetLastError();
}

/* --- KV store ------------------------------------------------------------------------- */
__global__ void k_kv_store(zs_kern_kv_t kv, int32_t layer, const float *k, const float *v,
                           const int32_t *slot, int32_t ntok) {
    const int32_t hd = kv.head_dim, nkv = kv.nkv_heads;
    const int64_t total = (int64_t)ntok * nkv * hd;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int32_t d = (int32_t)(i % hd);
        const int64_t th = i / hd;
        const int32_t h = (int32_t)(th % nkv), t = (int32_t)(th / nkv);
        const int32_t sl = slot[t];
        const int32_t blk = sl / kv.block_size, off = sl % kv.block_size;
        unsigned char *base = (unsigned char *)kv.pool + (size_t)blk * kv.block_bytes +
                              (size_t)layer * kv.layer_stride + (size_t)h * kv.head_stride +
                              (size_t)off * hd * 2;
        ((__nv_bfloat16 *)base)[d] = __float2bfloat16_rn(k[i]);
        ((__nv_bfloat16 *)(base + kv.kv_stride))[d] = __float2bfloat16_rn(v[i]);
    }
}

extern "C" cudaError_t zs_k_kv_store(cudaStream_t st, const zs_kern_kv_t *kv, int32_t layer,
                                     const float *k, const float *v, const int32_t *slot,
                                     int32_t ntok) {
    const size_t n = (size_t)ntok * kv->nkv_heads * kv->head_dim;
    if (n == 0) return cudaSuccess;
    k_kv_store<<<grid1(n, 256), 256, 0, st>>>(*kv, layer, k, v, slot, ntok);
    return cudaGetLastError();
}

/* --- SiLU-mul, add, bias, conversions, gather ---------------------------------------------- */
__global__ void k_silu_mul(float *y, __nv_bfloat16 *ybf, const float *g, const float *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float a = g[i];
        const float v = a / (1.0f + expf(-a)) * u[i];
        y[i] = v;
        if (ybf) ybf[i] = __float2bfloat16_rn(v);
    }
}

extern "C" cudaError_t zs_k_silu_mul(cudaStream_t st, float *y, void *ybf, const float *g,
                                     const float *u, size_t n) {
    if (n == 0) return cudaSuccess;
    k_silu_mul<<<grid1(n, 256), 256, 0, st>>>(y, (__nv_bfloat16 *)ybf, g, u, n);
    return cudaGetLastError();
}

__global__ void k_add(float *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += x[i];
}

extern "C" cudaError_t zs_k_add(cudaStream_t st, float *y, const float *x, size_t n) {
    if (n == 0) return cudaSuccess;
    k_add<<<grid1(n, 256), 256, 0, st>>>(y, x, n);
    return cudaGetLastError();
}

__global__ void k_bias(float *y, const void *bias, int wdt, size_t total, int64_t cols) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] += wload(bias, wdt, (int64_t)(i % (size_t)cols));
}

extern "C" cudaError_t zs_k_bias(cudaStream_t st, float *y, const void *bias, int wdt, int32_t n,
                                 int64_t cols) {
    const size_t total = (size_t)n * (size_t)cols;
    if (total == 0) return cudaSuccess;
    k_bias<<<grid1(total, 256), 256, 0, st>>>(y, bias, wdt, total, cols);
    return cudaGetLastError();
}

__global__ void k_to_bf16(__nv_bfloat16 *d, const float *s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2bfloat16_rn(s[i]);
}

__global__ void k_to_f16(__half *d, const float *s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        d[i] = __float2half_rn(s[i]);
}

extern "C" cudaError_t zs_k_to_half(cudaStream_t st, void *dst, const float *src, size_t n,
                                    int to_f16) {
    if (n == 0) return cudaSuccess;
    if (to_f16) k_to_f16<<<grid1(n, 256), 256, 0, st>>>((__half *)dst, src, n);
    else k_to_bf16<<<grid1(n, 256), 256, 0, st>>>((__nv_bfloat16 *)dst, src, n);
    return cudaGetLastError();
}

__global__ void k_gather(float *y, const float *x, zs_k_rows_t rows, int32_t dim) {
    const int32_t i = blockIdx.y;
    const int64_t src = rows.r[i];
    for (int32_t d = blockIdx.x * blockDim.x + threadIdx.x; d < dim; d += gridDim.x * blockDim.x)
        y[(int64_t)i * dim + d] = x[src * dim + d];
}

extern "C" cudaError_t zs_k_gather(cudaStream_t st, float *y, const float *x, zs_k_rows_t rows,
                                   int32_t nrows, int32_t dim) {
    if (nrows <= 0) return cudaSuccess;
    dim3 g(grid1((size_t)dim, 256) > 64 ? 64 : grid1((size_t)dim, 256), (unsigned)nrows);
    k_gather<<<g, 256, 0, st>>>(y, x, rows, dim);
    return cudaGetLastError();
}
