/* Registered contexts (see contexts.h): the registry, its JSON views, its persistence file
 * (written to a temporary name, fsynced, renamed) and the registration body parser. */
#include "server/contexts.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/file_read.h"

#define CTX_FILE_VERSION 1
#define CTX_MAX_TOKENS (1 << 22)

static const char *const STATE_NAMES[] = {"pending", "computing", "ready", "failed"};

static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > ZS_CTX_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || c == ':'))
            return 0;
    }
    return 1;
}

/* --- the registration body ------------------------------------------------------------------- */

int zs_ctx_request_parse(const char *body, size_t len, zs_ctx_request_t *r, zs_oai_error_t *e) {
    memset(r, 0, sizeof *r);
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (root == NULL) {
        zs_oai_error_set(e, 400, "invalid_request_error", NULL, "invalid_json",
                         "We could not parse the JSON body of your request: %s (line %d, column %d)", je.text,
                         je.line, je.column);
        return -1;
    }
    int rc = 0;
    json_t *name = json_is_object(root) ? json_object_get(root, "name") : NULL;
    int chat = json_is_object(root) && json_object_get(root, "messages") != NULL;
    if (!json_is_object(root)) {
        zs_oai_error_set(e, 400, "invalid_request_error", NULL, "invalid_json", "the request body must be a JSON object");
        rc = -1;
    } else if (chat && json_object_get(root, "prompt") != NULL) {
        zs_oai_error_set(e, 400, "invalid_request_error", "prompt", "invalid_value",
                         "give either 'prompt' or 'messages', not both");
        rc = -1;
    } else if (name && !json_is_null(name) &&
               !(json_is_string(name) && name_ok(json_string_value(name), json_string_length(name)))) {
        zs_oai_error_set(e, 400, "invalid_request_error", "name", "invalid_value",
                         "'name' must be 1 to %d characters of [A-Za-z0-9._:-]", ZS_CTX_NAME_MAX);
        rc = -1;
    } else if (name && json_is_string(name)) {
        snprintf(r->name, sizeof r->name, "%s", json_string_value(name));
    }
    json_decref(root);
    if (rc) return rc;
    /* model, prompt / messages and cache_salt are validated as in a generation request */
    if (zs_oai_request_parse(chat ? ZS_OAI_CHAT : ZS_OAI_COMPLETIONS, body, len, &r->oai, e) != 0) return -1;
    return 0;
}

void zs_ctx_request_free(zs_ctx_request_t *r) {
    zs_oai_request_free(&r->oai);
    memset(r, 0, sizeof *r);
}

/* --- entries ------------------------------------------------------------------------------------ */

static void ctx_free(zs_ctx_t *c) {
    if (c == NULL) return;
    free(c->model);
    free(c->ids);
    free(c->salt);
    free(c);
}

void zs_ctx_free_copy(zs_ctx_t *c) {
    free(c->model);
    free(c->ids);
    free(c->salt);
    memset(c, 0, sizeof *c);
}

static zs_ctx_t *ctx_new(const char *id, const char *model, const int32_t *ids, int32_t n, const char *salt,
                         int64_t created) {
    zs_ctx_t *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    snprintf(c->id, sizeof c->id, "%s", id);
    c->model = strdup(model);
    c->ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    c->salt = salt ? strdup(salt) : NULL;
    if (c->model == NULL || c->ids == NULL || (salt && c->salt == NULL)) {
        ctx_free(c);
        return NULL;
    }
    memcpy(c->ids, ids, (size_t)n * sizeof *ids);
    c->n = n;
    c->created = created;
    return c;
}

static int find(const zs_ctxreg_t *g, const char *id) {
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->v[i]->id, id) == 0) return i;
    return -1;
}

static int visible(const zs_ctx_t *c, const char *tenant) {
    if (tenant == NULL || tenant[0] == '\0') return 1;
    return c->salt != NULL && strncmp(c->salt, tenant, strlen(tenant)) == 0 &&
           (c->salt[strlen(tenant)] == '\0' || c->salt[strlen(tenant)] == '/');
}

static json_t *ctx_obj(const zs_ctx_t *c) {
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:b}", "id", c->id, "object", "context", "model",
                          c->model, "tokens", (json_int_t)c->n, "created", (json_int_t)c->created, "status",
                          STATE_NAMES[c->state], "progress_tokens", (json_int_t)c->progress, "cache_salt",
                          c->salt != NULL);
    if (o == NULL) return NULL;
    int bad = 0;
    if (c->state == ZS_CTX_READY)
        bad |= json_object_set_new(o, "cached_tokens", json_integer(c->cached_tokens)) != 0 ||
               json_object_set_new(o, "restored_tokens", json_integer(c->restored_tokens)) != 0 ||
               json_object_set_new(o, "compute_s", json_real(c->compute_s)) != 0;
    if (c->state == ZS_CTX_FAILED) bad |= json_object_set_new(o, "error", json_string(c->error)) != 0;
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static char *dump(json_t *o) {
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return t;
}

/* --- persistence -------------------------------------------------------------------------------- */

/* Writes the definitions (mu held). Best effort: a failure is reported to the caller. */
static int save(zs_ctxreg_t *g, zs_err_t *err) {
    if (g->path == NULL) return 0;
    json_t *arr = json_array();
    for (int i = 0; arr && i < g->n; i++) {
        const zs_ctx_t *c = g->v[i];
        json_t *ids = json_array();
        for (int32_t k = 0; ids && k < c->n; k++)
            if (json_array_append_new(ids, json_integer(c->ids[k])) != 0) {
                json_decref(ids);
                ids = NULL;
            }
        json_t *o = ids ? json_pack("{s:s, s:s, s:I, s:o}", "id", c->id, "model", c->model, "created",
                                    (json_int_t)c->created, "ids", ids)
                        : NULL;
        if (o && c->salt && json_object_set_new(o, "cache_salt", json_string(c->salt)) != 0) {
            json_decref(o);
            o = NULL;
        }
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *root = arr ? json_pack("{s:i, s:o}", "version", CTX_FILE_VERSION, "contexts", arr) : NULL;
    char *text = dump(root);
    if (text == NULL) return zs_err_set(err, ZS_ENOMEM, "contexts: out of memory saving %s", g->path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", g->path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(text), off = 0;
    int ok = fd >= 0;
    while (ok && off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        ok = w > 0;
        off += ok ? (size_t)w : 0;
    }
    int e = errno;
    if (fd >= 0 && (fsync(fd) != 0 || close(fd) != 0) && ok) {
        ok = 0;
        e = errno;
    }
    free(text);
    if (ok && rename(tmp, g->path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return zs_err_set(err, zs_status_from_errno(e), "contexts: writing %s: %s", g->path, strerror(e));
    }
    return 0;
}

int zs_ctxreg_load_json(zs_ctxreg_t *g, const char *json, size_t len, const char *what, zs_err_t *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (root == NULL) return zs_err_set(err, ZS_EFORMAT, "%s: line %d: %s", what, je.line, je.text);
    int rc = 0;
    json_t *arr = json_object_get(root, "contexts"), *ver = json_object_get(root, "version");
    if (!json_is_object(root) || !json_is_integer(ver) || json_integer_value(ver) != CTX_FILE_VERSION ||
        !json_is_array(arr)) {
        rc = zs_err_set(err, ZS_EFORMAT, "%s: not a version %d contexts file", what, CTX_FILE_VERSION);
        goto out;
    }
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        json_t *id = json_object_get(o, "id"), *model = json_object_get(o, "model"), *ids = json_object_get(o, "ids"),
               *salt = json_object_get(o, "cache_salt"), *created = json_object_get(o, "created");
        if (!json_is_object(o) || !json_is_string(id) || !name_ok(json_string_value(id), json_string_length(id)) ||
            !json_is_string(model) || json_string_length(model) == 0 || !json_is_array(ids) ||
            json_array_size(ids) == 0 || json_array_size(ids) > CTX_MAX_TOKENS ||
            (salt && !(json_is_string(salt) && json_string_length(salt) > 0 && json_string_length(salt) <= 256 &&
                       strlen(json_string_value(salt)) == json_string_length(salt))) ||
            (created && !json_is_integer(created))) {
            rc = zs_err_set(err, ZS_EFORMAT, "%s: contexts[%zu] is malformed", what, i);
            goto out;
        }
        size_t n = json_array_size(ids);
        int32_t *v = malloc(n * sizeof *v);
        if (v == NULL) {
            rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", what);
            goto out;
        }
        for (size_t k = 0; k < n && rc == 0; k++) {
            json_t *t = json_array_get(ids, k);
            if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
                rc = zs_err_set(err, ZS_EFORMAT, "%s: contexts[%zu].ids[%zu] is not a token id", what, i, k);
            else v[k] = (int32_t)json_integer_value(t);
        }
        if (rc == 0 && find(g, json_string_value(id)) >= 0)
            rc = zs_err_set(err, ZS_EFORMAT, "%s: context '%s' is listed twice", what, json_string_value(id));
        if (rc == 0 && g->n >= ZS_CTX_MAX) rc = zs_err_set(err, ZS_ERANGE, "%s: more than %d contexts", what, ZS_CTX_MAX);
        zs_ctx_t *c = rc == 0 ? ctx_new(json_string_value(id), json_string_value(model), v, (int32_t)n,
                                        salt ? json_string_value(salt) : NULL,
                                        created ? (int64_t)json_integer_value(created) : 0)
                              : NULL;
        free(v);
        if (rc == 0 && c == NULL) rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory", what);
        if (rc != 0) goto out;
        g->v[g->n++] = c;
    }
out:
    json_decref(root);
    return rc;
}

int zs_ctxreg_init(zs_ctxreg_t *g, const char *path, zs_err_t *err) {
    memset(g, 0, sizeof *g);
    if (pthread_mutex_init(&g->mu, NULL) != 0) return zs_err_set(err, ZS_ENOMEM, "contexts: mutex");
    g->seq = (uint64_t)time(NULL) << 16;
    if (path == NULL) return 0;
    if ((g->path = strdup(path)) == NULL) {
        zs_ctxreg_destroy(g);
        return zs_err_set(err, ZS_ENOMEM, "contexts: out of memory");
    }
    char *buf = NULL;
    size_t len = 0;
    zs_err_t re = {0};
    int rc = zs_read_file(path, (size_t)1 << 30, &buf, &len, &re);
    if (rc == ZS_ENOENT) return 0; /* nothing registered yet */
    if (rc != 0) {
        zs_ctxreg_destroy(g);
        return zs_err_set(err, rc, "contexts: %s", re.msg);
    }
    rc = zs_ctxreg_load_json(g, buf, len, path, err);
    free(buf);
    if (rc != 0) zs_ctxreg_destroy(g);
    return rc;
}

void zs_ctxreg_destroy(zs_ctxreg_t *g) {
    for (int i = 0; i < g->n; i++) ctx_free(g->v[i]);
    free(g->path);
    pthread_mutex_destroy(&g->mu);
    memset(g, 0, sizeof *g);
}

/* --- operations --------------------------------------------------------------------------------- */

int zs_ctxreg_add(zs_ctxreg_t *g, const char *name, const char *model, const int32_t *ids, int32_t n,
                  const char *salt, char **json, zs_err_t *err) {
    if (json) *json = NULL;
    if (n < 1 || n > CTX_MAX_TOKENS) return zs_err_set(err, ZS_EINVAL, "contexts: %d tokens", n);
    pthread_mutex_lock(&g->mu);
    char id[ZS_CTX_NAME_MAX + 1];
    if (name && name[0]) snprintf(id, sizeof id, "%s", name);
    else snprintf(id, sizeof id, "ctx-%016llx", (unsigned long long)++g->seq);
    int rc = 0;
    if (find(g, id) >= 0) rc = zs_err_set(err, ZS_EBUSY, "a context named '%s' exists already", id);
    else if (g->n >= ZS_CTX_MAX) rc = zs_err_set(err, ZS_ERANGE, "the server keeps at most %d contexts", ZS_CTX_MAX);
    zs_ctx_t *c = rc ? NULL : ctx_new(id, model, ids, n, salt, (int64_t)time(NULL));
    if (rc == 0 && c == NULL) rc = zs_err_set(err, ZS_ENOMEM, "contexts: out of memory");
    if (rc == 0) {
        g->v[g->n++] = c;
        zs_err_t se = {0};
        if (save(g, &se) != 0) { /* not kept unless it can be kept across restarts */
            g->n--;
            ctx_free(c);
            rc = zs_err_set(err, se.code, "%s", se.msg);
        } else if (json) {
            *json = dump(ctx_obj(c));
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int zs_ctxreg_delete(zs_ctxreg_t *g, const char *id, const char *tenant) {
    pthread_mutex_lock(&g->mu);
    int i = find(g, id);
    if (i >= 0 && !visible(g->v[i], tenant)) i = -1;
    if (i >= 0) {
        ctx_free(g->v[i]);
        memmove(&g->v[i], &g->v[i + 1], (size_t)(g->n - i - 1) * sizeof g->v[0]);
        g->n--;
        (void)save(g, NULL);
    }
    pthread_mutex_unlock(&g->mu);
    return i >= 0;
}

char *zs_ctxreg_get_json(zs_ctxreg_t *g, const char *id, const char *tenant, int *found) {
    pthread_mutex_lock(&g->mu);
    int i = find(g, id);
    if (i >= 0 && !visible(g->v[i], tenant)) i = -1;
    *found = i >= 0;
    char *t = i >= 0 ? dump(ctx_obj(g->v[i])) : NULL;
    pthread_mutex_unlock(&g->mu);
    return t;
}

char *zs_ctxreg_list_json(zs_ctxreg_t *g, const char *model, const char *tenant) {
    json_t *data = json_array();
    pthread_mutex_lock(&g->mu);
    for (int i = 0; data && i < g->n; i++) {
        if ((model && strcmp(g->v[i]->model, model) != 0) || !visible(g->v[i], tenant)) continue;
        if (json_array_append_new(data, ctx_obj(g->v[i])) != 0) {
            json_decref(data);
            data = NULL;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return data ? dump(json_pack("{s:s, s:o}", "object", "list", "data", data)) : NULL;
}

int zs_ctxreg_take(zs_ctxreg_t *g, const char *model, zs_ctx_t *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g->mu);
    int taken = 0;
    for (int i = 0; i < g->n && !taken; i++) {
        zs_ctx_t *c = g->v[i];
        if (c->state != ZS_CTX_PENDING || strcmp(c->model, model) != 0) continue;
        zs_ctx_t *cp = ctx_new(c->id, c->model, c->ids, c->n, c->salt, c->created);
        if (cp == NULL) break; /* out of memory: try again later */
        *out = *cp;
        free(cp);
        c->state = ZS_CTX_COMPUTING;
        c->progress = 0;
        taken = 1;
    }
    pthread_mutex_unlock(&g->mu);
    return taken;
}

int zs_ctxreg_has_pending(zs_ctxreg_t *g, const char *model) {
    pthread_mutex_lock(&g->mu);
    int r = 0;
    for (int i = 0; i < g->n && !r; i++) r = g->v[i]->state == ZS_CTX_PENDING && strcmp(g->v[i]->model, model) == 0;
    pthread_mutex_unlock(&g->mu);
    return r;
}

void zs_ctxreg_progress(zs_ctxreg_t *g, const char *id, int64_t tokens) {
    pthread_mutex_lock(&g->mu);
    int i = find(g, id);
    if (i >= 0) g->v[i]->progress = tokens;
    pthread_mutex_unlock(&g->mu);
}

void zs_ctxreg_finish(zs_ctxreg_t *g, const char *id, int state, int64_t cached, int64_t restored, double seconds,
                      const char *why) {
    pthread_mutex_lock(&g->mu);
    int i = find(g, id);
    if (i >= 0) {
        zs_ctx_t *c = g->v[i];
        c->state = state;
        if (state == ZS_CTX_READY) {
            c->cached_tokens = cached;
            c->restored_tokens = restored;
            c->compute_s = seconds;
            c->progress = c->n;
            c->computes++;
        } else if (state == ZS_CTX_PENDING) {
            c->progress = 0;
        }
        snprintf(c->error, sizeof c->error, "%s", why ? why : "");
    }
    pthread_mutex_unlock(&g->mu);
}

void zs_ctxreg_requeue_model(zs_ctxreg_t *g, const char *model) {
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->v[i]->model, model) == 0 && g->v[i]->state == ZS_CTX_READY) {
            g->v[i]->state = ZS_CTX_PENDING;
            g->v[i]->progress = 0;
        }
    pthread_mutex_unlock(&g->mu);
}

void zs_ctxreg_counts(zs_ctxreg_t *g, const char *model, int64_t *ready, int64_t *pending, uint64_t *precomputed) {
    *ready = *pending = 0;
    *precomputed = 0;
    pthread_mutex_lock(&g->mu);
    for (int i = 0; i < g->n; i++) {
        if (strcmp(g->v[i]->model, model) != 0) continue;
        if (g->v[i]->state == ZS_CTX_READY) (*ready)++;
        else if (g->v[i]->state != ZS_CTX_FAILED) (*pending)++;
        *precomputed += g->v[i]->computes;
    }
    pthread_mutex_unlock(&g->mu);
}
