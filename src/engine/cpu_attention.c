/* CPU backend attention over the paged KV cache: one task per (token, query head), keys and
 * values read block by block through the sequence's block table, softmax computed online
 * (running max and sum, flash style) so no score matrix is ever materialized. Works the same
 * for prefill (many tokens per sequence) and decode (one); causality and the sliding window
 * come from each token's position. */
#include <math.h>

#include "engine/cpu_backend.h"
#include "zerostart/model.h"

#define CHUNK 64 /* key positions scored at a time */

typedef struct {
    float *out;
    const float *q;
    const unsigned char *pool;
    const zs_kv_layout_t *l;
    const zs_fwd_batch_t *bt;
    int32_t layer, nheads, group, window;
    float scale;
} attn_ctx_t;

static void attn_task(void *vctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const attn_ctx_t *c = vctx;
    const zs_kv_layout_t *l = c->l;
    const int32_t hd = l->head_dim, bs = l->block_size;
    float acc[ZS_MODEL_MAX_HEAD_DIM];
    float s[CHUNK];
    for (int64_t it = begin; it < end; it++) {
        const int32_t t = (int32_t)(it / c->nheads), h = (int32_t)(it % c->nheads);
        const int32_t kvh = h / c->group;
        const float *qv = c->q + ((int64_t)t * c->nheads + h) * hd;
        const int32_t seq = c->bt->tok_seq[t];
        const int32_t *blocks = c->bt->seq_blocks[seq];
        const int64_t pos = c->bt->tok_pos[t];
        int64_t lo = 0;
        if (c->window > 0 && pos - c->window + 1 > 0) lo = pos - c->window + 1;
        float m = -INFINITY, sum = 0.0f;
        for (int32_t d = 0; d < hd; d++) acc[d] = 0.0f;
        for (int64_t p = lo; p <= pos;) {
            const int32_t bi = (int32_t)(p / bs), off = (int32_t)(p % bs);
            int64_t cnt = bs - off;
            if (cnt > pos - p + 1) cnt = pos - p + 1;
            if (cnt > CHUNK) cnt = CHUNK;
            const float *K = (const float *)(c->pool + zs_kv_offset(l, blocks[bi], c->layer, 0, kvh, off));
            const float *V = (const float *)(c->pool + zs_kv_offset(l, blocks[bi], c->layer, 1, kvh, off));
            float bm = -INFINITY;
            for (int64_t j = 0; j < cnt; j++) {
                const float *kj = K + j * hd;
                float a[8] = {0};
                int32_t d = 0;
                for (; d + 8 <= hd; d += 8)
                    for (int u = 0; u < 8; u++) a[u] += qv[d + u] * kj[d + u];
                float dot = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
                for (; d < hd; d++) dot += qv[d] * kj[d];
                s[j] = dot * c->scale;
                if (s[j] > bm) bm = s[j];
            }
            const float nm = bm > m ? bm : m;
            const float corr = expf(m - nm); /* m = -inf on the first chunk: 0 */
            sum *= corr;
            for (int32_t d = 0; d < hd; d++) acc[d] *= corr;
            for (int64_t j = 0; j < cnt; j++) {
                const float e = expf(s[j] - nm);
                sum += e;
                const float *vj = V + j * hd;
                for (int32_t d = 0; d < hd; d++) acc[d] += e * vj[d];
            }
            m = nm;
            p += cnt;
        }
        float *o = c->out + ((int64_t)t * c->nheads + h) * hd;
        const float inv = 1.0f / sum; /* sum >= 1: the max term contributes exp(0) */
        for (int32_t d = 0; d < hd; d++) o[d] = acc[d] * inv;
    }
}

int zs_cpu_attention(zs_backend_t *b, float *out, const float *q, const void *pool,
                     const zs_kv_layout_t *l, int32_t layer, int32_t nheads, int32_t window,
                     float scale, zs_err_t *err) {
    zs_cpu_backend_t *cb = (zs_cpu_backend_t *)b;
    if (!cb->have_batch) return zs_err_set(err, ZS_ESTATE, "cpu attention: no batch begun");
    if (l->dtype != ZS_F32)
        return zs_err_set(err, ZS_EUNSUPPORTED, "cpu attention: KV cache dtype must be F32");
    if (nheads < l->nkv_heads || nheads % l->nkv_heads != 0 || l->head_dim > ZS_MODEL_MAX_HEAD_DIM)
        return zs_err_set(err, ZS_EINVAL, "cpu attention: %d heads over %d kv heads, head_dim %d",
                          nheads, l->nkv_heads, l->head_dim);
    attn_ctx_t c = {.out = out, .q = q, .pool = pool, .l = l, .bt = &cb->batch, .layer = layer,
                    .nheads = nheads, .group = nheads / l->nkv_heads, .window = window,
                    .scale = scale};
    int64_t n = (int64_t)cb->batch.ntok * nheads;
    int64_t grain = n / ((int64_t)cb->nworkers * 4);
    if (grain < 1) grain = 1;
    zs_cpu_pool_run(cb->pool, n, grain, attn_task, &c);
    return 0;
}
