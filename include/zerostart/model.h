/* zerostart model description: the Llama-family configuration parsed from a Hugging Face
 * config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM),
 * the RoPE frequency tables it implies, and the check that a set of weights matches it.
 * Everything the engine cannot run exactly is refused with an error naming the field or
 * the tensor; nothing is silently approximated. See docs/engine.md. */
#ifndef ZEROSTART_MODEL_H
#define ZEROSTART_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zerostart/ckpt.h"
#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum zs_arch {
    ZS_ARCH_LLAMA = 0,
    ZS_ARCH_MISTRAL,
    ZS_ARCH_QWEN2,
    ZS_ARCH_QWEN3,
} zs_arch_t;

typedef enum zs_rope_type {
    ZS_ROPE_DEFAULT = 0,
    ZS_ROPE_LINEAR,
    ZS_ROPE_LLAMA3,
    ZS_ROPE_YARN,
} zs_rope_type_t;

/* Limits that keep every derived size far from overflow. */
#define ZS_MODEL_MAX_LAYERS 1024
#define ZS_MODEL_MAX_HIDDEN (1 << 17)
#define ZS_MODEL_MAX_INTER (1 << 20)
#define ZS_MODEL_MAX_HEADS 1024
#define ZS_MODEL_MAX_HEAD_DIM 1024
#define ZS_MODEL_MAX_VOCAB (1 << 24)
#define ZS_MODEL_MAX_EOS 16

typedef struct zs_model_config {
    zs_arch_t arch;
    int32_t hidden;            /* hidden_size */
    int32_t intermediate;      /* intermediate_size */
    int32_t nlayers;           /* num_hidden_layers */
    int32_t nheads;            /* num_attention_heads */
    int32_t nkv_heads;         /* num_key_value_heads */
    int32_t head_dim;
    int32_t vocab;             /* vocab_size */
    int64_t max_pos;           /* max_position_embeddings */
    double rms_eps;
    double rope_theta;

    zs_rope_type_t rope_type;
    double rope_factor;        /* linear, llama3, yarn */
    double rope_low_freq_factor, rope_high_freq_factor;   /* llama3 */
    int64_t rope_orig_max_pos; /* llama3, yarn */
    double rope_beta_fast, rope_beta_slow;                /* yarn */
    bool rope_truncate;        /* yarn */
    double rope_attn_factor;   /* multiplies cos and sin (yarn); 1 otherwise */

    bool tie_embeddings;
    bool bias_qkv;             /* q/k/v projections carry a bias */
    bool bias_o;               /* o projection carries a bias */
    bool qk_norm;              /* per-head RMSNorm of q and k before RoPE (Qwen3) */

    int32_t sliding_window;    /* tokens a query sees (itself included) on sliding layers; 0 none */
    uint8_t layer_sliding[ZS_MODEL_MAX_LAYERS]; /* 1: layer uses sliding_window */

    int32_t bos_id;            /* -1 if unset */
    int32_t eos_ids[ZS_MODEL_MAX_EOS];
    int32_t n_eos;
    int torch_dtype;           /* zs_dtype_t, or -1 when absent / not a float type */
} zs_model_config_t;

/* Parses config.json text (len bytes, need not be NUL terminated). Every refusal names the
 * field, e.g. `config.json: rope_scaling.type "dynamic" is not supported`. */
int zs_model_config_parse(const char *json, size_t len, zs_model_config_t *out, zs_err_t *err);

const char *zs_arch_name(zs_arch_t a);

/* Attention window of `layer`: 0 = full causal attention, else the number of most recent
 * positions (the query's own included) a query attends to. */
int32_t zs_model_layer_window(const zs_model_config_t *c, int32_t layer);

/* RoPE inverse frequencies (head_dim/2 values, float32 like transformers computes them) and
 * the factor applied to cos/sin, for the configured rope type. */
void zs_model_rope_inv_freq(const zs_model_config_t *c, float *inv_freq, float *attn_factor);

/* A weight as the engine sees it: data may be host or device memory. */
typedef struct zs_wref {
    const void *data;
    zs_dtype_t dtype;
    int ndim;
    int64_t shape[ZS_MAX_DIMS];
} zs_wref_t;

/* Tensor lookup: returns 0 and fills *out when `name` exists, 1 when it does not, negative
 * zs_status on failure. */
typedef int (*zs_wlookup_fn)(void *ctx, const char *name, zs_wref_t *out);

/* Checks that every tensor the config needs exists with the right shape and a supported
 * dtype (F32, F16, BF16), and that no bias tensor exists that the config would ignore.
 * Errors name the tensor. */
int zs_model_check_weights(const zs_model_config_t *c, zs_wlookup_fn lookup, void *ctx,
                           zs_err_t *err);

#ifdef __cplusplus
}
#endif
#endif
