/* CUDA backend matrix-vector products for decode-sized steps (a few token rows): y[n, rows] =
 * x[n, cols] @ W^T (+ bias) with W in bf16 or f16 and x, y float32. Weights stream once from
 * memory with 16-byte loads (one warp per output row, several loads in flight per lane), the
 * float32 activations are read in full precision (no rounding of x), accumulation is fp32.
 * One launch can cover several matrices of the same input (q/k/v), the gate/up pair with
 * SiLU-mul in the epilogue, or add into the output (residual). cuBLAS handles larger steps
 * (see cuda_backend.c). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <string.h>

#include "gpu/kernels/kernels.h"

static __device__ __forceinline__ void unpack8(const uint4 u, int wdt, float w[8]) {
    const uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (wdt == ZS_KW_BF16) {
            w[2 * i] = __uint_as_float(v[i] << 16);
            w[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
        } else {
            __half2 h = *(const __half2 *)&v[i];
            const float2 f = __half22float2(h);
            w[2 * i] = f.x;
            w[2 * i + 1] = f.y;
        }
    }
}

/* Rows r of the launch map onto the segments in order (segment i holds rows of W_i, output
 * y_i[t * rows_i + row]). PAIR: one segment pair (gate, up) of equal rows; each warp reads both
 * rows and writes silu(gate) * up. ACC: y += result (residual stream). */
template <int NT, int PAIR>
__global__ void __launch_bounds__(256) k_gemv(zs_k_gemv_t a, const float *__restrict__ x, int32_t n,
                                              int64_t cols) {
    int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    /* segment of row r (constant indices only: the parameters stay out of local memory) */
    const void *W = a.seg[0].W, *bias = a.seg[0].bias;
    float *y = a.seg[0].y;
    int64_t rows = a.seg[0].rows;
    if (!PAIR && a.nseg > 1 && r >= rows) {
        r -= rows;
        W = a.seg[1].W;
        bias = a.seg[1].bias;
        y = a.seg[1].y;
        rows = a.seg[1].rows;
        if (a.nseg > 2 && r >= rows) {
            r -= rows;
            W = a.seg[2].W;
            bias = a.seg[2].bias;
            y = a.seg[2].y;
            rows = a.seg[2].rows;
        }
    }
    if (r >= rows) return;
    const uint4 *wr = (const uint4 *)((const unsigned char *)W + (size_t)r * cols * 2);
    const uint4 *wu =
        PAIR ? (const uint4 *)((const unsigned char *)a.seg[1].W + (size_t)r * cols * 2) : wr;
    const int wdt = a.wdt;
    float acc[NT], accu[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = accu[t] = 0.f;
    const int64_t nv = cols / 8; /* 16-byte vectors per row */
#pragma unroll 4
    for (int64_t i = lane; i < nv; i += 32) {
        const uint4 u = __ldg(wr + i);
        float w[8], w2[8];
        unpack8(u, wdt, w);
        if (PAIR) unpack8(__ldg(wu + i), wdt, w2);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n) {
                const float4 *xv = (const float4 *)(x + (size_t)t * cols) + 2 * i;
                const float4 p = xv[0], q = xv[1];
                acc[t] += p.x * w[0] + p.y * w[1] + p.z * w[2] + p.w * w[3] + q.x * w[4] +
                          q.y * w[5] + q.z * w[6] + q.w * w[7];
                if (PAIR)
                    accu[t] += p.x * w2[0] + p.y * w2[1] + p.z * w2[2] + p.w * w2[3] +
                               q.x * w2[4] + q.y * w2[5] + q.z * w2[6] + q.w * w2[7];
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t], vu = accu[t];
        for (int o = 16; o > 0; o >>= 1) {
            v += __shfl_xor_sync(0xffffffffu, v, o);
            if (PAIR) vu += __shfl_xor_sync(0xffffffffu, vu, o);
        }
        acc[t] = v;
        accu[t] = vu;
    }
    if (lane == 0) {
        if (PAIR) {
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < n) {
                    const float g = acc[t];
                    y[(size_t)t * rows + r] = g / (1.0f + expf(-g)) * accu[t];
                }
            }
            return;
        }
        float bv = 0.f;
        if (bias) {
            if (a.bdt == ZS_KW_BF16) bv = __bfloat162float(((const __nv_bfloat16 *)bias)[r]);
            else if (a.bdt == ZS_KW_F16) bv = __half2float(((const __half *)bias)[r]);
            else bv = ((const float *)bias)[r];
        }
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n) {
                if (a.acc) y[(size_t)t * rows + r] += acc[t] + bv;
                else y[(size_t)t * rows + r] = acc[t] + bv;
            }
        }
    }
}

extern "C" int zs_k_gemv_supported(int32_t n, int64_t cols, int wdt) {
    return n >= 1 && n <= 8 && cols >= 8 && cols % 8 == 0 && (wdt == ZS_KW_BF16 || wdt == ZS_KW_F16);
}

template <int PAIR>
static void launch_gemv(cudaStream_t st, const zs_k_gemv_t *a, const float *x, int32_t n,
                        int64_t cols, unsigned blocks) {
    if (n == 1) k_gemv<1, PAIR><<<blocks, 256, 0, st>>>(*a, x, n, cols);
    else if (n == 2) k_gemv<2, PAIR><<<blocks, 256, 0, st>>>(*a, x, n, cols);
    else if (n <= 4) k_gemv<4, PAIR><<<blocks, 256, 0, st>>>(*a, x, n, cols);
    else k_gemv<8, PAIR><<<blocks, 256, 0, st>>>(*a, x, n, cols);
}

extern "C" cudaError_t zs_k_gemv_multi(cudaStream_t st, const zs_k_gemv_t *a, const float *x,
                                       int32_t n, int64_t cols) {
    if (!zs_k_gemv_supported(n, cols, a->wdt) || a->nseg < 1 || a->nseg > ZS_K_GEMV_SEGS ||
        (a->pair && (a->nseg != 2 || a->seg[0].rows != a->seg[1].rows || a->acc)))
        return cudaErrorInvalidValue;
    int64_t total = 0;
    for (int i = 0; i < (a->pair ? 1 : a->nseg); i++) total += a->seg[i].rows;
    if (total < 1) return cudaSuccess;
    const unsigned blocks = (unsigned)((total + 7) / 8);
    if (a->pair) launch_gemv<1>(st, a, x, n, cols, blocks);
    else launch_gemv<0>(st, a, x, n, cols, blocks);
    return cudaGetLastError();
}

extern "C" cudaError_t zs_k_gemv(cudaStream_t st, float *y, const float *x, int32_t n, const void *W,
                                 int wdt, int64_t rows, int64_t cols, const void *bias, int bdt) {
    zs_k_gemv_t a;
    memset(&a, 0, sizeof a);
    a.nseg = 1;
    a.wdt = wdt;
    a.bdt = bdt;
    a.seg[0].W = W;
    a.seg[0].bias = bias;
    a.seg[0].y = y;
    a.seg[0].rows = rows;
    return zs_k_gemv_multi(st, &a, x, n, cols);
}
