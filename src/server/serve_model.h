/* One served model: the model bundle (checkpoint, weights, tokenizer, chat template, stop
 * tokens, engine) of a Hugging Face model directory, its effective context length and its
 * scheduler thread. */
#ifndef ZS_SERVER_SERVE_MODEL_H
#define ZS_SERVER_SERVE_MODEL_H

#include "server/log.h"
#include "server/metrics.h"
#include "server/scheduler.h"
#include "zerostart/bundle.h"
#include "zerostart/server.h"

typedef struct zs_srv_model {
    char *name;
    zs_bundle_t *b;
    zs_tok_t *tok;               /* b->tok */
    zs_chat_template_t *tmpl;    /* b->chat; NULL: no chat template (chat answers 400) */
    const char *tmpl_err;        /* b->chat_error */
    zs_engine_t *e;              /* b->engine */
    zs_sched_t *sched;
    int64_t ctx;                 /* effective context length */
    int32_t vocab;               /* model vocabulary */
    int32_t eos[ZS_BUNDLE_MAX_STOP + 1];
    int neos;
    int64_t created;
} zs_srv_model_t;

int zs_srv_model_load(const zs_server_model_cfg_t *mc, const zs_server_config_t *cfg,
                      zs_metrics_t *m, const zs_slog_t *log, zs_srv_model_t *out,
                      zs_err_t *err);
void zs_srv_model_free(zs_srv_model_t *m);

#endif
