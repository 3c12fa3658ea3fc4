/* Bringing up a served model: the shared model bundle (zs_bundle_open), the effective
 * context length (config, --ctx, KV capacity), stop tokens, and the scheduler thread. */
#include "server/serve_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void zs_srv_model_free(zs_srv_model_t *m) {
    zs_sched_free(m->sched);
    zs_bundle_free(m->b);
    free(m->name);
    memset(m, 0, sizeof *m);
}

int zs_srv_model_load(const zs_server_model_cfg_t *mc, const zs_server_config_t *cfg,
                      zs_metrics_t *m, const zs_slog_t *log, zs_srv_model_t *out,
                      zs_err_t *err) {
    memset(out, 0, sizeof *out);
    int rc;
    out->name = strdup(mc->name);
    if (out->name == NULL) return zs_err_set(err, ZS_ENOMEM, "out of memory");
    out->created = (int64_t)time(NULL);
    zs_bundle_opts_t bo;
    zs_bundle_opts_default(&bo);
    bo.load.device = mc->device;
    bo.engine.threads = cfg->threads;
    bo.engine.kv_bytes = mc->kv_bytes;
    bo.engine.max_step_tokens = cfg->step_tokens;
    bo.require_tokenizer = 1;
    if ((rc = zs_bundle_open(mc->path, &bo, &out->b, err))) goto fail;
    out->tok = out->b->tok;
    out->tmpl = out->b->chat;
    out->tmpl_err = out->b->chat_error;
    out->e = out->b->engine;
    if (out->tok == NULL) {
        rc = zs_err_set(err, ZS_ENOENT, "model %s: no tokenizer.json in %s", mc->name, mc->path);
        goto fail;
    }
    if (out->tmpl == NULL)
        zs_slog(log, ZS_LOG_WARN, NULL, "model %s: no chat template (%s); /v1/chat/completions "
                "will answer 400", mc->name, out->tmpl_err);

    const zs_model_config_t *mcfg = zs_engine_config(out->e);
    const zs_kv_cache_t *kv = zs_engine_kv(out->e);
    out->vocab = mcfg->vocab;
    int64_t ctx = mcfg->max_pos;
    if (mc->ctx > 0) {
        if (mc->ctx > ctx) {
            rc = zs_err_set(err, ZS_EINVAL, "model %s: --ctx %lld exceeds the model's "
                            "max_position_embeddings (%lld)", mc->name, (long long)mc->ctx,
                            (long long)ctx);
            goto fail;
        }
        ctx = mc->ctx;
    }
    int64_t kv_tokens = (int64_t)kv->nblocks * kv->layout.block_size;
    if (kv_tokens < ctx) {
        zs_slog(log, ZS_LOG_WARN, NULL, "model %s: context limited to %lld tokens by the KV "
                "cache (%u blocks of %d); raise --kv-mem for more", mc->name,
                (long long)kv_tokens, kv->nblocks, kv->layout.block_size);
        ctx = kv_tokens;
    }
    out->ctx = ctx;
    for (int32_t i = 0; i < out->b->nstop; i++)
        if (out->b->stop_ids[i] >= 0 && out->b->stop_ids[i] < out->vocab)
            out->eos[out->neos++] = out->b->stop_ids[i];
    int32_t te = zs_tok_eos_id(out->tok);
    int have = 0;
    for (int i = 0; i < out->neos; i++) have |= out->eos[i] == te;
    if (te >= 0 && te < out->vocab && !have) out->eos[out->neos++] = te;

    zs_sched_opts_t so = {.name = out->name, .max_queue = cfg->max_queue,
                          .max_batch = cfg->max_batch, .step_tokens = cfg->step_tokens,
                          .step_delay_ms = cfg->step_delay_ms, .ctx = ctx, .eos = out->eos,
                          .neos = out->neos};
    if ((rc = zs_sched_create(out->e, out->tok, &so, m, log, &out->sched, err))) goto fail;
    zs_slog(log, ZS_LOG_INFO, NULL,
            "model %s: %s, %d layers, vocab %d, context %lld, KV %u blocks of %d, chat "
            "template: %s, loaded in %.3f s", out->name, zs_arch_name(mcfg->arch), mcfg->nlayers,
            mcfg->vocab, (long long)ctx, kv->nblocks, kv->layout.block_size,
            out->tmpl ? "yes" : "no", out->b->timeline.engine);
    return 0;
fail:
    zs_srv_model_free(out);
    return rc;
}
