/* The Llama-family forward pass expressed in backend ops (model.c): per-layer weight handles,
 * activation buffers on the backend, and one forward step over a batch of tokens. It never
 * touches backend memory itself, so it runs unchanged on any zs_backend_t. Internal to the
 * engine; engine.c owns sequences, the KV cache and chunking. */
#ifndef ZS_ENGINE_FORWARD_H
#define ZS_ENGINE_FORWARD_H

#include "engine/backend.h"
#include "zerostart/model.h"

typedef struct zs_layer_weights {
    zs_bweight_t attn_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias, q_norm, k_norm;
    zs_bweight_t mlp_norm, gate, up, down;
    int32_t window;            /* 0 = full causal attention */
} zs_layer_weights_t;

typedef struct zs_model {
    zs_model_config_t cfg;
    zs_backend_t *be;
    zs_layer_weights_t *layers;
    zs_bweight_t embed, norm, lm_head;
    float *inv_freq;           /* backend memory, head_dim / 2 */
    float attn_factor, scale;
    int32_t max_tok;           /* tokens per step the buffers hold */
    int32_t logit_rows;        /* rows per logits pass */
    /* backend activation buffers */
    float *x, *h, *q, *k, *v, *att, *o, *g, *u, *lrows, *logits;
    /* Weights still arriving: wait(ctx, stage) before first use of the embeddings (stage -1),
     * layer L (L) and the final norm + lm_head (nlayers); weights_ready[stage + 1] once done. */
    int (*wait)(void *ctx, int32_t stage, zs_err_t *err);
    void *wait_ctx;
    unsigned char *weights_ready;
} zs_model_t;

/* Resolves every weight through lookup (after zs_model_check_weights passed) and allocates
 * the activation buffers for max_tok tokens per step. */
int zs_model_init(zs_model_t *m, const zs_model_config_t *cfg, zs_backend_t *be,
                  zs_wlookup_fn lookup, void *ctx, int32_t max_tok, zs_err_t *err);
void zs_model_destroy(zs_model_t *m);

/* One forward step over bt (bt->ntok <= max_tok; KV slots already reserved). For the nrows
 * batch token indices in rows, writes vocab logits each, in order, to host memory logits. */
int zs_model_step(zs_model_t *m, const zs_fwd_batch_t *bt, void *pool, const zs_kv_layout_t *l,
                  const int32_t *rows, int32_t nrows, float *logits, zs_err_t *err);

#endif
