/* CUDA backend matrix-vector products for decode-sized steps (a few token rows): y[n, rows] =
 * x[n, cols] @ W^T (+ bias) with W in bf16 or f16 and x, y float32. Weights stream once from
 * memory with 16-byte loads (one warp per output row, several loads in flight per lane), the
 * float32 activations are read in full precision (no rounding of x), accumulation is fp32.
 * cuBLAS handles larger steps (see cuda_backend.c). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

template <int NT>
__global__ void __launch_bounds__(256) k_gemv(float *__restrict__ y, const float *__restrict__ x,
                                              int32_t n, const void *__restrict__ W, int wdt,
                                              int64_t rows, int64_t cols, const void *bias,
                                              int bdt) {
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint4 *wr = (const uint4 *)((const unsigned char *)W + (size_t)r * cols * 2);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.f;
    const int64_t nv = cols / 8; /* 16-byte vectors per row */
#pragma unroll 4
    for (int64_t i = lane; i < nv; i += 32) {
        const uint4 u = __ldg(wr + i);
        float w[8];
        unpack8(u, wdt, w);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n) {
                const float4 *xv = (const float4 *)(x + (size_t)t * cols) + 2 * i;
                const float4 a = xv[0], b = xv[1];
                acc[t] += a.x * w[0] + a.y * w[1] + a.z * w[2] + a.w * w[3] + b.x * w[4] +
                          b.y * w[5] + b.z * w[6] + b.w * w[7];
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float v = acc[t];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        acc[t] = v;
    }
    if (lane == 0) {
        float bv = 0.f;
        if (bias) {
            if (bdt == ZS_KW_BF16) bv = __bfloat162float(((const __nv_bfloat16 *)bias)[r]);
            else if (bdt == ZS_KW_F16) bv = __half2float(((const __half *)bias)[r]);
            else bv = ((const float *)bias)[r];
        }
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < n) y[(size_t)t * rows + r] = acc[t] + bv;
    }
}

extern "C" int zs_k_gemv_supported(int32_t n, int64_t cols, int wdt) {
    return n >= 1 && n <= 8 && cols >= 8 && cols % 8 == 0 && (wdt == ZS_KW_BF16 || wdt == ZS_KW_F16);
}

extern "C" cudaError_t zs_k_gemv(cudaStream_t st, float *y, const float *x, int32_t n, const void *W,
                                 int wdt, int64_t rows, int64_t cols, const void *bias, int bdt) {
    if (!zs_k_gemv_supported(n, cols, wdt)) return cudaErrorInvalidValue;
    const unsigned blocks = (unsigned)((rows + 7) / 8);
    if (n == 1) k_gemv<1><<<blocks, 256, 0, st>>>(y, x, n, W, wdt, rows, cols, bias, bdt);
    else if (n == 2) k_gemv<2><<<blocks, 256, 0, st>>>(y, x, n, W, wdt, rows, cols, bias, bdt);
    else if (n <= 4) k_gemv<4><<<blocks, 256, 0, st>>>(y, x, n, W, wdt, rows, cols, bias, bdt);
    else k_gemv<8><<<blocks, 256, 0, st>>>(y, x, n, W, wdt, rows, cols, bias, bdt);
    return cudaGetLastError();
}
