/* KV block imports done by the SMs: page-locked host memory read over the bus through its
 * device mapping into the pool, one layer slice of many blocks per launch, beside the step
 * that consumes the layers already in (one launch instead of one copy-engine copy per block
 * and layer). */
#include "gpu/kernels/kernels.h"

namespace {

constexpr int kThreads = 512;
constexpr int kUnroll = 4;   /* 16-byte loads in flight per thread */
constexpr int kMaxCtas = 32; /* enough loads in flight for the bus; leaves the SMs to compute */

__global__ void kv_move(char *__restrict__ pool, const zs_k_kv_host_t *__restrict__ tab, int32_t n,
                        size_t block_bytes, size_t off, uint32_t vecs) {
    const size_t total = (size_t)n * vecs, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t base = (size_t)blockIdx.x * blockDim.x + threadIdx.x; base < total;
         base += stride * kUnroll) {
        uint4 v[kUnroll];
        uint4 *dst[kUnroll];
#pragma unroll
        for (int k = 0; k < kUnroll; k++) {
            const size_t i = base + (size_t)k * stride;
            dst[k] = nullptr;
            if (i < total) {
                const size_t b = i / vecs, e = i % vecs;
                const zs_k_kv_host_t h = tab[b];
                v[k] = reinterpret_cast<const uint4 *>(h.host + off)[e];
                dst[k] = reinterpret_cast<uint4 *>(pool + (size_t)h.block * block_bytes + off) + e;
            }
        }
#pragma unroll
        for (int k = 0; k < kUnroll; k++)
            if (dst[k]) *dst[k] = v[k];
    }
}

}  // namespace

extern "C" cudaError_t zs_k_kv_move(cudaStream_t st, void *pool, const zs_k_kv_host_t *tab, int32_t n,
                                    size_t block_bytes, size_t off, size_t bytes) {
    if (n <= 0 || bytes == 0) return cudaSuccess;
    if (bytes % 16 || off % 16 || block_bytes % 16 || bytes / 16 > UINT32_MAX) return cudaErrorInvalidValue;
    const uint32_t vecs = (uint32_t)(bytes / 16);
    const size_t per_cta = (size_t)kThreads * kUnroll;
    size_t ctas = ((size_t)n * vecs + per_cta - 1) / per_cta;
    if (ctas > kMaxCtas) ctas = kMaxCtas;
    kv_move<<<(unsigned)ctas, kThreads, 0, st>>>(static_cast<char *>(pool), tab, n, block_bytes, off, vecs);
    return cudaGetLastError();
}

extern "C" cudaError_t zs_k_kv_move_load(void) {
    cudaFuncAttributes a;
    return cudaFuncGetAttributes(&a, kv_move);
}
