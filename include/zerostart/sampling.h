/* zerostart token sampling: per-request sampler state (parameters, a seeded xoshiro256**
 * generator, token counts for penalties, the tokens generated so far) that turns a row of
 * logits into the next token and decides when generation stops.
 *
 * Order of operations on each row of logits: repetition penalty (prompt and output tokens),
 * presence and frequency penalties (output tokens), then either greedy argmax
 * (temperature == 0) or: divide by temperature, keep the top_k highest, softmax, keep the
 * smallest prefix whose probability reaches top_p, drop tokens below min_p * max
 * probability, and draw from what is left. Ties are broken toward the lower token id, so
 * results depend only on the logits, the parameters and the seed. */
#ifndef ZEROSTART_SAMPLING_H
#define ZEROSTART_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zs_sampling_params {
    float temperature;          /* 0 = greedy; default 1 */
    int32_t top_k;              /* 0 = off */
    float top_p;                /* (0, 1]; 1 = off */
    float min_p;                /* [0, 1]; 0 = off */
    float repetition_penalty;   /* > 0; 1 = off (HF/vLLM semantics: divide positive logits) */
    float presence_penalty;     /* subtracted once from tokens already generated */
    float frequency_penalty;    /* subtracted per occurrence in the generated tokens */
    uint64_t seed;
    int32_t max_tokens;         /* 0 = no limit */
    const int32_t *stop_ids;    /* copied at init */
    int32_t nstop;
    /* Hook for stop strings (wired up with the tokenizer): called after each accepted token
     * with everything generated so far; returning non-zero stops generation. */
    int (*stop_check)(void *ctx, const int32_t *tokens, size_t n);
    void *stop_ctx;
} zs_sampling_params_t;

void zs_sampling_params_default(zs_sampling_params_t *p);

typedef enum zs_stop_reason {
    ZS_SAMPLE_CONTINUE = 0,
    ZS_SAMPLE_STOP_TOKEN = 1,   /* the token is one of stop_ids */
    ZS_SAMPLE_STOP_MAX = 2,     /* max_tokens reached */
    ZS_SAMPLE_STOP_HOOK = 3,    /* stop_check said stop */
} zs_stop_reason_t;

typedef struct zs_sampler {
    zs_sampling_params_t p;
    int32_t *stop_ids;
    int32_t vocab;
    uint64_t rng[4];
    uint32_t *counts;           /* [vocab] occurrences among generated tokens */
    uint8_t *seen;              /* [vocab] in prompt or generated */
    int32_t *generated;
    size_t ngen, capgen;
    void *work;                 /* [vocab] candidates */
} zs_sampler_t;

/* Validates p (errors name the field) for a vocabulary of `vocab` tokens. */
int zs_sampler_init(zs_sampler_t *s, const zs_sampling_params_t *p, int32_t vocab, zs_err_t *err);
void zs_sampler_free(zs_sampler_t *s);
/* Prompt tokens count for the repetition penalty. */
int zs_sampler_add_prompt(zs_sampler_t *s, const int32_t *ids, size_t n, zs_err_t *err);
/* Picks the next token from vocab logits (modified in place). NaN logits -> ZS_EINVAL. */
int zs_sampler_sample(zs_sampler_t *s, float *logits, int32_t *token, zs_err_t *err);
/* Records the token as generated; returns a zs_stop_reason_t (>= 0) or a negative status. */
int zs_sampler_accept(zs_sampler_t *s, int32_t token, zs_err_t *err);

/* The generator, exposed for tests: xoshiro256** seeded through splitmix64. */
void zs_rng_seed(uint64_t st[4], uint64_t seed);
uint64_t zs_rng_next(uint64_t st[4]);
/* Uniform in [0, 1) with 53 random bits. */
double zs_rng_uniform(uint64_t st[4]);

#ifdef __cplusplus
}
#endif
#endif
