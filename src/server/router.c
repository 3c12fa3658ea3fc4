/* Endpoint dispatch and handlers: /health, /metrics, /v1/models, /v1/completions,
 * /v1/chat/completions (prompt building, context checks, sampler set-up, submission to the
 * model's scheduler, streaming or waiting for the result). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/clock.h"
#include "server/auth.h"
#include "server/openai_response.h"
#include "server/scheduler.h"
#include "server/server_internal.h"

#define ERR(st, type, param, code, ...)                                     \
    do {                                                                    \
        zs_oai_error_set(&e, (st), (type), (param), (code), __VA_ARGS__);   \
        goto fail;                                                          \
    } while (0)

static enum MHD_Result send_json(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                                 int status, char *json) {
    if (json == NULL) {
        zs_oai_error_t e;
        zs_oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        return zs_http_error(s, c, cc, &e);
    }
    return zs_http_send(s, c, cc, status, "application/json", json, strlen(json));
}

static zs_srv_model_t *find_model(zs_server_t *s, const char *name) {
    for (int i = 0; i < s->nmodels; i++)
        if (strcmp(s->models[i].name, name) == 0) return &s->models[i];
    return NULL;
}

static uint64_t random_seed(zs_server_t *s) {
    uint64_t z = (uint64_t)(zs_now() * 1e9) ^ s->salt ^ (atomic_fetch_add(&s->counter, 1) << 40);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

char *zs_tenant_salt(const zs_conn_t *cc, const char *cache_salt, int *oom) {
    *oom = 0;
    size_t a = strlen(cc->tenant), b = cache_salt ? strlen(cache_salt) : 0;
    if (a == 0 && b == 0) return NULL;
    char *t = malloc(a + b + 2);
    if (t == NULL) {
        *oom = 1;
        return NULL;
    }
    snprintf(t, a + b + 2, "%s%s%s", cc->tenant, a && b ? "/" : "", b ? cache_salt : "");
    return t;
}

int zs_build_prompt(const zs_srv_model_t *m, const zs_oai_req_t *q, int add_generation_prompt, int32_t **out,
                    int32_t *nout, zs_oai_error_t *e) {
    zs_err_t err = {0};
    size_t n = 0;
    int32_t *ids = NULL;
    if (q->kind == ZS_OAI_CHAT) {
        if (m->tmpl == NULL) {
            zs_oai_error_set(e, 400, "invalid_request_error", "messages", "no_chat_template",
                             "model '%s' has no chat template (%s); use /v1/completions",
                             m->name, m->tmpl_err);
            return -1;
        }
        char *text = NULL;
        size_t len = 0;
        int rc = zs_chat_template_render(m->tmpl, q->messages, add_generation_prompt, NULL, &text, &len, &err);
        if (rc != 0) {
            zs_oai_error_set(e, rc == ZS_ENOMEM ? 500 : 400,
                             rc == ZS_ENOMEM ? "server_error" : "invalid_request_error",
                             "messages", "chat_template_error", "chat template: %s", err.msg);
            return -1;
        }
        rc = zs_tok_encode(m->tok, text, len, 0, &ids, &n, &err);
        free(text);
        if (rc != 0) {
            zs_oai_error_set(e, 500, "server_error", NULL, NULL, "tokenizer: %s", err.msg);
            return -1;
        }
    } else if (q->prompt) {
        if (zs_tok_encode(m->tok, q->prompt, q->prompt_len, 1, &ids, &n, &err) != 0) {
            zs_oai_error_set(e, 500, "server_error", NULL, NULL, "tokenizer: %s", err.msg);
            return -1;
        }
    } else {
        for (size_t i = 0; i < q->nprompt_ids; i++)
            if (q->prompt_ids[i] >= m->vocab) {
                zs_oai_error_set(e, 400, "invalid_request_error", "prompt", "invalid_value",
                                 "prompt token id %d (index %zu) is outside the vocabulary (%d)",
                                 q->prompt_ids[i], i, m->vocab);
                return -1;
            }
        ids = malloc(q->nprompt_ids * sizeof *ids);
        if (ids == NULL) {
            zs_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
            return -1;
        }
        memcpy(ids, q->prompt_ids, q->nprompt_ids * sizeof *ids);
        n = q->nprompt_ids;
    }
    const char *param = q->kind == ZS_OAI_CHAT ? "messages" : "prompt";
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->vocab) {
            int32_t bad = ids[i];
            free(ids);
            zs_oai_error_set(e, 500, "server_error", NULL, NULL,
                             "the tokenizer produced id %d, outside the model's vocabulary (%d)",
                             bad, m->vocab);
            return -1;
        }
    if (n == 0) {
        free(ids);
        zs_oai_error_set(e, 400, "invalid_request_error", param, "invalid_value",
                         "the prompt is empty (0 tokens)");
        return -1;
    }
    if ((int64_t)n >= m->ctx) {
        free(ids);
        zs_oai_error_set(e, 400, "invalid_request_error", param, "context_length_exceeded",
                         "This model's maximum context length is %lld tokens. However, your "
                         "prompt has %zu tokens, which leaves no room for the completion.",
                         (long long)m->ctx, n);
        return -1;
    }
    *out = ids;
    *nout = (int32_t)n;
    return 0;
}

/* Fills r->prompt from the parsed request: chat template + encode, text encode, or ids. */
static int build_prompt(zs_srv_model_t *m, zs_sreq_t *r, zs_oai_error_t *e) {
    return zs_build_prompt(m, &r->oai, 1, &r->prompt, &r->nprompt, e);
}

static enum MHD_Result handle_generate(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                                       zs_oai_kind_t kind) {
    zs_oai_error_t e;
    zs_err_t err = {0};
    zs_sreq_t *r = zs_sreq_new();
    if (r == NULL) {
        zs_oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        return zs_http_error(s, c, cc, &e);
    }
    snprintf(r->id, sizeof r->id, "%s-%s", kind == ZS_OAI_CHAT ? "chatcmpl" : "cmpl", cc->rid);
    if (zs_oai_request_parse(kind, cc->body ? cc->body : "", cc->len, &r->oai, &e) != 0) goto fail;
    zs_oai_req_t *q = &r->oai;
    zs_srv_model_t *m = find_model(s, q->model);
    if (m == NULL)
        ERR(404, "invalid_request_error", "model", "model_not_found",
            "The model '%.100s' does not exist", q->model);
    if (build_prompt(m, r, &e) != 0) goto fail;
    int oom = 0;
    r->cache_salt = zs_tenant_salt(cc, q->cache_salt, &oom);
    if (oom) ERR(500, "server_error", NULL, NULL, "out of memory");
    int64_t room = m->ctx - r->nprompt;
    if (q->max_tokens > room)
        ERR(400, "invalid_request_error", "max_tokens",
            "context_length_exceeded",
            "This model's maximum context length is %lld tokens. However, you requested %lld "
            "tokens (%d in the %s, %lld for the completion). Please reduce the length.",
            (long long)m->ctx, (long long)(r->nprompt + q->max_tokens), r->nprompt,
            kind == ZS_OAI_CHAT ? "messages" : "prompt", (long long)q->max_tokens);
    r->max_tokens = q->max_tokens > 0 ? q->max_tokens : kind == ZS_OAI_CHAT ? room : (room < 16 ? room : 16);

    zs_sampling_params_t sp;
    zs_sampling_params_default(&sp);
    sp.temperature = (float)q->temperature;
    sp.top_p = (float)q->top_p;
    sp.top_k = q->top_k;
    sp.min_p = (float)q->min_p;
    sp.presence_penalty = (float)q->presence_penalty;
    sp.frequency_penalty = (float)q->frequency_penalty;
    sp.repetition_penalty = (float)q->repetition_penalty;
    sp.seed = q->has_seed ? q->seed : random_seed(s);
    sp.max_tokens = (int32_t)r->max_tokens;
    sp.stop_ids = q->ignore_eos ? NULL : m->eos;
    sp.nstop = q->ignore_eos ? 0 : m->neos;
    if (zs_sampler_init(&r->smp, &sp, m->vocab, &err) != 0)
        ERR(400, "invalid_request_error", NULL, "invalid_value", "sampling: %s", err.msg);
    r->smp_ready = 1;
    if (zs_sampler_add_prompt(&r->smp, r->prompt, (size_t)r->nprompt, &err) != 0 ||
        zs_tok_stream_new(m->tok, 1, &r->ts, &err) != 0)
        ERR(500, "server_error", NULL, NULL, "%s", err.msg);

    int rc = zs_sched_submit(m->sched, r);
    if (rc == ZS_EBUSY)
        ERR(503, "server_error", NULL, "overloaded",
            "the server is overloaded: %d requests are already waiting for model '%s'; retry later",
            s->cfg.max_queue, m->name);
    if (rc != 0) ERR(503, "server_error", NULL, "shutting_down", "the server is shutting down");
    zs_prewarm_observe(s->prewarm, m->idx, r->t_arrive); /* request history for pre-warming */
    zs_slog(&s->log, ZS_LOG_DEBUG, r->id, "queued: model %s, %d prompt tokens, max_tokens %lld%s",
            m->name, r->nprompt, (long long)r->max_tokens, q->stream ? ", streaming" : "");

    if (q->stream) {
        struct MHD_Response *resp =
            zs_sse_response(s, r, kind, m->name, q->include_usage, zs_http_conn_fd(c));
        if (resp == NULL) {
            zs_sreq_cancel(r, ZS_CANCEL_CLIENT);
            ERR(500, "server_error", NULL, NULL, "out of memory");
        }
        enum MHD_Result ok = MHD_add_response_header(resp, "X-Request-Id", cc->rid);
        if (ok == MHD_YES) ok = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        if (ok == MHD_YES) {
            cc->status = 200;
            zs_metrics_status(&s->metrics, 200);
        } else {
            zs_sreq_cancel(r, ZS_CANCEL_CLIENT);
        }
        zs_sreq_release(r);
        return ok;
    }

    /* non-streaming: wait for the whole result, watching for the client going away */
    char *text = NULL;
    size_t len = 0;
    zs_sreq_out_t o;
    int fd = zs_http_conn_fd(c);
    for (;;) {
        int got = zs_sreq_take(r, 100, &o);
        if (o.text) {
            char *nt = realloc(text, len + o.len + 1);
            if (nt == NULL) {
                free(o.text);
                free(text);
                zs_sreq_cancel(r, ZS_CANCEL_CLIENT);
                ERR(500, "server_error", NULL, NULL, "out of memory");
            }
            text = nt;
            memcpy(text + len, o.text, o.len);
            len += o.len;
            text[len] = 0;
            free(o.text);
        }
        if (o.done) break;
        if (!got && zs_fd_peer_closed(fd)) {
            zs_slog(&s->log, ZS_LOG_INFO, r->id, "client disconnected before the response");
            zs_sreq_cancel(r, ZS_CANCEL_CLIENT);
            free(text);
            zs_sreq_release(r);
            return MHD_NO;
        }
    }
    if (o.err_status) {
        free(text);
        ERR(o.err_status, o.err_status >= 500 ? "server_error" : "invalid_request_error", NULL,
            NULL, "%s", o.err_msg);
    }
    zs_oai_meta_t meta = {.kind = kind, .id = r->id, .created = (int64_t)time(NULL), .model = m->name};
    zs_oai_usage_t u;
    zs_sreq_usage(r, &o, &u);
    char *json = zs_oai_completion_json(&meta, text, len, o.finish, &u);
    free(text);
    zs_sreq_release(r);
    return send_json(s, c, cc, 200, json);
fail:
    zs_sreq_release(r);
    return zs_http_error(s, c, cc, &e);
}

static enum MHD_Result handle_models(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                                     const char *one) {
    zs_oai_model_info_t info[ZS_SERVER_MAX_MODELS];
    char where[ZS_SERVER_MAX_MODELS][32];
    for (int i = 0; i < s->nmodels; i++) {
        zs_srv_model_t *m = &s->models[i];
        zs_res_where(&s->res, i, where[i], sizeof where[i]);
        info[i] = (zs_oai_model_info_t){.id = m->name, .created = m->created, .max_model_len = m->ctx,
                                        .state = zs_model_state_name(zs_sched_state(m->sched)),
                                        .location = zs_srv_model_location(m), .device = where[i],
                                        .keep_alive_s = m->keep_alive_s};
    }
    if (one == NULL) return send_json(s, c, cc, 200, zs_oai_models_json(info, s->nmodels));
    for (int i = 0; i < s->nmodels; i++)
        if (strcmp(info[i].id, one) == 0) return send_json(s, c, cc, 200, zs_oai_model_json(&info[i]));
    zs_oai_error_t e;
    zs_oai_error_set(&e, 404, "invalid_request_error", "model", "model_not_found",
                     "The model '%.100s' does not exist", one);
    return zs_http_error(s, c, cc, &e);
}

static enum MHD_Result handle_metrics(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc) {
    zs_model_gauges_t g[ZS_SERVER_MAX_MODELS];
    for (int i = 0; i < s->nmodels; i++) {
        zs_sched_gauges(s->models[i].sched, &g[i]);
        g[i].model = s->models[i].name;
        g[i].loaded = zs_sched_state(s->models[i].sched) == ZS_MODEL_READY;
    }
    size_t len = 0;
    char *txt = zs_metrics_render(&s->metrics, g, s->nmodels, &len);
    if (txt == NULL) {
        zs_oai_error_t e;
        zs_oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        return zs_http_error(s, c, cc, &e);
    }
    return zs_http_send(s, c, cc, 200, "text/plain; version=0.0.4; charset=utf-8", txt, len);
}

static enum MHD_Result handle_startups(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                                       zs_srv_model_t *m) {
    return send_json(s, c, cc, 200, zs_srv_model_startups_json(m));
}

/* {"id", "state", "location", "startup"} of a model after an admin action. */
static char *model_state_json(zs_srv_model_t *m, const char *note) {
    char *last = zs_srv_model_last_startup_json(m);
    json_t *st = last ? json_loads(last, 0, NULL) : json_null();
    free(last);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o}", "id", m->name, "state",
                          zs_model_state_name(zs_sched_state(m->sched)), "location", zs_srv_model_location(m),
                          "last_startup", st ? st : json_null());
    if (o && note) json_object_set_new(o, "note", json_string(note));
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return t;
}

/* POST /admin/models/{id}/load|unload: asks the model's scheduler, waits (bounded) for it. */
static enum MHD_Result handle_admin_model(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                                          zs_srv_model_t *m, int load) {
    char msg[320] = "";
    int rc;
    if (load) {
        zs_sched_request_load(m->sched);
        rc = zs_sched_wait_state(m->sched, ZS_MODEL_READY, 600, msg, sizeof msg);
    } else {
        zs_sched_request_unload(m->sched, 1);
        rc = zs_sched_wait_state(m->sched, ZS_MODEL_UNLOADED, 10, msg, sizeof msg);
    }
    zs_slog(&s->log, ZS_LOG_INFO, cc->rid, "admin: %s model %s: %s", load ? "load" : "unload", m->name,
            rc > 0 ? "done" : rc < 0 ? msg : "pending");
    if (rc < 0) {
        zs_oai_error_t e;
        zs_oai_error_set(&e, 503, "server_error", NULL, "load_failed", "%s", msg);
        return zs_http_error(s, c, cc, &e);
    }
    return send_json(s, c, cc, rc > 0 ? 200 : 202,
                     model_state_json(m, rc > 0 ? NULL : "requests are running: it unloads when they are done"));
}

/* GET /admin/pool: pool segments, the pool capacity, devices with their budgets. */
static enum MHD_Result handle_admin_pool(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc) {
    json_t *root = json_object(), *segs = json_array(), *devs = json_array();
    int bad = root == NULL || segs == NULL || devs == NULL;
    uint64_t total = 0;
    if (!bad && s->pool) {
        zs_pool_entry_t *e = NULL;
        size_t n = 0;
        zs_err_t err = {0};
        if (zs_pool_list(s->pool, &e, &n, &err) == 0) {
            for (size_t i = 0; i < n && !bad; i++) {
                total += e[i].bytes;
                bad = json_array_append_new(
                          segs, json_pack("{s:s, s:s, s:I, s:s, s:b, s:I}", "model_dir", e[i].model_dir, "segment",
                                          e[i].segment, "bytes", (json_int_t)e[i].bytes, "state",
                                          e[i].state == ZS_POOL_READY ? "ready" : "filling", "in_use", e[i].in_use,
                                          "last_used_ms", (json_int_t)(e[i].last_used_ns / 1000000))) != 0;
            }
            free(e);
        } else {
            json_object_set_new(root, "error", json_string(err.msg));
        }
    }
    zs_res_dev_t dv[ZS_RES_MAX_DEV];
    double rd = 0;
    int nd = zs_res_snapshot(&s->res, dv, ZS_RES_MAX_DEV, &rd);
    for (int i = 0; i < nd && !bad; i++) {
        char name[32];
        if (dv[i].dev.kind == ZS_DEV_CPU) snprintf(name, sizeof name, "cpu");
        else snprintf(name, sizeof name, "cuda:%d", dv[i].dev.index);
        bad = json_array_append_new(devs, json_pack("{s:s, s:I, s:I, s:f}", "device", name, "budget_bytes",
                                                    (json_int_t)dv[i].budget, "used_bytes", (json_int_t)dv[i].used,
                                                    "h2d_gbps", dv[i].h2d_gbps)) != 0;
    }
    if (!bad) {
        bad |= json_object_set_new(root, "enabled", json_boolean(s->pool != NULL)) != 0;
        bad |= json_object_set_new(root, "capacity_bytes", json_integer((json_int_t)s->cfg.pool_size)) != 0;
        bad |= json_object_set_new(root, "used_bytes", json_integer((json_int_t)total)) != 0;
        bad |= json_object_set_new(root, "segments", segs) != 0;
        segs = NULL;
        bad |= json_object_set_new(root, "devices", devs) != 0;
        devs = NULL;
        bad |= json_object_set_new(root, "read_gbps", json_real(rd)) != 0;
    }
    json_decref(segs);
    json_decref(devs);
    char *t = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return send_json(s, c, cc, 200, t);
}

/* "/prefix/{model}/suffix" -> the model, or NULL. */
static zs_srv_model_t *model_in_path(zs_server_t *s, const char *url, const char *prefix, const char *suffix) {
    size_t lp = strlen(prefix), ls = strlen(suffix), lu = strlen(url);
    if (lu <= lp + ls || strncmp(url, prefix, lp) != 0 || strcmp(url + lu - ls, suffix) != 0) return NULL;
    char name[160];
    size_t n = lu - lp - ls;
    if (n >= sizeof name) return NULL;
    memcpy(name, url + lp, n);
    name[n] = 0;
    return find_model(s, name);
}

enum MHD_Result zs_route(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc,
                         const char *url, const char *method) {
    zs_oai_error_t e;
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/health") == 0) {
        if (!get) goto bad_method;
        int stopping = atomic_load(&s->stopping);
        char *b = strdup(stopping ? "{\"status\":\"shutting_down\"}" : "{\"status\":\"ok\"}");
        return send_json(s, c, cc, stopping ? 503 : 200, b);
    }
    if (strcmp(url, "/metrics") == 0) {
        if (!get) goto bad_method;
        return handle_metrics(s, c, cc);
    }
    int is_models = strcmp(url, "/v1/models") == 0;
    int is_model = strncmp(url, "/v1/models/", 11) == 0 && url[11];
    int is_cmpl = strcmp(url, "/v1/completions") == 0;
    int is_chat = strcmp(url, "/v1/chat/completions") == 0;
    zs_srv_model_t *startups = is_model ? model_in_path(s, url, "/v1/models/", "/startups") : NULL;
    zs_srv_model_t *adm_load = model_in_path(s, url, "/admin/models/", "/load");
    zs_srv_model_t *adm_unload = model_in_path(s, url, "/admin/models/", "/unload");
    int adm_pool = strcmp(url, "/admin/pool") == 0;
    int is_admin = adm_load || adm_unload || adm_pool;
    int is_ctx = strncmp(url, "/v1/contexts", 12) == 0 && (url[12] == 0 || url[12] == '/');
    if (!is_models && !is_model && !is_cmpl && !is_chat && !is_admin && !is_ctx) {
        zs_oai_error_set(&e, 404, "invalid_request_error", NULL, "not_found",
                         "no such endpoint: %s %.100s", method, url);
        return zs_http_error(s, c, cc, &e);
    }
    int key = zs_auth_match(s->cfg.api_keys, s->cfg.napi_keys,
                            MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"));
    if (key >= 0 && s->cfg.napi_keys > 0) {
        unsigned char md[32];
        unsigned int mdl = 0;
        EVP_Digest(s->cfg.api_keys[key], strlen(s->cfg.api_keys[key]), md, &mdl, EVP_sha256(), NULL);
        snprintf(cc->tenant, sizeof cc->tenant, "key-");
        for (int i = 0; i < 16; i++) snprintf(cc->tenant + 4 + 2 * i, 3, "%02x", md[i]);
    }
    if (key < 0) {
        zs_oai_error_set(&e, 401, "invalid_request_error", NULL, "invalid_api_key",
                         "Incorrect or missing API key. Send it as 'Authorization: Bearer KEY'.");
        return zs_http_error(s, c, cc, &e);
    }
    if (is_ctx) return zs_route_contexts(s, c, cc, url, method);
    if (is_admin) {
        if (adm_pool) {
            if (!get) goto bad_method;
            return handle_admin_pool(s, c, cc);
        }
        if (!post) goto bad_method;
        if (atomic_load(&s->stopping)) {
            zs_oai_error_set(&e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
            return zs_http_error(s, c, cc, &e);
        }
        return handle_admin_model(s, c, cc, adm_load ? adm_load : adm_unload, adm_load != NULL);
    }
    if (startups && find_model(s, url + 11) == NULL) {
        if (!get) goto bad_method;
        return handle_startups(s, c, cc, startups);
    }
    if (is_models || is_model) {
        if (!get) goto bad_method;
        return handle_models(s, c, cc, is_model ? url + 11 : NULL);
    }
    if (!post) goto bad_method;
    if (atomic_load(&s->stopping)) {
        zs_oai_error_set(&e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
        return zs_http_error(s, c, cc, &e);
    }
    return handle_generate(s, c, cc, is_chat ? ZS_OAI_CHAT : ZS_OAI_COMPLETIONS);
bad_method:
    zs_oai_error_set(&e, 405, "invalid_request_error", NULL, "method_not_allowed",
                     "method %s is not allowed on %.100s", method, url);
    return zs_http_error(s, c, cc, &e);
}
