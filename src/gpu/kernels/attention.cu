/* CUDA backend attention over the bf16 paged KV cache (layout of kv_cache.h), causal with an
 * optional sliding window, GQA by head groups. Two kernels:
 *  - k_attn_mma: flash-attention style prefill on tensor cores (mma.sync m16n8k16 bf16, fp32
 *    accumulate). One CTA of 4 warps per (tile of <= 64 consecutive tokens of one sequence,
 *    query head); K/V tiles of 64 keys gathered through the block table with cp.async into
 *    two shared-memory stages; scores, online softmax (running max and sum) and the output
 *    accumulator stay in registers, so no score matrix exists at any length.
 *  - k_attn_split: general kernel for any head_dim and for decode: one CTA per (token, kv
 *    head, key split, group of query heads), keys scored 64 at a time with an online softmax;
 *    with several splits the partial (max, sum, accumulator) triples are merged by
 *    k_attn_combine (split-K "flash decoding"). */
#include <cuda_bf16.h>
#include <stdint.h>

#include "gpu/kernels/kernels.h"

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ const unsigned char *kv_row(const zs_kern_kv_t &kv,
                                                             const int32_t *tab, int32_t layer,
                                                             int32_t kvh, int32_t kp) {
    const int32_t blk = tab[kp / kv.block_size], off = kp % kv.block_size;
    return (const unsigned char *)kv.pool + (size_t)blk * kv.block_bytes +
           (size_t)layer * kv.layer_stride + (size_t)kvh * kv.head_stride +
           (size_t)off * kv.head_dim * 2;
}

/* ===================================== tensor-core prefill ================================ */
#define MMA_BM 64
#define MMA_BN 64

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

static __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *p) {
    const unsigned addr = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
static __device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;\n"); }
static __device__ __forceinline__ void cp_async_wait0() { asm volatile("cp.async.wait_group 0;\n"); }

template <int HDP>
__global__ void __launch_bounds__(128) k_attn_mma(float *out, const float *q, zs_kern_kv_t kv,
                                                  int32_t layer, zs_kern_step_t s, int32_t nheads,
                                                  int32_t group, int32_t window, float scale_log2) {
    constexpr int LD = HDP + 8; /* bf16 per shared row: 16-byte rows, conflict-free fragments */
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem;            /* [2][BN][LD] */
    bf16 *Vs = Ks + 2 * MMA_BN * LD;    /* [2][BN][LD] */
    __shared__ int32_t qpos_s[MMA_BM];

    const int32_t bid = blockIdx.x;
    const int32_t tile = s.ntiles - 1 - bid / nheads; /* longest tiles first */
    const int32_t h = bid % nheads;
    const int32_t first = s.tile_first[tile], cnt = s.tile_count[tile];
    const int32_t sq = s.seq[first];
    const int32_t *tab = s.tables + s.tab_off[sq];
    const int32_t kvh = h / group, hd = kv.head_dim;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;

    if (tid < MMA_BM) qpos_s[tid] = tid < cnt ? s.pos[first + tid] : -1;
    const int32_t pfirst = s.pos[first], plast = s.pos[first + cnt - 1];
    const int32_t klo = window > 0 && pfirst - window + 1 > 0 ? pfirst - window + 1 : 0;
    const int32_t khi = plast;
    const int32_t nkt = (khi - klo + MMA_BN) / MMA_BN;

    /* zero the padding columns [hd, HDP) of both stages once */
    if (hd < HDP) {
        const int padw = HDP - hd;
        for (int i = tid; i < 2 * 2 * MMA_BN * padw; i += blockDim.x) {
            const int r = i / padw, c = hd + i % padw;
            Ks[r * LD + c] = __float2bfloat16_rn(0.f); /* Ks and Vs are adjacent: 4*BN rows */
        }
    }
    const int cpr = hd / 8; /* 16-byte chunks per row */
    const size_t kvs = kv.kv_stride;
    auto load_tile = [&](int stage, int32_t kbase) {
        bf16 *kd = Ks + stage * MMA_BN * LD, *vd = Vs + stage * MMA_BN * LD;
        for (int i = tid; i < MMA_BN * cpr; i += blockDim.x) {
            const int r = i / cpr, c = i % cpr;
            const int32_t kp = kbase + r;
            const bool valid = kp <= khi;
            const unsigned char *src =
                valid ? kv_row(kv, tab, layer, kvh, kp) + c * 16 : (const unsigned char *)kv.pool;
            cp_async16(kd + r * LD + c * 8, src, valid ? 16 : 0);
            cp_async16(vd + r * LD + c * 8, valid ? src + kvs : src, valid ? 16 : 0);
        }
    };
    load_tile(0, klo);
    cp_async_commit();
    __syncthreads(); /* qpos_s */

    const int m0 = warp * 16;
    const bool warp_active = m0 < cnt;
    /* Q fragments (A operand, row-major 16 x 16 per k step) straight from global fp32 */
    uint32_t qa[HDP / 16][4];
#pragma unroll
    for (int kk = 0; kk < HDP / 16; kk++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = m0 + g + (i & 1) * 8, c = kk * 16 + t4 * 2 + (i >> 1) * 8;
            float a = 0.f, b = 0.f;
            if (r < cnt && c < hd) {
                const float2 v = *(const float2 *)(q + ((size_t)(first + r) * nheads + h) * hd + c);
                a = v.x;
                b = v.y;
            }
            qa[kk][i] = pack_bf16(a, b);
        }
    const int32_t qp0 = qpos_s[m0 + g], qp1 = qpos_s[m0 + g + 8];
    const int32_t qmin = m0 + 15 < cnt ? qpos_s[m0] : -1;
    const int32_t qlast = m0 + 15 < cnt ? m0 + 15 : cnt - 1;
    const int32_t qmax = qpos_s[qlast < m0 ? m0 : qlast];

    float o[HDP / 8][4];
#pragma unroll
    for (int j = 0; j < HDP / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float mr0 = -INFINITY, mr1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int32_t kt = 0; kt < nkt; kt++) {
        const int32_t kbase = klo + kt * MMA_BN;
        if (kt + 1 < nkt) {
            load_tile((kt + 1) & 1, kbase + MMA_BN);
            cp_async_commit();
            cp_async_wait1();
        } else {
            cp_async_wait0();
        }
        __syncthreads();
        if (warp_active) {
            const bf16 *Kb = Ks + (kt & 1) * MMA_BN * LD;
            const bf16 *Vb = Vs + (kt & 1) * MMA_BN * LD;
            float sc[MMA_BN / 8][4];
#pragma unroll
            for (int j = 0; j < MMA_BN / 8; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HDP / 16; kk++)
#pragma unroll
                for (int j = 0; j < MMA_BN / 8; j++) {
                    const bf16 *kr = Kb + (j * 8 + g) * LD + kk * 16 + t4 * 2;
                    mma16816(sc[j], qa[kk], *(const uint32_t *)kr, *(const uint32_t *)(kr + 8));
                }
            const bool full = kbase + MMA_BN - 1 <= qmin && (window <= 0 || kbase > qmax - window);
#pragma unroll
            for (int j = 0; j < MMA_BN / 8; j++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    float v = sc[j][c] * scale_log2;
                    if (!full) {
                        const int32_t key = kbase + j * 8 + t4 * 2 + (c & 1);
                        const int32_t qp = c < 2 ? qp0 : qp1;
                        if (!(key <= qp && (window <= 0 || key > qp - window))) v = -INFINITY;
                    }
                    sc[j][c] = v;
                }
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < MMA_BN / 8; j++) {
                mx0 = fmaxf(mx0, fmaxf(sc[j][0], sc[j][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[j][2], sc[j][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float mn0 = fmaxf(mr0, mx0), mn1 = fmaxf(mr1, mx1);
            const float mu0 = mn0 == -INFINITY ? 0.f : mn0, mu1 = mn1 == -INFINITY ? 0.f : mn1;
            const float cr0 = exp2f(mr0 - mu0), cr1 = exp2f(mr1 - mu1);
            mr0 = mn0;
            mr1 = mn1;
            l0 *= cr0;
            l1 *= cr1;
#pragma unroll
            for (int j = 0; j < HDP / 8; j++) {
                o[j][0] *= cr0;
                o[j][1] *= cr0;
                o[j][2] *= cr1;
                o[j][3] *= cr1;
            }
#pragma unroll
            for (int j = 0; j < MMA_BN / 8; j++) {
                sc[j][0] = exp2f(sc[j][0] - mu0);
                sc[j][1] = exp2f(sc[j][1] - mu0);
                sc[j][2] = exp2f(sc[j][2] - mu1);
                sc[j][3] = exp2f(sc[j][3] - mu1);
                l0 += sc[j][0] + sc[j][1];
                l1 += sc[j][2] + sc[j][3];
            }
#pragma unroll
            for (int kk = 0; kk < MMA_BN / 16; kk++) {
                uint32_t pa[4];
                pa[0] = pack_bf16(sc[2 * kk][0], sc[2 * kk][1]);
                pa[1] = pack_bf16(sc[2 * kk][2], sc[2 * kk][3]);
                pa[2] = pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
                pa[3] = pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
                const int vr = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
#pragma unroll
                for (int jd = 0; jd < HDP / 16; jd++) {
                    uint32_t b[4];
                    ldsm_x4_trans(b, Vb + vr * LD + jd * 16 + (lane >> 4) * 8);
                    mma16816(o[2 * jd], pa, b[0], b[1]);
                    mma16816(o[2 * jd + 1], pa, b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* stage (kt & 1) is reloaded next iteration */
    }
    if (!warp_active) return;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
    const int r0 = m0 + g, r1 = m0 + g + 8;
#pragma unroll
    for (int j = 0; j < HDP / 8; j++) {
        const int c = j * 8 + t4 * 2;
        if (c < hd) {
            if (r0 < cnt)
                *(float2 *)(out + ((size_t)(first + r0) * nheads + h) * hd + c) =
                    make_float2(o[j][0] * i0, o[j][1] * i0);
            if (r1 < cnt)
                *(float2 *)(out + ((size_t)(first + r1) * nheads + h) * hd + c) =
                    make_float2(o[j][2] * i1, o[j][3] * i1);
        }
    }
}

extern "C" int zs_k_attn_mma_supported(int32_t head_dim) {
    return head_dim > 0 && head_dim % 8 == 0 && head_dim <= 128;
}

static int g_mma_attr_done;

extern "C" cudaError_t zs_k_attn_prefill(cudaStream_t st, float *out, const float *q,
                                         const zs_kern_kv_t *kv, int32_t layer,
                                         const zs_kern_step_t *s, int32_t nheads, int32_t window,
                                         float scale) {
    if (s->ntiles <= 0) return cudaSuccess;
    if (!zs_k_attn_mma_supported(kv->head_dim)) return cudaErrorInvalidValue;
    const float sl2 = scale * 1.4426950408889634f;
    const int32_t group = nheads / kv->nkv_heads;
    const unsigned nblk = (unsigned)s->ntiles * (unsigned)nheads;
    if (!g_mma_attr_done) {
        cudaError_t e = cudaFuncSetAttribute(k_attn_mma<128>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             2 * 2 * MMA_BN * (128 + 8) * 2);
        if (e != cudaSuccess) return e;
        e = cudaFuncSetAttribute(k_attn_mma<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 2 * 2 * MMA_BN * (64 + 8) * 2);
        if (e != cudaSuccess) return e;
        g_mma_attr_done = 1;
    }
    if (kv->head_dim <= 64)
        k_attn_mma<64><<<nblk, 128, 2 * 2 * MMA_BN * (64 + 8) * 2, st>>>(
            out, q, *kv, layer, *s, nheads, group, window, sl2);
    else
        k_attn_mma<128><<<nblk, 128, 2 * 2 * MMA_BN * (128 + 8) * 2, st>>>(
            out, q, *kv, layer, *s, nheads, group, window, sl2);
    return cudaGetLastError();
}

/* ===================================== general / decode =================================== */
#define SPLIT_CHMAX 64     /* keys per chunk at most */
#define SPLIT_KVBYTES 8192 /* shared bytes for the K (and again for the V) chunk */
#define SPLIT_QMAX 2048    /* floats of q (and of the accumulator) per CTA */
#define SPLIT_THREADS 128

static int split_hb(int32_t group, int32_t hd) {
    int hb = SPLIT_QMAX / hd;
    if (hb > 16) hb = 16;
    if (hb < 1) hb = 1;
    return group < hb ? group : hb;
}

static int split_chunk(int32_t hd) {
    int ch = SPLIT_KVBYTES / (hd * 2 + 4); /* K rows are padded by one word */
    return ch > SPLIT_CHMAX ? SPLIT_CHMAX : ch;
}

__global__ void __launch_bounds__(SPLIT_THREADS)
k_attn_split(float *out, const float *q, zs_kern_kv_t kv, int32_t layer, zs_kern_step_t s,
             int32_t nheads, int32_t group, int32_t hb, int32_t nsub, int32_t window, float scale,
             int32_t nsplit, int32_t ch, float *part) {
    extern __shared__ float sm[];
    const int32_t hd = kv.head_dim, hw = hd / 2, kld = hw + 1; /* words per K row (padded) */
    float *q_s = sm;                      /* [hb][hd] */
    float *acc = q_s + hb * hd;           /* [hb][hd] */
    float *p_s = acc + hb * hd;           /* [hb][CHMAX] */
    float *m_s = p_s + hb * SPLIT_CHMAX;  /* [hb] */
    float *l_s = m_s + hb;                /* [hb] */
    float *c_s = l_s + hb;                /* [hb] */
    uint32_t *k_s = (uint32_t *)(c_s + hb); /* [ch][kld] bf16 pairs */
    uint32_t *v_s = k_s + ch * kld;          /* [ch][hw] */

    const int32_t t = blockIdx.x, kvh = blockIdx.y;
    const int32_t split = blockIdx.z / nsub, sub = blockIdx.z % nsub;
    const int32_t h0 = kvh * group + sub * hb;
    const int32_t nh = group - sub * hb < hb ? group - sub * hb : hb;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int32_t pos = s.pos[t];
    const int32_t *tab = s.tables + s.tab_off[s.seq[t]];
    const int32_t lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    const int32_t len = pos - lo + 1;
    const int32_t per = (len + nsplit - 1) / nsplit;
    const int32_t kb = lo + split * per;
    int32_t ke = kb + per - 1;
    if (ke > pos) ke = pos;

    for (int i = tid; i < nh * hd; i += blockDim.x) {
        const int hh = i / hd, d = i % hd;
        q_s[i] = q[((size_t)t * nheads + h0 + hh) * hd + d] * scale;
        acc[i] = 0.f;
    }
    if (tid < nh) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.f;
    }
    for (int32_t c0 = kb; c0 <= ke; c0 += ch) {
        const int32_t cnt = ke - c0 + 1 < ch ? ke - c0 + 1 : ch;
        __syncthreads(); /* previous chunk fully consumed; q_s / m_s ready on the first */
        for (int i = tid; i < cnt * hw; i += blockDim.x) {
            const int j = i / hw, w = i % hw;
            const uint32_t *row = (const uint32_t *)kv_row(kv, tab, layer, kvh, c0 + j);
            k_s[j * kld + w] = row[w];
            v_s[j * hw + w] = *(const uint32_t *)((const unsigned char *)row + kv.kv_stride + 4 * w);
        }
        __syncthreads();
        for (int i = tid; i < nh * cnt; i += blockDim.x) {
            const int hh = i / cnt, j = i % cnt;
            const uint32_t *kr = k_s + j * kld;
            const float *qv = q_s + hh * hd;
            float a0 = 0.f, a1 = 0.f;
            for (int w = 0; w < hw; w++) {
                const uint32_t u = kr[w];
                a0 += qv[2 * w] * __uint_as_float(u << 16);
                a1 += qv[2 * w + 1] * __uint_as_float(u & 0xffff0000u);
            }
            p_s[hh * SPLIT_CHMAX + j] = a0 + a1;
        }
        __syncthreads();
        for (int hh = warp; hh < nh; hh += blockDim.x / 32) {
            float mx = -INFINITY;
            for (int j = lane; j < cnt; j += 32) mx = fmaxf(mx, p_s[hh * SPLIT_CHMAX + j]);
            for (int o2 = 16; o2 > 0; o2 >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
            const float mold = m_s[hh], mn = fmaxf(mold, mx);
            float sum = 0.f;
            for (int j = lane; j < cnt; j += 32) {
                const float e = expf(p_s[hh * SPLIT_CHMAX + j] - mn);
                p_s[hh * SPLIT_CHMAX + j] = e;
                sum += e;
            }
            for (int o2 = 16; o2 > 0; o2 >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o2);
            if (lane == 0) {
                const float cr = expf(mold - mn); /* mold = -inf: 0 */
                c_s[hh] = cr;
                l_s[hh] = l_s[hh] * cr + sum;
                m_s[hh] = mn;
            }
        }
        __syncthreads();
        const bf16 *vb = (const bf16 *)v_s;
        for (int i = tid; i < nh * hd; i += blockDim.x) {
            const int hh = i / hd, d = i % hd;
            float a = acc[i] * c_s[hh];
            const float *p = p_s + hh * SPLIT_CHMAX;
            for (int j = 0; j < cnt; j++) a += p[j] * __bfloat162float(vb[j * hd + d]);
            acc[i] = a;
        }
    }
    __syncthreads();
    for (int i = tid; i < nh * hd; i += blockDim.x) {
        const int hh = i / hd, d = i % hd;
        const int32_t h = h0 + hh;
        if (nsplit == 1) {
            const float l = l_s[hh];
            out[((size_t)t * nheads + h) * hd + d] = l > 0.f ? acc[i] / l : 0.f;
        } else {
            float *pp = part + (((size_t)t * nheads + h) * nsplit + split) * (size_t)(hd + 2);
            pp[d] = acc[i];
            if (d == 0) {
                pp[hd] = m_s[hh];
                pp[hd + 1] = l_s[hh];
            }
        }
    }
}

__global__ void k_attn_combine(float *out, const float *part, int32_t hd, int32_t nsplit) {
    const size_t th = blockIdx.x; /* t * nheads + h */
    const float *pp = part + th * nsplit * (size_t)(hd + 2);
    float M = -INFINITY;
    for (int i = 0; i < nsplit; i++) M = fmaxf(M, pp[(size_t)i * (hd + 2) + hd]);
    float L = 0.f;
    for (int i = 0; i < nsplit; i++) {
        const float m = pp[(size_t)i * (hd + 2) + hd];
        if (m != -INFINITY) L += expf(m - M) * pp[(size_t)i * (hd + 2) + hd + 1];
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float a = 0.f;
        for (int i = 0; i < nsplit; i++) {
            const float m = pp[(size_t)i * (hd + 2) + hd];
            if (m != -INFINITY) a += expf(m - M) * pp[(size_t)i * (hd + 2) + d];
        }
        out[th * hd + d] = L > 0.f ? a / L : 0.f;
    }
}

extern "C" size_t zs_k_attn_split_floats(int32_t ntok, int32_t nheads, int32_t head_dim,
                                         int32_t nsplit) {
    return nsplit <= 1 ? 0 : (size_t)ntok * nheads * nsplit * (size_t)(head_dim + 2);
}

extern "C" int32_t zs_k_attn_split_chunk(int32_t head_dim) { return split_chunk(head_dim); }

extern "C" cudaError_t zs_k_attn_split(cudaStream_t st, float *out, const float *q,
                                       const zs_kern_kv_t *kv, int32_t layer,
                                       const zs_kern_step_t *s, int32_t nheads, int32_t window,
                                       float scale, int32_t nsplit, float *part) {
    if (s->ntok <= 0) return cudaSuccess;
    const int32_t hd = kv->head_dim, group = nheads / kv->nkv_heads;
    if (hd < 2 || hd % 2 || hd > 1024) return cudaErrorInvalidValue;
    const int32_t hb = split_hb(group, hd), nsub = (group + hb - 1) / hb, ch = split_chunk(hd);
    if (nsplit < 1) nsplit = 1;
    const size_t shm = ((size_t)2 * hb * hd + (size_t)hb * SPLIT_CHMAX + 3 * (size_t)hb) * 4 +
                       (size_t)ch * (hd / 2 + 1) * 4 + (size_t)ch * (hd / 2) * 4;
    if (shm > 48 * 1024) return cudaErrorInvalidValue;
    dim3 grid((unsigned)s->ntok, (unsigned)kv->nkv_heads, (unsigned)(nsplit * nsub));
    k_attn_split<<<grid, SPLIT_THREADS, shm, st>>>(out, q, *kv, layer, *s, nheads, group, hb, nsub,
                                                   window, scale, nsplit, ch, part);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || nsplit == 1) return e;
    k_attn_combine<<<(unsigned)((size_t)s->ntok * nheads), 128, 0, st>>>(out, part, hd, nsplit);
    return cudaGetLastError();
}
