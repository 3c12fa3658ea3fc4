/* Launchers of the CUDA backend's kernels (the .cu files of src/gpu/kernels), callable from C. Every
 * launcher enqueues on `st` and returns cudaGetLastError() (so a bad launch configuration is
 * reported at the call); execution errors surface at the next synchronization.
 *
 * Conventions: activations float32 row-major; weights in their file dtype (wdt: 0 = F32,
 * 1 = F16, 2 = BF16, see zs_kern_wdt); the KV pool in bf16 with the layout of kv_cache.h.
 * Per-step metadata lives in device memory (zs_kern_step_t pointers). */
#ifndef ZS_GPU_KERNELS_H
#define ZS_GPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { ZS_KW_F32 = 0, ZS_KW_F16 = 1, ZS_KW_BF16 = 2 };

/* Device view of one forward step (all pointers device memory, int32). */
typedef struct zs_kern_step {
    int32_t ntok, nseq, ntiles;
    const int32_t *ids, *pos, *seq, *slot; /* [ntok] */
    const int32_t *tile_first, *tile_count; /* [ntiles]: runs of <= 64 tokens of one sequence */
    const int32_t *tab_off, *tab_len;       /* [nseq]: offset/length of each block table */
    const int32_t *tables;                  /* concatenated block tables */
} zs_kern_step_t;

/* Device view of the KV pool layout (byte strides as in zs_kv_layout_t). */
typedef struct zs_kern_kv {
    void *pool;
    int32_t block_size, head_dim, nkv_heads;
    size_t block_bytes, layer_stride, kv_stride, head_stride;
} zs_kern_kv_t;

cudaError_t zs_k_embed(cudaStream_t st, float *x, const void *table, int wdt, int64_t dim,
                       const int32_t *ids, int32_t ntok);
/* x[t] = table[ids[t] - row0] for ids in [row0, row0 + nrows), else zeros. */
cudaError_t zs_k_embed_rows(cudaStream_t st, float *x, const void *table, int wdt, int64_t dim,
                            int64_t row0, int64_t nrows, const int32_t *ids, int32_t ntok);
/* y = x / rms(x) * w per row; optional bf16 copy of y (ybf may be NULL). */
cudaError_t zs_k_rmsnorm(cudaStream_t st, float *y, void *ybf, const float *x, int32_t n,
                         int32_t dim, const void *w, int wdt, float eps);
/* x[t, h, :] rotated with cos/sin rows tab_cos/tab_sin[pos[t]] (half floats each). */
cudaError_t zs_k_rope(cudaStream_t st, float *x, int32_t ntok, int32_t nheads, int32_t head_dim,
                      const int32_t *pos, const float *tab_cos, const float *tab_sin);
/* tab_cos/tab_sin[p * half + i] = cos/sin(p * inv_freq[i]) * af for p < rows: the f32 angle,
 * cos/sin in double rounded to f32, as the CPU backend computes them (the device's double
 * cos/sin may differ from the C library's in a double's last bit, which changes the rounded
 * f32 only in rare ties). inv_freq is device memory. */
cudaError_t zs_k_rope_table(cudaStream_t st, float *tab_cos, float *tab_sin, int64_t rows, int32_t half,
                            const float *inv_freq, float af);
cudaError_t zs_k_kv_store(cudaStream_t st, const zs_kern_kv_t *kv, int32_t layer, const float *k,
                          const float *v, const int32_t *slot, int32_t ntok);
/* y = silu(g) * u; optional bf16 copy (ybf may be NULL). */
cudaError_t zs_k_silu_mul(cudaStream_t st, float *y, void *ybf, const float *g, const float *u,
                          size_t n);
cudaError_t zs_k_add(cudaStream_t st, float *y, const float *x, size_t n);
/* y[r, c] += bias[c] for n rows of cols. */
cudaError_t zs_k_bias(cudaStream_t st, float *y, const void *bias, int wdt, int32_t n,
                      int64_t cols);
/* dst (bf16 when to_f16 == 0, else f16) = src, n elements. */
cudaError_t zs_k_to_half(cudaStream_t st, void *dst, const float *src, size_t n, int to_f16);
#define ZS_K_GATHER_MAX 32
typedef struct zs_k_rows { int32_t r[ZS_K_GATHER_MAX]; } zs_k_rows_t;
cudaError_t zs_k_gather(cudaStream_t st, float *y, const float *x, zs_k_rows_t rows, int32_t nrows,
                        int32_t dim);

/* y[n, rows] = x[n, cols] @ W^T (+ bias, any weight dtype or NULL) for W in bf16/f16 and
 * 1 <= n <= 8, cols % 8 == 0 (zs_k_gemv_supported); W rows 16-byte aligned. */
int zs_k_gemv_supported(int32_t n, int64_t cols, int wdt);
cudaError_t zs_k_gemv(cudaStream_t st, float *y, const float *x, int32_t n, const void *W, int wdt,
                      int64_t rows, int64_t cols, const void *bias, int bdt);
/* One launch over up to ZS_K_GEMV_SEGS matrices of the same input x[n, cols] and dtype wdt
 * (rows of segment i -> seg[i].y[t * seg[i].rows + row]); acc: y += product (+ bias);
 * pair: nseg == 2 (gate, up; equal rows, no bias): seg[0].y = silu(x Wg^T) * (x Wu^T). */
#define ZS_K_GEMV_SEGS 3
typedef struct zs_k_gemv_seg {
    const void *W, *bias;
    float *y;
    int64_t rows;
} zs_k_gemv_seg_t;
typedef struct zs_k_gemv {
    zs_k_gemv_seg_t seg[ZS_K_GEMV_SEGS];
    int32_t nseg, wdt, bdt, acc, pair;
} zs_k_gemv_t;
cudaError_t zs_k_gemv_multi(cudaStream_t st, const zs_k_gemv_t *a, const float *x, int32_t n,
                            int64_t cols);

/* Attention, tensor-core flash kernel (head_dim % 8 == 0, head_dim <= 128): one CTA per
 * (tile of <= 64 tokens of one sequence, query head). */
int zs_k_attn_mma_supported(int32_t head_dim);
cudaError_t zs_k_attn_prefill(cudaStream_t st, float *out, const float *q, const zs_kern_kv_t *kv,
                              int32_t layer, const zs_kern_step_t *s, int32_t nheads,
                              int32_t window, float scale);
/* Attention, general kernel (any head_dim): CTA per (token, kv head, key split) with the
 * query heads of the group, online softmax over key chunks, partial results combined by a
 * second kernel when nsplit > 1. part: scratch of zs_k_attn_split_floats floats. */
size_t zs_k_attn_split_floats(int32_t ntok, int32_t nheads, int32_t head_dim, int32_t nsplit);
/* Keys per chunk of the general kernel (a split should cover at least one chunk). */
int32_t zs_k_attn_split_chunk(int32_t head_dim);
cudaError_t zs_k_attn_split(cudaStream_t st, float *out, const float *q, const zs_kern_kv_t *kv,
                            int32_t layer, const zs_kern_step_t *s, int32_t nheads,
                            int32_t window, float scale, int32_t nsplit, float *part);

/* KV import by the SMs: for every i < n, `bytes` at offset `off` of the host block
 * tab[i].host (page-locked host memory mapped for the device; 16-byte aligned) go to the same
 * offset of pool block tab[i].block. tab is device memory. A few CTAs only, so that a step
 * running beside keeps the SMs. zs_k_kv_move_load loads the kernel (lazy module loading
 * would otherwise do it at the first import). */
typedef struct zs_k_kv_host {
    const char *host; /* device address of the host block */
    int64_t block;    /* pool block id */
} zs_k_kv_host_t;
cudaError_t zs_k_kv_move(cudaStream_t st, void *pool, const zs_k_kv_host_t *tab, int32_t n,
                         size_t block_bytes, size_t off, size_t bytes);
cudaError_t zs_k_kv_move_load(void);

#ifdef __cplusplus
}
#endif
#endif
