/* The Llama-family forward pass (Llama, Mistral, Qwen2, Qwen3) written against the backend
 * vtable only: embedding, per layer RMSNorm -> q/k/v projections (+bias) -> optional q/k
 * RMSNorm -> RoPE -> KV store -> paged attention -> o projection -> residual, RMSNorm ->
 * SiLU-gated MLP -> residual; final RMSNorm and the LM head for the requested rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"

static int bind(zs_wlookup_fn lookup, void *ctx, const char *name, zs_bweight_t *out,
                zs_err_t *err) {
    zs_wref_t r;
    memset(&r, 0, sizeof r);
    int rc = lookup(ctx, name, &r);
    if (rc < 0) return rc;
    if (rc > 0) return zs_err_set(err, ZS_ENOENT, "weights: tensor %s is missing", name);
    out->data = r.data;
    out->dtype = r.dtype;
    if (r.ndim == 1) {
        out->rows = 1;
        out->cols = r.shape[0];
    } else {
        out->rows = r.shape[0];
        out->cols = r.shape[1];
    }
    return 0;
}

void zs_model_destroy(zs_model_t *m) {
    if (m == NULL) return;
    free(m->weights_ready);
    m->weights_ready = NULL;
    if (m->be == NULL) return;
    zs_backend_t *be = m->be;
    float **bufs[] = {&m->inv_freq, &m->x, &m->h, &m->q, &m->k, &m->v, &m->att,
                      &m->o, &m->g, &m->u, &m->lrows, &m->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->ops->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    free(m->layers);
    memset(m, 0, sizeof *m);
}

int zs_model_init(zs_model_t *m, const zs_model_config_t *cfg, zs_backend_t *be,
                  zs_wlookup_fn lookup, void *ctx, int32_t max_tok, zs_err_t *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    m->max_tok = max_tok;
    m->logit_rows = max_tok < 16 ? max_tok : 16;
    int rc;
    m->layers = calloc((size_t)cfg->nlayers, sizeof *m->layers);
    if (m->layers == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "engine: out of memory for %d layers", cfg->nlayers);
        goto fail;
    }
    if ((rc = bind(lookup, ctx, "model.embed_tokens.weight", &m->embed, err))) goto fail;
    if ((rc = bind(lookup, ctx, "model.norm.weight", &m->norm, err))) goto fail;
    if (cfg->tie_embeddings) m->lm_head = m->embed;
    else if ((rc = bind(lookup, ctx, "lm_head.weight", &m->lm_head, err))) goto fail;
    char n[160];
    for (int32_t l = 0; l < cfg->nlayers; l++) {
        zs_layer_weights_t *L = &m->layers[l];
        struct {
            const char *suffix;
            zs_bweight_t *dst;
            bool need;
        } ws[] = {
            {"input_layernorm.weight", &L->attn_norm, true},
            {"self_attn.q_proj.weight", &L->q, true},
            {"self_attn.k_proj.weight", &L->k, true},
            {"self_attn.v_proj.weight", &L->v, true},
            {"self_attn.o_proj.weight", &L->o, true},
            {"self_attn.q_proj.bias", &L->q_bias, cfg->bias_qkv},
            {"self_attn.k_proj.bias", &L->k_bias, cfg->bias_qkv},
            {"self_attn.v_proj.bias", &L->v_bias, cfg->bias_qkv},
            {"self_attn.o_proj.bias", &L->o_bias, cfg->bias_o},
            {"self_attn.q_norm.weight", &L->q_norm, cfg->qk_norm},
            {"self_attn.k_norm.weight", &L->k_norm, cfg->qk_norm},
            {"post_attention_layernorm.weight", &L->mlp_norm, true},
            {"mlp.gate_proj.weight", &L->gate, true},
            {"mlp.up_proj.weight", &L->up, true},
            {"mlp.down_proj.weight", &L->down, true},
        };
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            if (!ws[i].need) continue;
            snprintf(n, sizeof n, "model.layers.%d.%s", l, ws[i].suffix);
            if ((rc = bind(lookup, ctx, n, ws[i].dst, err))) goto fail;
        }
        L->window = zs_model_layer_window(cfg, l);
    }

    const size_t T = (size_t)max_tok;
    const size_t H = (size_t)cfg->hidden, QD = (size_t)cfg->nheads * cfg->head_dim,
                 KD = (size_t)cfg->nkv_heads * cfg->head_dim, I = (size_t)cfg->intermediate;
    struct {
        float **p;
        size_t floats;
    } bufs[] = {
        {&m->x, T * H},  {&m->h, T * H},   {&m->q, T * QD}, {&m->k, T * KD},
        {&m->v, T * KD}, {&m->att, T * QD}, {&m->o, T * H}, {&m->g, T * I},
        {&m->u, T * I},  {&m->lrows, (size_t)m->logit_rows * H},
        {&m->logits, (size_t)m->logit_rows * (size_t)cfg->vocab},
        {&m->inv_freq, (size_t)cfg->head_dim / 2},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        *bufs[i].p = be->ops->alloc(be, bufs[i].floats * sizeof(float), err);
        if (*bufs[i].p == NULL) {
            rc = err && err->code ? err->code : ZS_ENOMEM;
            goto fail;
        }
    }
    float inv[ZS_MODEL_MAX_HEAD_DIM / 2];
    zs_model_rope_inv_freq(cfg, inv, &m->attn_factor);
    if ((rc = be->ops->upload(be, m->inv_freq, inv, (size_t)cfg->head_dim / 2 * sizeof(float),
                              err)))
        goto fail;
    m->scale = (float)(1.0 / sqrt((double)cfg->head_dim));
    return 0;
fail:
    zs_model_destroy(m);
    m->be = NULL;
    return rc ? rc : ZS_ENOMEM;
}

#define TRY(call)                                                                                \
    do {                                                                                         \
        int rc_ = (call);                                                                        \
        if (rc_) return rc_;                                                                     \
    } while (0)

/* The fused ops of the backend, or their composition from the basic ops when it has none. */
static int matmul3(zs_model_t *m, float *y0, float *y1, float *y2, const float *x, int32_t n,
                   const zs_bweight_t *w0, const zs_bweight_t *w1, const zs_bweight_t *w2,
                   const zs_bweight_t *b0, const zs_bweight_t *b1, const zs_bweight_t *b2,
                   zs_err_t *err) {
    zs_backend_t *be = m->be;
    if (be->ops->matmul3) return be->ops->matmul3(be, y0, y1, y2, x, n, w0, w1, w2, b0, b1, b2, err);
    TRY(be->ops->matmul(be, y0, x, n, w0, b0, err));
    TRY(be->ops->matmul(be, y1, x, n, w1, b1, err));
    return be->ops->matmul(be, y2, x, n, w2, b2, err);
}

static int matmul_add(zs_model_t *m, float *y, const float *x, int32_t n, const zs_bweight_t *w,
                      const zs_bweight_t *bias, float *scratch, zs_err_t *err) {
    zs_backend_t *be = m->be;
    if (be->ops->matmul_add) return be->ops->matmul_add(be, y, x, n, w, bias, scratch, err);
    TRY(be->ops->matmul(be, scratch, x, n, w, bias, err));
    return be->ops->add(be, y, scratch, (size_t)n * (size_t)w->rows, err);
}

static int matmul_silu(zs_model_t *m, float *y, const float *x, int32_t n, const zs_bweight_t *wg,
                       const zs_bweight_t *wu, float *scratch, zs_err_t *err) {
    zs_backend_t *be = m->be;
    if (be->ops->matmul_silu) return be->ops->matmul_silu(be, y, x, n, wg, wu, scratch, err);
    TRY(be->ops->matmul(be, y, x, n, wg, NULL, err));
    TRY(be->ops->matmul(be, scratch, x, n, wu, NULL, err));
    return be->ops->silu_mul(be, y, y, scratch, (size_t)n * (size_t)wg->rows, err);
}

/* Blocks until the weights of `stage` are resident when a load is still in progress. */
static int model_wait(zs_model_t *m, int32_t stage, zs_err_t *err) {
    if (m->wait == NULL || m->weights_ready[stage + 1]) return ZS_OK;
    int rc = m->wait(m->wait_ctx, stage, err);
    if (rc == ZS_OK) m->weights_ready[stage + 1] = 1;
    return rc;
}

int zs_model_step(zs_model_t *m, const zs_fwd_batch_t *bt, void *pool, const zs_kv_layout_t *l,
                  const int32_t *rows, int32_t nrows, float *logits, zs_err_t *err) {
    zs_backend_t *be = m->be;
    const zs_backend_ops_t *op = be->ops;
    const zs_model_config_t *c = &m->cfg;
    const int32_t n = bt->ntok;
    if (n < 1 || n > m->max_tok)
        return zs_err_set(err, ZS_EINVAL, "engine: step of %d tokens (buffers hold %d)", n,
                          m->max_tok);
    const float eps = (float)c->rms_eps;

    TRY(op->begin_batch(be, bt, err));
    TRY(model_wait(m, -1, err));
    TRY(op->embed(be, m->x, &m->embed, err));
    for (int32_t li = 0; li < c->nlayers; li++) {
        const zs_layer_weights_t *L = &m->layers[li];
        TRY(model_wait(m, li, err));
        TRY(op->rmsnorm(be, m->h, m->x, n, c->hidden, &L->attn_norm, eps, err));
        TRY(matmul3(m, m->q, m->k, m->v, m->h, n, &L->q, &L->k, &L->v,
                    c->bias_qkv ? &L->q_bias : NULL, c->bias_qkv ? &L->k_bias : NULL,
                    c->bias_qkv ? &L->v_bias : NULL, err));
        if (c->qk_norm) {
            TRY(op->rmsnorm(be, m->q, m->q, n * c->nheads, c->head_dim, &L->q_norm, eps, err));
            TRY(op->rmsnorm(be, m->k, m->k, n * c->nkv_heads, c->head_dim, &L->k_norm, eps, err));
        }
        TRY(op->rope(be, m->q, c->nheads, c->head_dim, m->inv_freq, m->attn_factor, err));
        TRY(op->rope(be, m->k, c->nkv_heads, c->head_dim, m->inv_freq, m->attn_factor, err));
        TRY(op->kv_store(be, pool, l, li, m->k, m->v, err));
        TRY(op->attention(be, m->att, m->q, pool, l, li, c->nheads, L->window, m->scale, err));
        TRY(matmul_add(m, m->x, m->att, n, &L->o, c->bias_o ? &L->o_bias : NULL, m->o, err));
        TRY(op->rmsnorm(be, m->h, m->x, n, c->hidden, &L->mlp_norm, eps, err));
        TRY(matmul_silu(m, m->g, m->h, n, &L->gate, &L->up, m->u, err));
        TRY(matmul_add(m, m->x, m->g, n, &L->down, NULL, m->o, err));
    }
    TRY(model_wait(m, c->nlayers, err));
    for (int32_t r0 = 0; r0 < nrows; r0 += m->logit_rows) {
        int32_t nr = nrows - r0 < m->logit_rows ? nrows - r0 : m->logit_rows;
        for (int32_t i = 0; i < nr; i++)
            if (rows[r0 + i] < 0 || rows[r0 + i] >= n)
                return zs_err_set(err, ZS_EINVAL, "engine: logits row %d outside the step",
                                  rows[r0 + i]);
        TRY(op->gather_rows(be, m->lrows, m->x, rows + r0, nr, c->hidden, err));
        TRY(op->rmsnorm(be, m->lrows, m->lrows, nr, c->hidden, &m->norm, eps, err));
        TRY(op->matmul(be, m->logits, m->lrows, nr, &m->lm_head, NULL, err));
        TRY(op->download(be, logits + (size_t)r0 * c->vocab, m->logits,
                         (size_t)nr * c->vocab * sizeof(float), err));
    }
    return op->sync(be, err);
}
