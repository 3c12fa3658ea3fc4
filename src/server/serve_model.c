/* Bringing up a served model: the shared model bundle (zs_bundle_open), the effective
 * context length (config, --ctx, KV capacity), stop tokens, the kernel warm-up and the
 * scheduler thread; then its lifecycle: every start (initial, or scale from zero or pre-warm
 * on the scheduler thread) goes through placement (residency.c), loads the weights (from the
 * hot pool when there is one) and is recorded as a start-up timeline. Starts after the first
 * are overlapped: the engine is handed to the scheduler while the weights stream in, and the
 * scheduler polls (load_poll_cb) until they are resident, which completes the record.
 * Unloading frees the engine and device weights (cancelling a load in progress) and keeps the
 * pool segment attached (and pinned), the tokenizer and the chat template. */
#include "server/serve_model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"
#include "server/warmup.h"

#define CUDA_OVERHEAD_BYTES ((uint64_t)256 << 20) /* activations, cuBLAS workspace (estimate) */

void zs_srv_model_free(zs_srv_model_t *m) {
    zs_sched_free(m->sched);
    zs_kvt_free(m->kvt); /* after the scheduler: it saved the GPU's prefixes into the store */
    zs_bundle_free(m->b);
    free(m->name);
    if (m->smu_ready) pthread_mutex_destroy(&m->smu);
    memset(m, 0, sizeof *m);
}

/* --- start-up records ---------------------------------------------------------------------- */

static int64_t startup_begin(zs_srv_model_t *m, const zs_sreq_t *trigger, const char *why) {
    double now = zs_now();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    pthread_mutex_lock(&m->smu);
    int64_t seq = ++m->nstarts;
    zs_startup_t *s = &m->starts[(seq - 1) % ZS_STARTUPS_KEPT];
    memset(s, 0, sizeof *s);
    s->seq = seq;
    s->t0 = now;
    s->wall_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
    snprintf(s->trigger, sizeof s->trigger, "%s", why);
    if (trigger) {
        snprintf(s->request_id, sizeof s->request_id, "%s", trigger->id);
        s->queued_s = now - trigger->t_arrive;
    }
    s->placed_s = s->pool_s = s->first_layer_s = s->weights_s = s->engine_s = s->first_token_s = -1;
    s->warmup_s = -1;
    pthread_mutex_unlock(&m->smu);
    return seq;
}

/* The record of start seq (m->smu held), or NULL when it has been dropped. */
static zs_startup_t *startup_at(zs_srv_model_t *m, int64_t seq) {
    if (seq < 1 || seq > m->nstarts || seq <= m->nstarts - ZS_STARTUPS_KEPT) return NULL;
    return &m->starts[(seq - 1) % ZS_STARTUPS_KEPT];
}

static json_t *startup_obj(const zs_startup_t *s) {
    json_t *o = json_object();
    if (o == NULL) return NULL;
    int bad = 0;
#define SETN(k, v) bad |= json_object_set_new(o, k, v) != 0
#define SETT(k, v) SETN(k, (v) >= 0 ? json_real(v) : json_null())
    SETN("seq", json_integer(s->seq));
    SETN("started_at_ms", json_integer(s->wall_ms));
    SETN("trigger", json_string(s->trigger));
    SETN("request_id", s->request_id[0] ? json_string(s->request_id) : json_null());
    SETN("queued_s", json_real(s->queued_s));
    SETN("state", json_string(s->ok > 0 ? "done" : s->ok == -1 ? "failed" : s->ok < 0 ? "cancelled" : "starting"));
    SETN("overlap", json_boolean(s->overlap));
    SETT("placed_s", s->placed_s);
    SETN("placement", json_string(s->placement));
    SETN("device", json_string(s->device));
    SETN("source", s->source[0] ? json_string(s->source) : json_null());
    SETN("bytes", json_integer((json_int_t)s->bytes));
    SETN("load_gbps", json_real(s->load_gbps));
    SETT("pool_s", s->pool_s);
    SETT("first_layer_s", s->first_layer_s);
    SETT("weights_s", s->weights_s);
    SETT("engine_s", s->engine_s);
    SETT("first_token_s", s->first_token_s);
    if (s->first_token_s >= 0 && s->request_id[0]) {
        json_t *kv = json_pack("{s:I, s:I, s:I, s:I, s:f}", "gpu_tokens", (json_int_t)s->kv_gpu_tokens,
                               "host_tokens", (json_int_t)s->kv_host_tokens, "disk_tokens",
                               (json_int_t)s->kv_disk_tokens, "computed_tokens", (json_int_t)s->kv_computed_tokens,
                               "restore_s", s->kv_restore_s);
        SETN("kv_cache", kv ? kv : json_null());
    }
    SETT("warmup_s", s->warmup_s);
    if (s->ok < 0) SETN("error", json_string(s->error));
#undef SETT
#undef SETN
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static char *startup_text(const zs_startup_t *s) {
    json_t *o = startup_obj(s);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return t;
}

char *zs_srv_model_startups_json(zs_srv_model_t *m) {
    json_t *a = json_array();
    if (a == NULL) return NULL;
    pthread_mutex_lock(&m->smu);
    int64_t first = m->nstarts - ZS_STARTUPS_KEPT + 1;
    if (first < 1) first = 1;
    int bad = 0;
    for (int64_t q = first; q <= m->nstarts && !bad; q++)
        bad = json_array_append_new(a, startup_obj(startup_at(m, q))) != 0;
    pthread_mutex_unlock(&m->smu);
    json_t *root = bad ? NULL : json_pack("{s:s, s:s, s:o}", "object", "list", "model", m->name, "data", a);
    if (root == NULL) {
        if (!bad) return NULL; /* json_pack took a */
        json_decref(a);
        return NULL;
    }
    char *t = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return t;
}

char *zs_srv_model_last_startup_json(zs_srv_model_t *m) {
    pthread_mutex_lock(&m->smu);
    zs_startup_t *s = startup_at(m, m->nstarts);
    char *t = s ? startup_text(s) : NULL;
    pthread_mutex_unlock(&m->smu);
    return t;
}

const char *zs_srv_model_location(zs_srv_model_t *m) {
    int st = m->sched ? zs_sched_state(m->sched) : ZS_MODEL_READY;
    if (st == ZS_MODEL_READY || st == ZS_MODEL_UNLOADING) return "device";
    return m->pooled ? "pool" : "storage";
}

static void first_token_cb(void *ctx, int64_t seq, double t, const zs_sreq_t *r) {
    zs_srv_model_t *m = ctx;
    pthread_mutex_lock(&m->smu);
    zs_startup_t *s = startup_at(m, seq);
    char *txt = NULL;
    if (s) {
        s->first_token_s = t - s->t0;
        s->kv_gpu_tokens = r->kvu.gpu_tokens;
        s->kv_host_tokens = r->kvu.host_tokens;
        s->kv_disk_tokens = r->kvu.disk_tokens;
        s->kv_computed_tokens = r->kvu.computed_tokens;
        s->kv_restore_s = r->kvu.restore_s;
        txt = startup_text(s);
    }
    pthread_mutex_unlock(&m->smu);
    if (txt) zs_slog(m->log, ZS_LOG_INFO, NULL, "model %s start-up %lld first token: %s", m->name, (long long)seq, txt);
    free(txt);
}

/* --- starting and stopping ----------------------------------------------------------------- */

static void dev_text(zs_device_t d, char *buf, size_t cap) {
    if (d.kind == ZS_DEV_CPU) snprintf(buf, cap, "cpu");
    else snprintf(buf, cap, "cuda:%d", d.index);
}

/* Start seq ended without a model: ok -1 failed (counted), -2 cancelled. */
static void startup_ended(zs_srv_model_t *m, int64_t seq, int ok, const char *msg) {
    pthread_mutex_lock(&m->smu);
    zs_startup_t *s = startup_at(m, seq);
    if (s) {
        s->ok = ok;
        snprintf(s->error, sizeof s->error, "%.250s", msg);
    }
    pthread_mutex_unlock(&m->smu);
    if (ok == -1) zs_metrics_startup(m->metrics, NULL, 0, 0);
}

/* The measured host->device rate of the model's GPU (0: unknown, or a CPU model). */
static double model_h2d_gbps(void *ctx) {
    zs_srv_model_t *m = ctx;
    zs_res_dev_t devs[ZS_RES_MAX_DEV];
    double h2d = 0;
    int n = zs_res_snapshot(m->res, devs, ZS_RES_MAX_DEV, NULL);
    for (int i = 0; i < n; i++)
        if (devs[i].dev.kind == ZS_DEV_CUDA && m->bo.load.device.kind == ZS_DEV_CUDA &&
            devs[i].dev.index == m->bo.load.device.index)
            h2d = devs[i].h2d_gbps;
    return h2d;
}

/* The measured rates the KV store's cost model uses: host->device of the model's GPU, and
 * the weights' read rate of this start, as a disk or a page-cache rate by where they came from. */
static void kv_bandwidth(zs_srv_model_t *m) {
    if (m->kvt == NULL) return;
    double h2d = model_h2d_gbps(m);
    const zs_bundle_timeline_t *tl = m->b ? &m->b->timeline : NULL;
    double disk = tl && tl->source == ZS_SRC_DISK ? tl->load_gbps : 0;
    double cached = tl && tl->source == ZS_SRC_PAGE_CACHE ? tl->load_gbps : 0;
    zs_kvt_set_bandwidth(m->kvt, h2d, disk, cached);
}

static void startup_failed(zs_srv_model_t *m, int64_t seq, const char *msg) { startup_ended(m, seq, -1, msg); }

/* Start seq is complete (every weight resident; placed at t_placed): the measured footprint
 * and transfer go to placement, the timeline to the record, the metrics and the log. */
static void startup_complete(zs_srv_model_t *m, int64_t seq, double t_placed) {
    const zs_bundle_timeline_t *tl = &m->b->timeline;
    uint64_t footprint = m->b->weights->bytes + m->kv_bytes +
                         (m->bo.load.device.kind == ZS_DEV_CUDA ? CUDA_OVERHEAD_BYTES : 0);
    m->pooled = m->b->pooled != NULL;
    zs_place_tier_t next = m->pooled ? ZS_TIER_POOL_PINNED : ZS_TIER_PAGE_CACHE;
    double transfer = tl->weights - tl->pool;
    double read_gbps = 0;
    if (tl->source == ZS_SRC_PAGE_CACHE || tl->source == ZS_SRC_DISK) read_gbps = tl->load_gbps;
    zs_res_loaded(m->res, m->idx, footprint, next, transfer, read_gbps);
    kv_bandwidth(m);
    const char *src = zs_weights_source_name(tl->source);
    double total = 0;
    char *txt = NULL;
    pthread_mutex_lock(&m->smu);
    zs_startup_t *s = startup_at(m, seq);
    if (s) {
        double off = t_placed - s->t0;
        snprintf(s->source, sizeof s->source, "%s", src);
        s->bytes = tl->bytes;
        s->load_gbps = tl->load_gbps;
        s->pool_s = tl->pool > 0 ? off + tl->pool : -1;
        s->first_layer_s = off + tl->first_layer;
        s->weights_s = off + tl->weights;
        s->ok = 1;
        total = s->engine_s > s->weights_s ? s->engine_s : s->weights_s;
        txt = startup_text(s);
    }
    pthread_mutex_unlock(&m->smu);
    zs_metrics_startup(m->metrics, src, total, 1);
    if (txt) zs_slog(m->log, ZS_LOG_INFO, NULL, "model %s start-up %lld: %s", m->name, (long long)seq, txt);
    free(txt);
}

/* Loads the model placed by d: the first time with zs_bundle_open (path), later with
 * zs_bundle_reload (overlapped: the weights may still be arriving when it returns; m->pending
 * says so). Records start-up seq; on failure releases the reservation. */
static int model_start(zs_srv_model_t *m, const char *path, int64_t seq, const zs_res_decision_t *d,
                       zs_err_t *err) {
    double t_placed = zs_now();
    m->bo.load.device = d->device;
    pthread_mutex_lock(&m->smu);
    zs_startup_t *s = startup_at(m, seq);
    if (s) {
        s->placed_s = t_placed - s->t0;
        snprintf(s->placement, sizeof s->placement, "%.250s", d->text);
        dev_text(d->device, s->device, sizeof s->device);
    }
    pthread_mutex_unlock(&m->smu);
    int rc = 0;
    if (d->device.kind == ZS_DEV_CUDA) rc = zs_gpu_set_device(d->device.index, err); /* this thread runs the engine */
    if (rc == 0) {
        if (path) rc = zs_bundle_open(path, &m->bo, &m->b, err);
        else rc = zs_bundle_reload(m->b, &m->bo, err);
    }
    if (rc != 0) {
        if (path && m->bo.pool != NULL && rc == ZS_ENOMEM && strstr(err->msg, "pool") != NULL) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            zs_err_clear(err);
            zs_err_set(err, rc, "model %s does not fit in the hot model pool: %.900s (raise --pool-size)", m->name, msg);
        }
        zs_res_release(m->res, m->idx);
        startup_failed(m, seq, err->msg);
        return rc;
    }
    const zs_kv_cache_t *kv = zs_engine_kv(m->b->engine);
    m->kv_bytes = (uint64_t)kv->nblocks * kv->layout.block_bytes;
    int overlap = m->b->loading != NULL;
    pthread_mutex_lock(&m->smu);
    s = startup_at(m, seq);
    if (s) {
        s->engine_s = t_placed - s->t0 + m->b->timeline.engine;
        s->overlap = overlap;
        /* provisional while the weights stream in: a storage load may turn out to be "disk" */
        snprintf(s->source, sizeof s->source, "%s", zs_weights_source_name(m->b->timeline.source));
    }
    pthread_mutex_unlock(&m->smu);
    if (overlap) { /* completed by load_poll_cb */
        m->pending = seq;
        m->pending_placed = t_placed;
        return 0;
    }
    startup_complete(m, seq, t_placed);
    return 0;
}

static int load_cb(void *ctx, const zs_sreq_t *trigger, const char *why, const atomic_int *abort, zs_engine_t **e,
                   int64_t *startup, zs_err_t *err) {
    zs_srv_model_t *m = ctx;
    zs_res_decision_t d;
    int64_t seq;
    int rc;
    *e = NULL;
    if (strcmp(why, "prewarm") == 0) {
        rc = zs_res_acquire_idle(m->res, m->idx, &d, err);
        if (rc != 0) return rc; /* no idle room: nothing placed, nothing recorded */
        seq = startup_begin(m, NULL, why);
        zs_slog(m->log, ZS_LOG_INFO, NULL, "model %s: starting (prewarm)", m->name);
    } else {
        seq = startup_begin(m, trigger, why);
        zs_slog(m->log, ZS_LOG_INFO, trigger ? trigger->id : NULL, "model %s: starting (%s)", m->name, why);
        rc = zs_res_acquire(m->res, m->idx, abort, &d, err);
        if (rc != 0) {
            startup_failed(m, seq, err->msg);
            *startup = seq;
            return rc;
        }
    }
    *startup = seq;
    rc = model_start(m, NULL, seq, &d, err);
    if (rc == 0) *e = m->b->engine;
    return rc;
}

/* The scheduler asks whether the weights of an overlapped start are all in (see
 * zs_sched_life_t.load_poll). */
static int load_poll_cb(void *ctx, int block, zs_err_t *err) {
    zs_srv_model_t *m = ctx;
    if (m->pending == 0) return 0;
    if (!block && zs_bundle_loading(m->b)) return 1;
    int64_t seq = m->pending;
    m->pending = 0;
    int rc = zs_bundle_finish_load(m->b, err);
    if (rc != 0) {
        startup_failed(m, seq, err->msg);
        return rc < 0 ? rc : ZS_EIO;
    }
    startup_complete(m, seq, m->pending_placed);
    return 0;
}

static void unload_cb(void *ctx, const char *why) {
    zs_srv_model_t *m = ctx;
    double t0 = zs_now();
    int64_t pending = m->pending;
    m->pending = 0;
    zs_bundle_unload(m->b); /* cancels a load still in progress */
    zs_res_release(m->res, m->idx);
    if (pending) {
        char msg[160];
        snprintf(msg, sizeof msg, "cancelled: unloaded (%.60s) before every weight was resident", why);
        startup_ended(m, pending, -2, msg);
        zs_slog(m->log, ZS_LOG_INFO, NULL, "model %s start-up %lld cancelled (%s)", m->name, (long long)pending, why);
    }
    zs_slog(m->log, ZS_LOG_INFO, NULL, "model %s scaled to zero (%s) in %.3f s; weights stay in %s", m->name, why,
            zs_now() - t0, m->pooled ? "the pool" : "storage");
}

/* Device bytes a start will need before the first start measured it. */
static int estimate_footprint(const zs_server_model_cfg_t *mc, uint64_t *weights, uint64_t *footprint,
                              zs_err_t *err) {
    zs_ckpt_t *ck = NULL;
    int rc = zs_ckpt_open(mc->path, &ck, err);
    if (rc == 0) rc = zs_load_alloc_bytes(ck, weights, err);
    zs_ckpt_close(ck);
    if (rc != 0) return rc;
    *footprint = *weights + (mc->kv_bytes ? mc->kv_bytes : ((uint64_t)64 << 20)) +
                 (mc->device.kind == ZS_DEV_CUDA ? CUDA_OVERHEAD_BYTES : 0);
    return 0;
}

int zs_srv_model_load(const zs_server_model_cfg_t *mc, const zs_server_config_t *cfg, int idx,
                      uint32_t allowed, zs_res_t *res, zs_pool_t *pool, zs_ctxreg_t *contexts, zs_metrics_t *m,
                      const zs_slog_t *log, zs_srv_model_t *out, zs_err_t *err) {
    memset(out, 0, sizeof *out);
    int rc;
    out->name = strdup(mc->name);
    if (out->name == NULL) return zs_err_set(err, ZS_ENOMEM, "out of memory");
    if (pthread_mutex_init(&out->smu, NULL) != 0) {
        free(out->name);
        out->name = NULL;
        return zs_err_set(err, ZS_ENOMEM, "out of memory");
    }
    out->smu_ready = 1;
    out->idx = idx;
    out->res = res;
    out->metrics = m;
    out->log = log;
    out->created = (int64_t)time(NULL);
    out->keep_alive_s = mc->keep_alive_s >= 0 ? mc->keep_alive_s : cfg->keep_alive_s;
    zs_bundle_opts_default(&out->bo);
    out->bo.load.device = mc->device;
    out->bo.engine.threads = cfg->threads;
    out->bo.engine.kv_bytes = mc->kv_bytes;
    out->bo.engine.max_step_tokens = cfg->step_tokens;
    out->bo.require_tokenizer = 1;
    out->bo.pool = pool;
    uint64_t wbytes = 0, footprint = 0;
    if ((rc = estimate_footprint(mc, &wbytes, &footprint, err))) goto fail;
    zs_res_model(res, idx, out->name, allowed, footprint, wbytes, pool ? ZS_TIER_POOL : ZS_TIER_PAGE_CACHE);
    int64_t seq = startup_begin(out, NULL, "initial");
    zs_res_decision_t d;
    if ((rc = zs_res_acquire(res, idx, NULL, &d, err))) {
        startup_failed(out, seq, err->msg);
        goto fail;
    }
    if ((rc = model_start(out, mc->path, seq, &d, err))) goto fail;
    out->tok = out->b->tok;
    out->tmpl = out->b->chat;
    out->tmpl_err = out->b->chat_error;
    zs_engine_t *e = out->b->engine;
    if (out->tok == NULL) {
        rc = zs_err_set(err, ZS_ENOENT, "model %s: no tokenizer.json in %s", mc->name, mc->path);
        goto fail_release;
    }
    if (out->tmpl == NULL)
        zs_slog(log, ZS_LOG_WARN, NULL, "model %s: no chat template (%s); /v1/chat/completions "
                "will answer 400", mc->name, out->tmpl_err);

    const zs_model_config_t *mcfg = zs_engine_config(e);
    const zs_kv_cache_t *kv = zs_engine_kv(e);
    out->vocab = mcfg->vocab;
    int64_t ctx = mcfg->max_pos;
    if (mc->ctx > 0) {
        if (mc->ctx > ctx) {
            rc = zs_err_set(err, ZS_EINVAL, "model %s: --ctx %lld exceeds the model's "
                            "max_position_embeddings (%lld)", mc->name, (long long)mc->ctx,
                            (long long)ctx);
            goto fail_release;
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
    for (int32_t i = 0; i < out->b->nstop; i++) /* the bundle's stop tokens, as `zerostart run` uses */
        if (out->b->stop_ids[i] >= 0 && out->b->stop_ids[i] < out->vocab)
            out->eos[out->neos++] = out->b->stop_ids[i];
    int64_t warm_tokens = 0;
    double warm_prefill_s = 0;
    if (cfg->warmup > 0 || (cfg->warmup < 0 && out->bo.load.device.kind == ZS_DEV_CUDA)) {
        double tw = zs_now();
        if ((rc = zs_srv_warmup(e, cfg->step_tokens, ctx, &warm_tokens, &warm_prefill_s, err))) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s", err->msg);
            zs_err_clear(err);
            rc = zs_err_set(err, rc, "model %s: kernel warm-up: %.900s", mc->name, msg);
            goto fail_release;
        }
        tw = zs_now() - tw;
        pthread_mutex_lock(&out->smu);
        zs_startup_t *st = startup_at(out, seq);
        if (st) st->warmup_s = tw;
        pthread_mutex_unlock(&out->smu);
        zs_slog(log, ZS_LOG_INFO, NULL, "model %s: kernel warm-up in %.3f s", out->name, tw);
    }
    out->bo.overlap_load = 1; /* from now on a start hands the engine over while the weights stream in */

    char tok_path[4200], extra[64] = "";
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", out->b->ckpt->dir);
    if (out->b->pooled)
        snprintf(extra, sizeof extra, "pool-content:%016llx", (unsigned long long)zs_pool_model_hash(out->b->pooled));
    zs_kvt_opts_t ko = {.host_bytes = cfg->kv_host_bytes, .disk_dir = cfg->kv_disk_dir,
                        .disk_bytes = cfg->kv_disk_bytes, .no_fsync = cfg->kv_no_fsync,
                        .read_delay_ms = cfg->kv_read_delay_ms,
                        .cuda_device = out->bo.load.device.kind == ZS_DEV_CUDA ? out->bo.load.device.index : -1,
                        .h2d_gbps = model_h2d_gbps, .h2d_ctx = out};
    if ((rc = zs_kvt_create(&ko, out->b->ckpt, tok_path, extra[0] ? extra : NULL, &out->kvt, err))) goto fail_release;
    /* the warm-up's full-step prefill: the cost model's first prefill rate */
    zs_kvt_note_prefill(out->kvt, warm_tokens, (double)warm_tokens * (double)(warm_tokens - 1) / 2, warm_prefill_s);
    zs_sched_opts_t so = {.name = out->name, .max_queue = cfg->max_queue,
                          .max_batch = cfg->max_batch, .step_tokens = cfg->step_tokens,
                          .step_delay_ms = cfg->step_delay_ms, .ctx = ctx, .eos = out->eos,
                          .neos = out->neos, .keep_alive_s = out->keep_alive_s,
                          .cuda_device = out->bo.load.device.kind == ZS_DEV_CUDA ? out->bo.load.device.index : -1,
                          .kvt = out->kvt, .contexts = contexts};
    zs_sched_life_t life = {.ctx = out, .load = load_cb, .load_poll = load_poll_cb, .unload = unload_cb,
                            .first_token = first_token_cb};
    if ((rc = zs_sched_create(e, out->tok, &so, &life, m, log, &out->sched, err))) goto fail_release;
    zs_res_set_sched(res, idx, out->sched);
    kv_bandwidth(out);
    if (zs_kvt_warning(out->kvt)) zs_slog(log, ZS_LOG_WARN, NULL, "model %s: %s", out->name, zs_kvt_warning(out->kvt));
    if (zs_kvt_has_store(out->kvt))
        zs_slog(log, ZS_LOG_INFO, NULL, "model %s: KV store: host tier %.2f GiB, disk tier %s", out->name,
                (double)cfg->kv_host_bytes / (1 << 30), zs_kvt_disk_path(out->kvt) ? zs_kvt_disk_path(out->kvt) : "off");
    zs_slog(log, ZS_LOG_INFO, NULL,
            "model %s: %s, %d layers, vocab %d, context %lld, KV %u blocks of %d, chat "
            "template: %s, keep-alive %s, loaded in %.3f s", out->name, zs_arch_name(mcfg->arch), mcfg->nlayers,
            mcfg->vocab, (long long)ctx, kv->nblocks, kv->layout.block_size,
            out->tmpl ? "yes" : "no", out->keep_alive_s > 0 ? "on" : "off", out->b->timeline.engine);
    return 0;
fail_release:
    if (out->kvt) zs_kvt_unbind(out->kvt); /* its engine goes now */
    zs_bundle_unload(out->b);
    zs_res_release(res, idx);
fail:
    zs_srv_model_free(out);
    return rc;
}
