/* The Llama-family forward pass expressed in backend ops (model.c): per-layer weight handles,
 * activation buffers on the backend, and one forward step over a batch of tokens. It never
 * touches backend memory itself, so it runs unchanged on any zs_backend_t. With a shard
 * description it computes one rank's part of a tensor-parallel model (its heads, MLP rows and
 * vocabulary rows) and meets the other ranks through a communicator (engine/comm.h) at the
 * embedding, after o_proj and down_proj, and for the logits. Internal to the engine; engine.c
 * owns sequences, the KV cache, chunking and the rank threads. */
#ifndef ZS_ENGINE_FORWARD_H
#define ZS_ENGINE_FORWARD_H

#include "engine/backend.h"
#include "engine/comm.h"
#include "zerostart/model.h"

/* The part of the model one rank computes (partition: zerostart/tp.h). One rank (nranks 1,
 * comm NULL) is the whole model. */
typedef struct zs_model_shard {
    int rank, nranks;
    zs_comm_t *comm;           /* NULL when nranks == 1 */
    int32_t nheads, nkv_heads; /* the rank's query and KV heads */
    int32_t intermediate;      /* its MLP intermediate rows */
    int64_t vocab0, vocab_rows;/* its embedding and lm_head rows [vocab0, vocab0 + vocab_rows) */
    int64_t vocab_pad;         /* the largest vocab_rows of any rank (all-gather unit per row) */
} zs_model_shard_t;

/* The shard of `rank` of `nranks` (1: the whole model, comm may be NULL). */
int zs_model_shard_init(zs_model_shard_t *sh, const zs_model_config_t *c, int rank, int nranks,
                        zs_comm_t *comm, zs_err_t *err);

typedef struct zs_layer_weights {
    zs_bweight_t attn_norm, q, k, v, o, q_bias, k_bias, v_bias, o_bias, q_norm, k_norm;
    zs_bweight_t mlp_norm, gate, up, down;
    int32_t window;            /* 0 = full causal attention */
} zs_layer_weights_t;

typedef struct zs_model {
    zs_model_config_t cfg;     /* the whole model's */
    zs_model_shard_t sh;
    zs_backend_t *be;
    zs_layer_weights_t *layers;
    zs_bweight_t embed, norm, lm_head;
    float *inv_freq;           /* backend memory, head_dim / 2 */
    float attn_factor, scale;
    int32_t max_tok;           /* tokens per step the buffers hold */
    int32_t logit_rows;        /* rows per logits pass */
    /* backend activation buffers */
    float *x, *h, *q, *k, *v, *att, *o, *g, *u, *lrows, *logits;
    float *gathered;           /* tensor parallel: every rank's logits rows (all-gather) */
    float *host_logits;        /* tensor parallel, host memory: gathered, before reordering */
    /* Weights still arriving: wait(ctx, stage) before first use of the embeddings (stage -1),
     * layer L (L) and the final norm + lm_head (nlayers); weights_ready[stage + 1] once done. */
    int (*wait)(void *ctx, int32_t stage, zs_err_t *err);
    void *wait_ctx;
    unsigned char *weights_ready;
} zs_model_t;

/* Resolves every weight through lookup (after zs_model_check_weights passed; with a shard,
 * lookup returns the rank's slices) and allocates the activation buffers for max_tok tokens
 * per step. sh NULL: the whole model on one rank. */
int zs_model_init(zs_model_t *m, const zs_model_config_t *cfg, const zs_model_shard_t *sh,
                  zs_backend_t *be, zs_wlookup_fn lookup, void *ctx, int32_t max_tok,
                  zs_err_t *err);
void zs_model_destroy(zs_model_t *m);

/* One forward step over bt (bt->ntok <= max_tok; KV slots already reserved; pool and l: the
 * rank's KV pool, holding its KV heads). For the nrows batch token indices in rows, writes
 * vocab logits each, in order, to host memory logits (tensor parallel: rank 0 writes them, the
 * other ranks take part in the gather and ignore logits). Every rank of a group calls it with
 * the same batch, each on its own thread. */
int zs_model_step(zs_model_t *m, const zs_fwd_batch_t *bt, void *pool, const zs_kv_layout_t *l,
                  const int32_t *rows, int32_t nrows, float *logits, zs_err_t *err);

#endif
