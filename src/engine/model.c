/* The Llama-family forward pass (Llama, Mistral, Qwen2, Qwen3) written against the backend
 * vtable only: embedding, per layer RMSNorm -> q/k/v projections (+bias) -> optional q/k
 * RMSNorm -> RoPE -> KV store -> paged attention -> o projection -> residual, RMSNorm ->
 * SiLU-gated MLP -> residual; final RMSNorm and the LM head for the requested rows.
 * A tensor-parallel rank runs the same pass over its heads, MLP rows and vocabulary rows:
 * its embedding rows are summed over the ranks (all-reduce), o_proj and down_proj outputs are
 * partial sums completed by an all-reduce before the residual add (the o bias added by rank 0
 * only), and the logits rows of every rank are all-gathered and put in vocabulary order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "zerostart/tp.h"

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

int zs_model_shard_init(zs_model_shard_t *sh, const zs_model_config_t *c, int rank, int nranks,
                        zs_comm_t *comm, zs_err_t *err) {
    memset(sh, 0, sizeof *sh);
    sh->rank = rank;
    sh->nranks = nranks;
    if (nranks == 1 && rank == 0) {
        sh->nheads = c->nheads;
        sh->nkv_heads = c->nkv_heads;
        sh->intermediate = c->intermediate;
        sh->vocab_rows = sh->vocab_pad = c->vocab;
        return ZS_OK;
    }
    zs_tp_heads_t hs;
    int rc = zs_tp_heads(c, nranks, rank, &hs, err);
    if (rc != ZS_OK) return rc;
    if (comm == NULL || comm->nranks != nranks)
        return zs_err_set(err, ZS_EINVAL, "engine: rank %d of %d needs a communicator of %d ranks", rank,
                          nranks, nranks);
    sh->comm = comm;
    sh->nheads = (int32_t)(hs.q1 - hs.q0);
    sh->nkv_heads = (int32_t)(hs.kv1 - hs.kv0);
    int64_t b, e;
    zs_tp_split(c->intermediate, nranks, rank, &b, &e);
    sh->intermediate = (int32_t)(e - b);
    zs_tp_split(c->vocab, nranks, rank, &sh->vocab0, &e);
    sh->vocab_rows = e - sh->vocab0;
    for (int r = 0; r < nranks; r++) {
        zs_tp_split(c->vocab, nranks, r, &b, &e);
        if (e - b > sh->vocab_pad) sh->vocab_pad = e - b;
    }
    return ZS_OK;
}

void zs_model_destroy(zs_model_t *m) {
    if (m == NULL) return;
    free(m->weights_ready);
    m->weights_ready = NULL;
    free(m->host_logits);
    m->host_logits = NULL;
    if (m->be == NULL) return;
    zs_backend_t *be = m->be;
    float **bufs[] = {&m->inv_freq, &m->x, &m->h, &m->q, &m->k, &m->v, &m->att,
                      &m->o, &m->g, &m->u, &m->lrows, &m->logits, &m->gathered};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (*bufs[i]) be->ops->free(be, *bufs[i]);
        *bufs[i] = NULL;
    }
    free(m->layers);
    memset(m, 0, sizeof *m);
}

int zs_model_init(zs_model_t *m, const zs_model_config_t *cfg, const zs_model_shard_t *sh,
                  zs_backend_t *be, zs_wlookup_fn lookup, void *ctx, int32_t max_tok,
                  zs_err_t *err) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    m->max_tok = max_tok;
    m->logit_rows = max_tok < 16 ? max_tok : 16;
    int rc;
    if (sh != NULL) m->sh = *sh;
    else if ((rc = zs_model_shard_init(&m->sh, cfg, 0, 1, NULL, err))) goto fail;
    if (m->sh.comm != NULL && be->ops->embed_rows == NULL) {
        rc = zs_err_set(err, ZS_EUNSUPPORTED, "engine: the %s backend cannot run a tensor-parallel rank",
                        be->ops->name);
        goto fail;
    }
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
    const size_t H = (size_t)cfg->hidden, QD = (size_t)m->sh.nheads * cfg->head_dim,
                 KD = (size_t)m->sh.nkv_heads * cfg->head_dim, I = (size_t)m->sh.intermediate;
    const size_t LR = (size_t)m->logit_rows * (size_t)m->sh.vocab_pad; /* one rank's logits */
    const size_t NR = m->sh.comm ? (size_t)m->sh.nranks : 0;           /* gathered: NR * LR */
    struct {
        float **p;
        size_t floats;
    } bufs[] = {
        {&m->x, T * H},  {&m->h, T * H},   {&m->q, T * QD}, {&m->k, T * KD},
        {&m->v, T * KD}, {&m->att, T * QD}, {&m->o, T * H}, {&m->g, T * I},
        {&m->u, T * I},  {&m->lrows, (size_t)m->logit_rows * H},
        {&m->logits, LR}, {&m->gathered, NR * LR},
        {&m->inv_freq, (size_t)cfg->head_dim / 2},
    };
    if (NR > 0 && (m->host_logits = malloc(NR * LR * sizeof(float))) == NULL) {
        rc = zs_err_set(err, ZS_ENOMEM, "engine: rank %d: out of memory for logits", m->sh.rank);
        goto fail;
    }
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (bufs[i].floats == 0) continue;
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

/* Tensor parallel: buf (n floats) becomes the sum of every rank's buf. */
static int all_reduce(zs_model_t *m, float *buf, size_t n, zs_err_t *err) {
    return m->sh.comm->ops->all_reduce_sum(m->sh.comm, m->sh.rank, m->be, buf, n, err);
}

/* x += in @ w^T (+ bias): the o and down projections into the residual stream. On a
 * tensor-parallel rank, w holds the rank's input columns: the rank's partial product is summed
 * over the ranks first, and the bias (replicated) is added by rank 0 only. */
static int proj_add(zs_model_t *m, const float *in, int32_t n, const zs_bweight_t *w,
                    const zs_bweight_t *bias, zs_err_t *err) {
    if (m->sh.comm == NULL) return matmul_add(m, m->x, in, n, w, bias, m->o, err);
    zs_backend_t *be = m->be;
    const size_t cnt = (size_t)n * (size_t)w->rows;
    TRY(be->ops->matmul(be, m->o, in, n, w, m->sh.rank == 0 ? bias : NULL, err));
    TRY(all_reduce(m, m->o, cnt, err));
    return be->ops->add(be, m->x, m->o, cnt, err);
}

/* Embedding rows of the step's tokens into x: on a tensor-parallel rank, its vocabulary rows
 * (zeros for the other tokens) summed over the ranks. */
static int embed(zs_model_t *m, int32_t n, zs_err_t *err) {
    zs_backend_t *be = m->be;
    if (m->sh.comm == NULL) return be->ops->embed(be, m->x, &m->embed, err);
    TRY(be->ops->embed_rows(be, m->x, &m->embed, m->sh.vocab0, err));
    return all_reduce(m, m->x, (size_t)n * (size_t)m->cfg.hidden, err);
}

/* nr logits rows (in m->logits, the rank's vocabulary rows) to host memory out, vocab each:
 * on a tensor-parallel group every rank's rows are all-gathered, and rank 0 downloads them and
 * puts each rank's block at its vocabulary offset. */
static int logits_out(zs_model_t *m, int32_t nr, float *out, zs_err_t *err) {
    zs_backend_t *be = m->be;
    const zs_model_shard_t *sh = &m->sh;
    const int64_t V = m->cfg.vocab;
    if (sh->comm == NULL)
        return be->ops->download(be, out, m->logits, (size_t)nr * (size_t)V * sizeof(float), err);
    const size_t per = (size_t)nr * (size_t)sh->vocab_pad; /* floats each rank contributes */
    TRY(sh->comm->ops->all_gather(sh->comm, sh->rank, be, m->gathered, m->logits, per, err));
    if (sh->rank != 0) return ZS_OK;
    TRY(be->ops->download(be, m->host_logits, m->gathered, (size_t)sh->nranks * per * sizeof(float), err));
    for (int r = 0; r < sh->nranks; r++) {
        int64_t v0, v1;
        zs_tp_split(V, sh->nranks, r, &v0, &v1);
        const float *src = m->host_logits + (size_t)r * per; /* [nr, v1 - v0], dense */
        for (int32_t i = 0; i < nr; i++)
            memcpy(out + (size_t)i * (size_t)V + (size_t)v0, src + (size_t)i * (size_t)(v1 - v0),
                   (size_t)(v1 - v0) * sizeof(float));
    }
    return ZS_OK;
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
    const int32_t nh = m->sh.nheads, nkv = m->sh.nkv_heads; /* this rank's heads */
    const int32_t n = bt->ntok;
    if (n < 1 || n > m->max_tok)
        return zs_err_set(err, ZS_EINVAL, "engine: step of %d tokens (buffers hold %d)", n,
                          m->max_tok);
    const float eps = (float)c->rms_eps;

    TRY(op->begin_batch(be, bt, err));
    TRY(model_wait(m, -1, err));
    TRY(embed(m, n, err));
    for (int32_t li = 0; li < c->nlayers; li++) {
        const zs_layer_weights_t *L = &m->layers[li];
        TRY(model_wait(m, li, err));
        TRY(op->rmsnorm(be, m->h, m->x, n, c->hidden, &L->attn_norm, eps, err));
        TRY(matmul3(m, m->q, m->k, m->v, m->h, n, &L->q, &L->k, &L->v,
                    c->bias_qkv ? &L->q_bias : NULL, c->bias_qkv ? &L->k_bias : NULL,
                    c->bias_qkv ? &L->v_bias : NULL, err));
        if (c->qk_norm) {
            TRY(op->rmsnorm(be, m->q, m->q, n * nh, c->head_dim, &L->q_norm, eps, err));
            TRY(op->rmsnorm(be, m->k, m->k, n * nkv, c->head_dim, &L->k_norm, eps, err));
        }
        TRY(op->rope(be, m->q, nh, c->head_dim, m->inv_freq, m->attn_factor, err));
        TRY(op->rope(be, m->k, nkv, c->head_dim, m->inv_freq, m->attn_factor, err));
        TRY(op->kv_store(be, pool, l, li, m->k, m->v, err));
        TRY(op->attention(be, m->att, m->q, pool, l, li, nh, L->window, m->scale, err));
        TRY(proj_add(m, m->att, n, &L->o, c->bias_o ? &L->o_bias : NULL, err));
        TRY(op->rmsnorm(be, m->h, m->x, n, c->hidden, &L->mlp_norm, eps, err));
        TRY(matmul_silu(m, m->g, m->h, n, &L->gate, &L->up, m->u, err));
        TRY(proj_add(m, m->g, n, &L->down, NULL, err));
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
        TRY(logits_out(m, nr, logits + (size_t)r0 * c->vocab, err));
    }
    return op->sync(be, err);
}
