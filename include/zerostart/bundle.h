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
#include "zerostart/pool.h"
#include "zerostart/tokenizer.h"
#include "zerostart/tp.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZS_BUNDLE_MAX_STOP 16

typedef struct zs_bundle_opts {
    zs_load_opts_t load;          /* load.device picks the device (and the engine backend) */
    zs_engine_opts_t engine;      /* .backend is set from the device */
    int require_tokenizer;        /* fail when tokenizer.json is missing or unusable */
    zs_pool_t *pool;              /* optional: load through the hot model pool (fill if needed) */
    /* Return as soon as the engine exists, with the weights still streaming in: the forward
     * pass waits for each layer just before it first uses it, so a prompt's prefill overlaps
     * the load. zs_bundle_finish_load completes it (zs_bundle_free does too). */
    int overlap_load;
    /* Tensor parallel over this many ranks (> 1): the weights are sliced with zs_tp_load (CUDA:
     * GPUs load.device.index .. + tp - 1; CPU: simulated ranks) and the engine is
     * zs_engine_create_tp. The load options' threads, chunk_bytes (read unit), staging_slots
     * and direct_io apply; no pool, no overlap (the tokenizer is parsed before the load). */
    int tp;
} zs_bundle_opts_t;

void zs_bundle_opts_default(zs_bundle_opts_t *o);

/* Where the weights came from. */
typedef enum zs_weights_source {
    ZS_SRC_PAGE_CACHE = 1,        /* storage, every byte found in the page cache */
    ZS_SRC_DISK = 2,              /* storage, some bytes read from the device */
    ZS_SRC_POOL = 3,              /* hot model pool (already there) */
    ZS_SRC_POOL_FILLED = 4,       /* hot model pool, filled from storage by this start */
} zs_weights_source_t;

const char *zs_weights_source_name(zs_weights_source_t s); /* "page-cache", "disk", "pool", "pool-filled" */

/* Seconds from the start of zs_bundle_open, and what the start moved. */
typedef struct zs_bundle_timeline {
    double opened;                /* headers, index and config parsed */
    double pool;                  /* pool segment attached (or filled), pinned; 0 without a pool */
    double tokenizer;             /* tokenizer and chat template ready (overlaps the weights) */
    double first_layer;           /* embeddings and layer 0 resident */
    double weights;               /* every tensor resident */
    double engine;                /* engine built (with overlap_load: before the weights are in) */
    zs_weights_source_t source;
    uint64_t bytes;               /* weight bytes moved to the device */
    double load_gbps;             /* bytes / (weights - load start) */
} zs_bundle_timeline_t;

typedef struct zs_bundle {
    zs_ckpt_t *ckpt;
    zs_weights_t *weights;
    zs_tp_weights_t *tp_weights;  /* tensor parallel: the ranks' shards (weights is NULL) */
    zs_tok_t *tok;                /* NULL when the directory has no tokenizer.json */
    zs_chat_template_t *chat;     /* NULL when there is no usable chat template */
    char chat_error[1100];        /* why chat is NULL ("" when it is not) */
    zs_engine_t *engine;
    int32_t stop_ids[ZS_BUNDLE_MAX_STOP]; /* generation_config.json eos_token_id, else config.json's,
                                             plus the tokenizer's end-of-sequence token */
    int32_t nstop;
    zs_bundle_timeline_t timeline;
    zs_pool_model_t *pooled;      /* the pool segment the weights came from, kept attached */
    struct zs_bundle_loading *loading; /* overlap_load: the load still in progress */
} zs_bundle_t;

int zs_bundle_open(const char *dir, const zs_bundle_opts_t *opts, zs_bundle_t **out, zs_err_t *err);
/* The timeline as a JSON object (malloc'd text), with first_token_s added when >= 0. */
char *zs_bundle_timeline_json(const zs_bundle_t *b, double first_token_s);
void zs_bundle_free(zs_bundle_t *b);
/* Scale to zero: frees the engine and the device weights (cancelling a load in progress:
 * the loader stops taking chunks), keeps the checkpoint, tokenizer, chat template, stop ids
 * and the pool segment (attached, and still pinned for CUDA). */
void zs_bundle_unload(zs_bundle_t *b);
/* Brings the weights and the engine back after zs_bundle_unload (opts as for zs_bundle_open,
 * overlap_load included): from the attached pool segment when there is one (source "pool"),
 * else through opts->pool or storage. Rewrites b->timeline (opened_s and tokenizer_s are 0).
 * On failure the bundle stays unloaded. */
int zs_bundle_reload(zs_bundle_t *b, const zs_bundle_opts_t *opts, zs_err_t *err);
/* Waits for every weight (overlap_load) and records the timeline; no-op otherwise. On failure
 * the weights are freed: the engine must not run again (zs_bundle_unload it). */
int zs_bundle_finish_load(zs_bundle_t *b, zs_err_t *err);
/* 1 while an overlap_load is still moving weights (zs_bundle_finish_load would block), else 0
 * (none in progress, or its loader has ended: finishing it returns at once). */
int zs_bundle_loading(const zs_bundle_t *b);

#ifdef __cplusplus
}
#endif
#endif
