/* One served model: the model bundle (checkpoint, weights, tokenizer, chat template, stop
 * tokens, engine) of a Hugging Face model directory, its effective context length, its
 * scheduler thread, and its lifecycle (scale to zero and back): the load, load-poll and
 * unload callbacks the scheduler thread calls, the placement of each start, the kernel
 * warm-up after the first start, and the start-up records. */
#ifndef ZS_SERVER_SERVE_MODEL_H
#define ZS_SERVER_SERVE_MODEL_H

#include <pthread.h>

#include "server/contexts.h"
#include "server/kv_tier.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/residency.h"
#include "server/scheduler.h"
#include "zerostart/bundle.h"
#include "zerostart/pool.h"
#include "zerostart/server.h"

#define ZS_STARTUPS_KEPT 32

/* One model start. Times are seconds from t0, the moment the start began (the scheduler took
 * it up); -1 = not reached. */
typedef struct zs_startup {
    int64_t seq;                 /* 1, 2, ... per model */
    double t0;                   /* zs_now() */
    int64_t wall_ms;             /* unix time of t0 */
    char trigger[16];            /* "initial", "request", "admin", "prewarm" */
    char request_id[48];         /* the triggering request */
    double queued_s;             /* how long the triggering request had waited at t0 */
    double placed_s;             /* placement decided and memory reserved */
    char placement[256];
    char device[16];
    char source[16];             /* pool, pool-filled, page-cache, disk */
    uint64_t bytes;
    double load_gbps;
    double pool_s, first_layer_s, weights_s, engine_s, first_token_s;
    /* the triggering request's prompt KV: cached (GPU), restored (host, disk), computed */
    int64_t kv_gpu_tokens, kv_host_tokens, kv_disk_tokens, kv_computed_tokens;
    double kv_restore_s;
    double warmup_s;             /* kernel warm-up seconds (the initial start only) */
    int overlap;                 /* the engine ran while the weights streamed in */
    int ok;                      /* 1 done, 0 in progress, -1 failed, -2 cancelled */
    char error[256];
} zs_startup_t;

typedef struct zs_srv_model {
    char *name;
    int idx;
    zs_bundle_t *b;
    zs_tok_t *tok;               /* b->tok (kept while scaled to zero) */
    zs_chat_template_t *tmpl;    /* b->chat; NULL: no chat template (chat answers 400) */
    const char *tmpl_err;        /* b->chat_error */
    zs_sched_t *sched;
    int64_t ctx;                 /* effective context length */
    int32_t vocab;               /* model vocabulary */
    int32_t eos[ZS_BUNDLE_MAX_STOP + 1];
    int neos;
    int64_t created;
    double keep_alive_s;

    /* lifecycle (the scheduler thread's, after zs_srv_model_load) */
    zs_bundle_opts_t bo;
    zs_res_t *res;
    zs_metrics_t *metrics;
    const zs_slog_t *log;
    int pooled;                  /* the weights are in the hot pool */
    uint64_t kv_bytes;           /* device bytes of the KV cache */
    zs_kvt_t *kvt;               /* KV warm start: the store below the GPU prefix cache */
    int64_t pending;             /* start-up whose weights are still streaming in (0: none) */
    double pending_placed;       /* zs_now() when it was placed */

    pthread_mutex_t smu;         /* start-up records */
    int smu_ready;
    zs_startup_t starts[ZS_STARTUPS_KEPT];
    int64_t nstarts;
} zs_srv_model_t;

/* Brings the model up (on the calling thread) through placement: reserves device memory
 * (unloading idle models of the server if needed), opens the bundle (through pool when not
 * NULL), and starts its scheduler with the lifecycle callbacks. */
int zs_srv_model_load(const zs_server_model_cfg_t *mc, const zs_server_config_t *cfg, int idx,
                      uint32_t allowed, zs_res_t *res, zs_pool_t *pool, zs_ctxreg_t *contexts, zs_metrics_t *m,
                      const zs_slog_t *log, zs_srv_model_t *out, zs_err_t *err);
void zs_srv_model_free(zs_srv_model_t *m);
/* The start-up records, oldest first, as a JSON array (malloc'd) or NULL. */
char *zs_srv_model_startups_json(zs_srv_model_t *m);
/* The last start-up record as a JSON object (malloc'd) or NULL when there is none. */
char *zs_srv_model_last_startup_json(zs_srv_model_t *m);
/* "device" (resident), "pool" or "storage". */
const char *zs_srv_model_location(zs_srv_model_t *m);

#endif
