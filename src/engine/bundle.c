/* Bringing up a model for generation (include/zerostart/bundle.h): one loaded model, or its
 * shards over several ranks (tensor parallel). */
#include "zerostart/bundle.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "gpu/gpu_rt.h"

const char *zs_weights_source_name(zs_weights_source_t s) {
    switch (s) {
    case ZS_SRC_PAGE_CACHE: return "page-cache";
    case ZS_SRC_DISK: return "disk";
    case ZS_SRC_POOL: return "pool";
    case ZS_SRC_POOL_FILLED: return "pool-filled";
    }
    return "unknown";
}

void zs_bundle_opts_default(zs_bundle_opts_t *o) {
    memset(o, 0, sizeof *o);
    zs_load_opts_default(&o->load);
    zs_engine_opts_default(&o->engine);
}

static int bundle_path(char *buf, size_t cap, const char *dir, const char *name) {
    return snprintf(buf, cap, "%s/%s", dir, name) < (int)cap;
}

/* eos_token_id of generation_config.json (int or list); 0 entries when absent. */
static int bundle_generation_stops(zs_bundle_t *b, zs_err_t *err) {
    char path[PATH_MAX];
    if (!bundle_path(path, sizeof path, b->ckpt->dir, "generation_config.json") || access(path, F_OK) != 0)
        return ZS_OK;
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) return zs_err_set(err, ZS_EFORMAT, "%s: invalid JSON: %s (line %d)", path, je.text, je.line);
    json_t *eos = json_object_get(root, "eos_token_id");
    int rc = ZS_OK;
    size_t n = json_is_array(eos) ? json_array_size(eos) : (eos && !json_is_null(eos) ? 1 : 0);
    for (size_t i = 0; i < n && rc == ZS_OK; i++) {
        json_t *v = json_is_array(eos) ? json_array_get(eos, i) : eos;
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            rc = zs_err_set(err, ZS_EFORMAT, "%s: eos_token_id must be a token id or a list of them", path);
        else if (b->nstop < ZS_BUNDLE_MAX_STOP)
            b->stop_ids[b->nstop++] = (int32_t)json_integer_value(v);
    }
    json_decref(root);
    return rc;
}

/* Tokenizer and chat template; called while the weights load. */
static int bundle_text_side(zs_bundle_t *b, const zs_bundle_opts_t *o, zs_err_t *err) {
    char path[PATH_MAX];
    if (!bundle_path(path, sizeof path, b->ckpt->dir, "tokenizer.json"))
        return zs_err_set(err, ZS_ERANGE, "%s: path too long", b->ckpt->dir);
    if (access(path, F_OK) == 0) {
        int rc = zs_tok_load(path, &b->tok, err);
        if (rc != ZS_OK) return rc;
    } else if (o->require_tokenizer) {
        return zs_err_set(err, ZS_ENOENT, "%s: no tokenizer.json", b->ckpt->dir);
    }
    if (!bundle_path(path, sizeof path, b->ckpt->dir, "tokenizer_config.json")) return ZS_OK;
    if (access(path, F_OK) != 0) {
        snprintf(b->chat_error, sizeof b->chat_error, "%s: no tokenizer_config.json", b->ckpt->dir);
        return ZS_OK;
    }
    zs_err_t cerr = {0};
    if (zs_chat_template_load_file(path, NULL, &b->chat, &cerr) != ZS_OK)
        snprintf(b->chat_error, sizeof b->chat_error, "%s", cerr.msg);
    return ZS_OK;
}

/* A load the bundle started and has not finished. */
typedef struct zs_bundle_loading {
    zs_bundle_t *b;
    zs_load_t *ld;
    double t0, t_load;
} zs_bundle_loading_t;

/* Engine hook (overlap_load): stage -1 = embeddings, L = layer L, nlayers = final norm and
 * lm_head (with every other non-layer tensor). */
static int bundle_wait_stage(void *ctx, int32_t stage, zs_err_t *err) {
    zs_bundle_loading_t *lg = ctx;
    int32_t n = lg->b->ckpt->nlayers;
    int rc;
    if (stage < 0) {
        rc = zs_load_wait_tensor(lg->ld, "model.embed_tokens.weight", err);
        if (rc == ZS_ENOENT) rc = zs_load_wait_layer(lg->ld, -1, err);
    } else {
        rc = zs_load_wait_layer(lg->ld, stage >= n ? -1 : stage, err);
    }
    return rc;
}

int zs_bundle_finish_load(zs_bundle_t *b, zs_err_t *err) {
    zs_bundle_loading_t *lg = b->loading;
    if (lg == NULL) return ZS_OK;
    b->loading = NULL;
    int rc = ZS_OK;
    if (lg->ld != NULL) {
        if (b->ckpt->nlayers > 0 && zs_load_wait_layer(lg->ld, 0, NULL) == ZS_OK)
            b->timeline.first_layer = lg->t_load - lg->t0 + zs_load_layer_time(lg->ld, 0);
        rc = zs_load_finish(lg->ld, &b->weights, err);
        if (rc == ZS_OK) { /* the loader's clock: when the last byte became resident */
            const zs_load_stats_t *st = &b->weights->stats;
            b->timeline.weights = lg->t_load - lg->t0 + st->total_s;
            b->timeline.bytes = st->bytes;
            b->timeline.load_gbps = st->total_s > 0 ? (double)st->bytes / st->total_s / 1e9 : 0.0;
            if (b->pooled == NULL && b->weights->stats.bytes_direct > 0) b->timeline.source = ZS_SRC_DISK;
            if (b->engine != NULL) zs_engine_weights_resident(b->engine);
        }
    }
    free(lg);
    return rc;
}

/* Attaches (or fills) the model's pool segment and pins it for CUDA loads; points the load
 * options at it. Keeps an existing attachment (a reload after zs_bundle_unload). */
static int bundle_pool(zs_bundle_t *b, zs_bundle_opts_t *o, double t0, zs_err_t *err) {
    if (b->pooled == NULL && o->pool == NULL) return ZS_OK;
    int rc = ZS_OK;
    if (b->pooled == NULL) {
        zs_pool_source_t how;
        rc = zs_pool_acquire(o->pool, b->ckpt, &b->pooled, &how, err);
        if (rc != ZS_OK) return rc;
        b->timeline.source = how == ZS_POOL_HIT ? ZS_SRC_POOL : ZS_SRC_POOL_FILLED;
    } else {
        b->timeline.source = ZS_SRC_POOL;
    }
    if (o->load.device.kind == ZS_DEV_CUDA) {
        /* pinning needs the CUDA context on this thread; done once per attachment */
        rc = zs_gpu_set_device(o->load.device.index, err);
        if (rc == ZS_OK) rc = zs_pool_model_pin(b->pooled, err);
        if (rc != ZS_OK) return rc;
    }
    zs_pool_model_load_opts(b->pooled, &o->load);
    b->timeline.pool = zs_now() - t0;
    return ZS_OK;
}

/* Starts the weights load; b->loading tracks it until zs_bundle_finish_load. */
static int bundle_begin_load(zs_bundle_t *b, const zs_bundle_opts_t *o, double t0, zs_err_t *err) {
    zs_bundle_loading_t *lg = calloc(1, sizeof *lg);
    if (lg == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", b->ckpt->dir);
    b->loading = lg;
    lg->b = b;
    lg->t0 = t0;
    lg->t_load = zs_now();
    return zs_load_begin(b->ckpt, &o->load, &lg->ld, err);
}

/* Tensor parallel: the shards of every rank, read once and in parallel, then the engine over
 * them (every shard is resident first). */
static int bundle_load_tp(zs_bundle_t *b, const zs_bundle_opts_t *o, double t0, zs_err_t *err) {
    if (o->pool != NULL || b->pooled != NULL)
        return zs_err_set(err, ZS_EUNSUPPORTED, "%s: tensor parallel does not load through the hot model pool",
                          b->ckpt->dir);
    if (o->tp > ZS_TP_MAX_RANKS)
        return zs_err_set(err, ZS_EINVAL, "%s: %d ranks (1 to %d supported)", b->ckpt->dir, o->tp, ZS_TP_MAX_RANKS);
    int devices[ZS_TP_MAX_RANKS];
    zs_tp_load_opts_t to;
    zs_tp_load_opts_default(&to);
    to.kind = o->load.device.kind;
    to.ranks = o->tp;
    for (int r = 0; r < o->tp; r++) devices[r] = o->load.device.index + r;
    to.devices = devices;
    to.threads = o->load.threads;
    to.unit_bytes = o->load.chunk_bytes;
    to.staging_slots = o->load.staging_slots;
    to.direct_io = o->load.direct_io;
    const double t_load = zs_now();
    int rc = zs_tp_load(b->ckpt, &to, &b->tp_weights, err);
    if (rc != ZS_OK) return rc;
    const zs_tp_load_stats_t *st = &b->tp_weights->stats;
    b->timeline.weights = t_load - t0 + st->total_s;
    b->timeline.first_layer = b->timeline.weights;
    b->timeline.bytes = st->read_bytes;
    b->timeline.load_gbps = st->total_s > 0 ? (double)st->read_bytes / st->total_s / 1e9 : 0.0;
    if (st->bytes_direct > 0) b->timeline.source = ZS_SRC_DISK;
    return zs_engine_create_tp(b->tp_weights, &o->engine, &b->engine, err);
}

/* Builds the engine: at once over the weights still arriving (overlap_load; each layer is waited
 * for at first use), or once the load is complete. */
static int bundle_make_engine(zs_bundle_t *b, zs_bundle_opts_t *o, zs_err_t *err) {
    if (o->overlap_load) {
        o->engine.wait_weights = bundle_wait_stage;
        o->engine.wait_ctx = b->loading;
        return zs_engine_create(b->ckpt, zs_load_weights(b->loading->ld), &o->engine, &b->engine, err);
    }
    int rc = zs_bundle_finish_load(b, err);
    return rc == ZS_OK ? zs_engine_create(b->ckpt, b->weights, &o->engine, &b->engine, err) : rc;
}

int zs_bundle_open(const char *dir, const zs_bundle_opts_t *opts, zs_bundle_t **out, zs_err_t *err) {
    *out = NULL;
    double t0 = zs_now();
    zs_bundle_opts_t o;
    if (opts) o = *opts;
    else zs_bundle_opts_default(&o);
    o.engine.backend = o.load.device.kind == ZS_DEV_CUDA ? ZS_BACKEND_CUDA : ZS_BACKEND_CPU;
    zs_bundle_t *b = calloc(1, sizeof *b);
    if (b == NULL) return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", dir);
    int rc = zs_ckpt_open(dir, &b->ckpt, err);
    if (rc == ZS_OK && b->ckpt->config_json == NULL)
        rc = zs_err_set(err, ZS_ENOENT, "%s: no config.json", dir);
    if (rc != ZS_OK) goto fail;
    b->timeline.opened = zs_now() - t0;
    b->timeline.source = ZS_SRC_PAGE_CACHE;
    if (o.tp <= 1) {
        rc = bundle_pool(b, &o, t0, err);
        if (rc == ZS_OK) rc = bundle_begin_load(b, &o, t0, err);
        if (rc != ZS_OK) goto fail;
    }
    rc = bundle_text_side(b, &o, err); /* while the weights stream in (tensor parallel: before) */
    if (rc == ZS_OK) rc = bundle_generation_stops(b, err);
    b->timeline.tokenizer = zs_now() - t0;
    if (rc == ZS_OK) rc = o.tp > 1 ? bundle_load_tp(b, &o, t0, err) : bundle_make_engine(b, &o, err);
    if (rc != ZS_OK) goto fail;
    if (b->nstop == 0) {
        const zs_model_config_t *c = zs_engine_config(b->engine);
        for (int32_t i = 0; i < c->n_eos && b->nstop < ZS_BUNDLE_MAX_STOP; i++) b->stop_ids[b->nstop++] = c->eos_ids[i];
    }
    /* the tokenizer's end-of-sequence token stops generation too (as vLLM does) */
    int32_t te = b->tok ? zs_tok_eos_id(b->tok) : -1;
    int have = 0;
    for (int32_t i = 0; i < b->nstop; i++) have |= b->stop_ids[i] == te;
    if (te >= 0 && !have && b->nstop < ZS_BUNDLE_MAX_STOP) b->stop_ids[b->nstop++] = te;
    if (b->tok != NULL && zs_tok_vocab_size(b->tok) > (size_t)zs_engine_config(b->engine)->vocab) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: tokenizer has %zu tokens but the model's vocabulary is %d", dir,
                        zs_tok_vocab_size(b->tok), zs_engine_config(b->engine)->vocab);
        goto fail;
    }
    b->timeline.engine = zs_now() - t0;
    *out = b;
    return ZS_OK;
fail:
    zs_bundle_free(b);
    return rc;
}

void zs_bundle_free(zs_bundle_t *b) {
    if (b == NULL) return;
    zs_bundle_unload(b);
    zs_chat_template_free(b->chat);
    zs_tok_free(b->tok);
    zs_pool_release(b->pooled);
    zs_ckpt_close(b->ckpt);
    free(b);
}

char *zs_bundle_timeline_json(const zs_bundle_t *b, double first_token_s) {
    const zs_bundle_timeline_t *t = &b->timeline;
    json_t *j = json_pack("{s:s,s:s,s:I,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "model", b->ckpt->dir, "source",
                          zs_weights_source_name(t->source), "bytes", (json_int_t)t->bytes, "load_gbps", t->load_gbps,
                          "opened_s", t->opened, "pool_s", t->pool, "tokenizer_s", t->tokenizer, "first_layer_s",
                          t->first_layer, "weights_s", t->weights, "engine_s", t->engine);
    if (j != NULL && first_token_s >= 0) json_object_set_new(j, "first_token_s", json_real(first_token_s));
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

int zs_bundle_loading(const zs_bundle_t *b) {
    return b->loading != NULL && b->loading->ld != NULL && !zs_load_done(b->loading->ld);
}

void zs_bundle_unload(zs_bundle_t *b) {
    if (b == NULL) return;
    zs_engine_free(b->engine);
    b->engine = NULL;
    if (b->loading != NULL && b->loading->ld != NULL) zs_load_cancel(b->loading->ld);
    zs_bundle_finish_load(b, NULL); /* joins the loader threads, then the weights are freed */
    zs_weights_free(b->weights);
    b->weights = NULL;
    zs_tp_weights_free(b->tp_weights);
    b->tp_weights = NULL;
}

int zs_bundle_reload(zs_bundle_t *b, const zs_bundle_opts_t *opts, zs_err_t *err) {
    if (b->engine != NULL || b->weights != NULL || b->tp_weights != NULL || b->loading != NULL)
        return zs_err_set(err, ZS_ESTATE, "%s: the model is loaded", b->ckpt->dir);
    double t0 = zs_now();
    zs_bundle_opts_t o;
    if (opts) o = *opts;
    else zs_bundle_opts_default(&o);
    o.engine.backend = o.load.device.kind == ZS_DEV_CUDA ? ZS_BACKEND_CUDA : ZS_BACKEND_CPU;
    memset(&b->timeline, 0, sizeof b->timeline);
    b->timeline.source = ZS_SRC_PAGE_CACHE;
    int rc;
    if (o.tp > 1) {
        rc = bundle_load_tp(b, &o, t0, err);
    } else {
        rc = bundle_pool(b, &o, t0, err);
        if (rc != ZS_OK) return rc;
        rc = bundle_begin_load(b, &o, t0, err);
        if (rc == ZS_OK) rc = bundle_make_engine(b, &o, err);
    }
    if (rc == ZS_OK) b->timeline.engine = zs_now() - t0;
    else zs_bundle_unload(b);
    return rc;
}
