/* The /v1/contexts endpoints: register a context (POST: a prompt or chat messages whose KV
 * the server computes while the model is idle), list them (GET, optionally ?model=), show
 * one (GET /v1/contexts/{id}), delete one (DELETE /v1/contexts/{id}). */
#include <stdlib.h>
#include <string.h>

#include "server/scheduler.h"
#include "server/server_internal.h"

static zs_srv_model_t *model_named(zs_server_t *s, const char *name) {
    for (int i = 0; i < s->nmodels; i++)
        if (strcmp(s->models[i].name, name) == 0) return &s->models[i];
    return NULL;
}

static enum MHD_Result send_body(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc, int status, char *json) {
    if (json == NULL) {
        zs_oai_error_t e;
        zs_oai_error_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        return zs_http_error(s, c, cc, &e);
    }
    return zs_http_send(s, c, cc, status, "application/json", json, strlen(json));
}

static enum MHD_Result create(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc) {
    zs_oai_error_t e;
    zs_ctx_request_t q;
    if (zs_ctx_request_parse(cc->body ? cc->body : "", cc->len, &q, &e) != 0) return zs_http_error(s, c, cc, &e);
    zs_srv_model_t *m = model_named(s, q.oai.model);
    if (m == NULL) {
        zs_oai_error_set(&e, 404, "invalid_request_error", "model", "model_not_found", "The model '%.100s' does not exist",
                         q.oai.model);
        zs_ctx_request_free(&q);
        return zs_http_error(s, c, cc, &e);
    }
    int32_t *ids = NULL, n = 0;
    /* chat messages without the generation prompt: the rendering of a longer conversation
     * that starts with them begins with these tokens */
    if (zs_build_prompt(m, &q.oai, 0, &ids, &n, &e) != 0) {
        zs_ctx_request_free(&q);
        return zs_http_error(s, c, cc, &e);
    }
    zs_err_t err = {0};
    char *json = NULL;
    int oom = 0;
    char *salt = zs_tenant_salt(cc, q.oai.cache_salt, &oom); /* requests of the same tenant find it */
    int rc = oom ? zs_err_set(&err, ZS_ENOMEM, "out of memory")
                 : zs_ctxreg_add(&s->contexts, q.name, m->name, ids, n, salt, &json, &err);
    free(salt);
    free(ids);
    zs_ctx_request_free(&q);
    if (rc == ZS_EBUSY) {
        zs_oai_error_set(&e, 409, "invalid_request_error", "name", "context_exists", "%s", err.msg);
        return zs_http_error(s, c, cc, &e);
    }
    if (rc == ZS_ERANGE) {
        zs_oai_error_set(&e, 400, "invalid_request_error", NULL, "too_many_contexts", "%s", err.msg);
        return zs_http_error(s, c, cc, &e);
    }
    if (rc != 0) {
        zs_oai_error_set(&e, 500, "server_error", NULL, NULL, "%s", err.msg);
        return zs_http_error(s, c, cc, &e);
    }
    zs_slog(&s->log, ZS_LOG_INFO, cc->rid, "context registered for model %s: %d tokens", m->name, n);
    zs_sched_kick(m->sched); /* computed as soon as the model is idle */
    return send_body(s, c, cc, 201, json);
}

enum MHD_Result zs_route_contexts(zs_server_t *s, struct MHD_Connection *c, zs_conn_t *cc, const char *url,
                                  const char *method) {
    zs_oai_error_t e;
    const char *id = url[12] == '/' && url[13] ? url + 13 : NULL;
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0, del = strcmp(method, "DELETE") == 0;
    if (id == NULL && post) {
        if (atomic_load(&s->stopping)) {
            zs_oai_error_set(&e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
            return zs_http_error(s, c, cc, &e);
        }
        return create(s, c, cc);
    }
    if (id == NULL && get) {
        const char *model = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "model");
        return send_body(s, c, cc, 200, zs_ctxreg_list_json(&s->contexts, model, cc->tenant));
    }
    if (id != NULL && (get || del)) {
        int found = 0;
        char *json = zs_ctxreg_get_json(&s->contexts, id, cc->tenant, &found);
        if (found && del) {
            free(json);
            json = NULL;
            found = zs_ctxreg_delete(&s->contexts, id, cc->tenant);
            if (found) {
                zs_slog(&s->log, ZS_LOG_INFO, cc->rid, "context %.64s deleted", id);
                json_t *o = json_pack("{s:s, s:s, s:b}", "id", id, "object", "context.deleted", "deleted", 1);
                json = o ? json_dumps(o, JSON_COMPACT) : NULL;
                json_decref(o);
            }
        }
        if (!found) {
            free(json);
            zs_oai_error_set(&e, 404, "invalid_request_error", NULL, "context_not_found", "no context '%.64s'", id);
            return zs_http_error(s, c, cc, &e);
        }
        return send_body(s, c, cc, 200, json);
    }
    zs_oai_error_set(&e, 405, "invalid_request_error", NULL, "method_not_allowed", "method %s is not allowed on %.100s",
                     method, url);
    return zs_http_error(s, c, cc, &e);
}
