/* A model ready to generate: one call opens a Hugging Face model directory and brings up
 * everything a generator needs — checkpoint, weights on the device, tokenizer, chat template,
 * stop tokens, engine — with the small files parsed while the weights stream in, and a
 * timeline of each start-up phase. Used by `zerostart run` and `zerostart serve`. */
#ifndef ZEROSTART_BUNDLE_H
#define ZEROSTART_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "zerostart/chat_template.h"
#include "zerostart/ckpt.h"
#include "zerostart/engine.h"
#include "zerostart/err.h"
#include "zerostart/load.h"
#include "zerostart/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZS_BUNDLE_MAX_STOP 16

typedef struct zs_bundle_opts {
    zs_load_opts_t load;          /* load.device picks the device (and the engine backend) */
    zs_engine_opts_t engine;      /* .backend is set from the device */
    int require_tokenizer;        /* fail when tokenizer.json is missing or unusable */
} zs_bundle_opts_t;

void zs_bundle_opts_default(zs_bundle_opts_t *o);

/* Seconds from the start of zs_bundle_open. */
typedef struct zs_bundle_timeline {
    double opened;                /* headers, index and config parsed */
    double tokenizer;             /* tokenizer and chat template ready (overlaps the weights) */
    double weights;               /* every tensor resident */
    double engine;                /* engine built: ready to generate */
} zs_bundle_timeline_t;

typedef struct zs_bundle {
    zs_ckpt_t *ckpt;
    zs_weights_t *weights;
    zs_tok_t *tok;                /* NULL when the directory has no tokenizer.json */
    zs_chat_template_t *chat;     /* NULL when there is no usable chat template */
    char chat_error[1100];        /* why chat is NULL ("" when it is not) */
    zs_engine_t *engine;
    int32_t stop_ids[ZS_BUNDLE_MAX_STOP]; /* generation_config.json eos_token_id, else config.json's */
    int32_t nstop;
    zs_bundle_timeline_t timeline;
} zs_bundle_t;

int zs_bundle_open(const char *dir, const zs_bundle_opts_t *opts, zs_bundle_t **out, zs_err_t *err);
void zs_bundle_free(zs_bundle_t *b);

#ifdef __cplusplus
}
#endif
#endif
