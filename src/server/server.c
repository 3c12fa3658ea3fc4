/* Server lifecycle: copies the configuration, loads the models, starts and stops the HTTP
 * layer, graceful shutdown (stop accepting, drain within the deadline, cancel the rest). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "server/server_internal.h"

static char *dup_or_null(const char *s, int *oom) {
    if (s == NULL) return NULL;
    char *d = strdup(s);
    if (d == NULL) *oom = 1;
    return d;
}

static void sleep_ms(int ms) {
    struct timespec d = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&d, NULL);
}

int zs_server_create(const zs_server_config_t *cfg, zs_server_t **out, zs_err_t *err) {
    *out = NULL;
    if (cfg->nmodels < 1) return zs_err_set(err, ZS_EINVAL, "server: no model configured");
    if (cfg->max_batch < 1 || cfg->step_tokens < cfg->max_batch || cfg->max_queue < 0 ||
        cfg->max_body < 1 || cfg->max_connections < 1)
        return zs_err_set(err, ZS_EINVAL, "server: bad limits (max_batch %d, step_tokens %d, "
                          "max_queue %d): step_tokens must be at least max_batch",
                          cfg->max_batch, cfg->step_tokens, cfg->max_queue);
    zs_server_t *s = calloc(1, sizeof *s);
    if (s == NULL) return zs_err_set(err, ZS_ENOMEM, "server: out of memory");
    s->cfg = *cfg;
    int oom = 0;
    s->cfg.host = dup_or_null(cfg->host, &oom);
    for (int i = 0; i < cfg->napi_keys; i++) s->cfg.api_keys[i] = dup_or_null(cfg->api_keys[i], &oom);
    s->cfg.pool_dir = dup_or_null(cfg->pool_dir, &oom);
    s->cfg.kv_disk_dir = dup_or_null(cfg->kv_disk_dir, &oom);
    for (int i = 0; i < cfg->nmodels; i++) {
        s->cfg.models[i].name = dup_or_null(cfg->models[i].name, &oom);
        s->cfg.models[i].path = dup_or_null(cfg->models[i].path, &oom);
    }
    s->log = (zs_slog_t){.fn = cfg->log, .ctx = cfg->log_ctx, .level = cfg->log_level};
    s->salt = (uint64_t)(zs_now() * 1e9) ^ ((uint64_t)getpid() << 32);
    atomic_init(&s->inflight, 0);
    atomic_init(&s->stopping, 0);
    atomic_init(&s->counter, 0);
    int rc;
    if (oom) {
        rc = zs_err_set(err, ZS_ENOMEM, "server: out of memory");
        goto fail;
    }
    if (zs_metrics_init(&s->metrics) != 0) {
        rc = zs_err_set(err, ZS_ENOMEM, "server: cannot initialize metrics");
        goto fail;
    }
    s->metrics_ready = 1;
    if (zs_res_init(&s->res, &s->log) != 0) {
        rc = zs_err_set(err, ZS_ENOMEM, "server: cannot initialize placement");
        goto fail;
    }
    s->res_ready = 1;
    if (s->cfg.pool_size > 0) {
        zs_pool_opts_t po = {.dir = s->cfg.pool_dir, .capacity = s->cfg.pool_size};
        if ((rc = zs_pool_open(&po, &s->pool, err)) != 0) goto fail;
    }
    /* registered contexts, kept next to the KV disk tier when there is one */
    char ctx_path[4200];
    if (s->cfg.kv_disk_dir) {
        if (mkdir(s->cfg.kv_disk_dir, 0700) != 0 && errno != EEXIST) {
            rc = zs_err_set(err, zs_status_from_errno(errno), "server: --kv-disk %s: %s", s->cfg.kv_disk_dir,
                            strerror(errno));
            goto fail;
        }
        snprintf(ctx_path, sizeof ctx_path, "%s/contexts.json", s->cfg.kv_disk_dir);
    }
    if ((rc = zs_ctxreg_init(&s->contexts, s->cfg.kv_disk_dir ? ctx_path : NULL, err)) != 0) goto fail;
    s->contexts_ready = 1;
    /* devices and their budgets */
    uint32_t allowed[ZS_SERVER_MAX_MODELS] = {0};
    for (int i = 0; i < s->cfg.nmodels; i++) {
        zs_server_model_cfg_t *mc = &s->cfg.models[i];
        int ngpu = mc->any_gpu ? zs_cuda_device_count() : 1;
        if (mc->any_gpu && ngpu < 1) {
            rc = zs_err_set(err, ZS_EUNSUPPORTED, "model %s: device cuda:any but no GPU is usable", mc->name);
            goto fail;
        }
        for (int g = 0; g < ngpu; g++) {
            zs_device_t d = mc->device;
            if (mc->any_gpu) d.index = g;
            uint64_t budget = s->cfg.device_mem;
            if (budget == 0 && d.kind == ZS_DEV_CUDA) {
                size_t fr = 0, tot = 0;
                zs_err_t gerr = {0};
                if (zs_gpu_set_device(d.index, &gerr) == 0 && zs_gpu_mem_info(&fr, &tot, &gerr) == 0)
                    budget = (uint64_t)((double)fr * 0.95);
                else
                    zs_slog(&s->log, ZS_LOG_WARN, NULL, "cuda:%d: cannot read free memory (%s); no device budget",
                            d.index, gerr.msg);
            }
            int slot = zs_res_device(&s->res, d, budget);
            if (slot < 0) {
                rc = zs_err_set(err, ZS_ERANGE, "server: more than %d devices", ZS_RES_MAX_DEV);
                goto fail;
            }
            allowed[i] |= 1u << slot;
        }
    }
    for (int i = 0; i < s->cfg.nmodels; i++) {
        double t0 = zs_now();
        rc = zs_srv_model_load(&s->cfg.models[i], &s->cfg, i, allowed[i], &s->res, s->pool, &s->contexts,
                               &s->metrics, &s->log, &s->models[i], err);
        if (rc) goto fail;
        s->nmodels++;
        zs_slog(&s->log, ZS_LOG_INFO, NULL, "model %s ready in %.3f s", s->models[i].name,
                zs_now() - t0);
    }
    if (s->cfg.probe_bandwidth) {
        /* a bounded read probe: the smallest shard of the first model, if at most 256 MiB */
        const zs_ckpt_t *ck = s->models[0].b->ckpt;
        const char *probe = NULL;
        uint64_t best = (uint64_t)256 << 20;
        for (uint32_t f = 0; f < ck->nfiles; f++)
            if (ck->files[f].size > 0 && ck->files[f].size <= best) {
                best = ck->files[f].size;
                probe = ck->files[f].path;
            }
        zs_res_start_probes(&s->res, probe);
    }
    if (s->cfg.prewarm &&
        (rc = zs_prewarm_start(s->models, s->nmodels, &s->res, s->cfg.prewarm_threshold, &s->log, &s->prewarm, err)))
        goto fail;
    *out = s;
    return 0;
fail:
    zs_server_free(s);
    return rc;
}

int zs_server_start(zs_server_t *s, zs_err_t *err) { return zs_http_start(s, err); }

uint16_t zs_server_port(const zs_server_t *s) { return s->port; }

static int active_requests(zs_server_t *s) {
    int n = 0;
    for (int i = 0; i < s->nmodels; i++) n += zs_sched_active(s->models[i].sched);
    return n;
}

int zs_server_shutdown(zs_server_t *s) {
    atomic_store(&s->stopping, 1);
    zs_prewarm_stop(s->prewarm); /* no pre-warm while draining */
    zs_http_quiesce(s);
    for (int i = 0; i < s->nmodels; i++) zs_sched_drain(s->models[i].sched);
    zs_slog(&s->log, ZS_LOG_INFO, NULL, "shutting down: %d requests in flight, waiting up to %.1f s",
            active_requests(s), s->cfg.shutdown_timeout_s);
    double deadline = zs_now() + s->cfg.shutdown_timeout_s;
    while ((active_requests(s) > 0 || atomic_load(&s->inflight) > 0) && zs_now() < deadline)
        sleep_ms(10);
    int cancelled = active_requests(s);
    if (cancelled > 0) {
        zs_slog(&s->log, ZS_LOG_WARN, NULL, "shutdown deadline passed: cancelling %d requests",
                cancelled);
        for (int i = 0; i < s->nmodels; i++) zs_sched_cancel_all(s->models[i].sched);
        double d2 = zs_now() + 5;
        while ((active_requests(s) > 0 || atomic_load(&s->inflight) > 0) && zs_now() < d2)
            sleep_ms(10);
    }
    zs_http_stop(s);
    zs_slog(&s->log, ZS_LOG_INFO, NULL, "stopped");
    return cancelled;
}

void zs_server_free(zs_server_t *s) {
    if (s == NULL) return;
    zs_http_stop(s);
    zs_prewarm_free(s->prewarm); /* it drives the schedulers; HTTP threads are gone */
    s->prewarm = NULL;
    /* stop every lifecycle first; no placement may pick a scheduler that is going away */
    if (s->res_ready)
        for (int i = 0; i < s->nmodels; i++) zs_res_set_sched(&s->res, i, NULL);
    for (int i = 0; i < s->nmodels; i++) zs_sched_free(s->models[i].sched);
    for (int i = 0; i < s->nmodels; i++) {
        s->models[i].sched = NULL;
        zs_srv_model_free(&s->models[i]);
    }
    if (s->res_ready) zs_res_destroy(&s->res);
    if (s->contexts_ready) zs_ctxreg_destroy(&s->contexts);
    zs_pool_close(s->pool);
    if (s->metrics_ready) zs_metrics_destroy(&s->metrics);
    zs_server_config_free(&s->cfg);
    free(s);
}
