/* Parsing and validation of OpenAI completion / chat completion request JSON. */
#include "server/openai_request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zs_oai_error_set(zs_oai_error_t *e, int status, const char *type, const char *param,
                      const char *code, const char *fmt, ...) {
    e->status = status;
    e->type = type ? type : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

/* jansson refuses strings that are not UTF-8; messages may quote user input, so cut any
 * invalid byte sequence out before building the body. */
static void sanitize_utf8(char *s) {
    unsigned char *p = (unsigned char *)s, *w = p;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        int ok = n > 0;
        for (int i = 1; ok && i < n; i++) ok = (p[i] & 0xC0) == 0x80;
        if (ok && n > 1) {
            uint32_t cp = n == 2 ? (p[0] & 0x1Fu) : n == 3 ? (p[0] & 0x0Fu) : (p[0] & 0x07u);
            for (int i = 1; i < n; i++) cp = (cp << 6) | (p[i] & 0x3Fu);
            ok = !((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
                   cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF));
        }
        if (!ok) {
            *w++ = '?';
            p++;
            continue;
        }
        for (int i = 0; i < n; i++) *w++ = *p++;
    }
    *w = 0;
}

char *zs_oai_error_body(const zs_oai_error_t *e, size_t *len) {
    zs_oai_error_t c = *e;
    sanitize_utf8(c.message);
    sanitize_utf8(c.param);
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", c.message, "type",
                          c.type ? c.type : "invalid_request_error", "param",
                          c.param[0] ? json_string(c.param) : json_null(), "code",
                          c.code[0] ? json_string(c.code) : json_null());
    if (o == NULL) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s && len) *len = strlen(s);
    return s;
}

void zs_oai_request_free(zs_oai_req_t *r) {
    free(r->model);
    if (r->messages) json_decref(r->messages);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->nstop; i++) free(r->stop[i]);
    free(r->cache_salt);
    memset(r, 0, sizeof *r);
}

#define BAD(...) (zs_oai_error_set(e, 400, "invalid_request_error", __VA_ARGS__), -1)

/* Optional number field in [lo, hi]; null or absent keeps *out. */
static int get_number(json_t *root, const char *key, double lo, double hi, double *out,
                      zs_oai_error_t *e) {
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_number(v)) return BAD(key, "invalid_type", "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return BAD(key, "invalid_value", "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = d;
    return 0;
}

/* Integer (or a real with an integral value) in [lo, hi]. */
static int as_int(json_t *v, const char *what, int64_t lo, int64_t hi, int64_t *out,
                  zs_oai_error_t *e) {
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < lo || x > hi)
            return BAD(what, "invalid_value", "'%s' must be between %lld and %lld, got %lld", what,
                       (long long)lo, (long long)hi, (long long)x);
        *out = (int64_t)x;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (isfinite(d) && d == floor(d) && d >= (double)lo && d <= (double)hi) {
            *out = (int64_t)d;
            return 0;
        }
        return BAD(what, "invalid_type", "'%s' must be an integer between %lld and %lld", what,
                   (long long)lo, (long long)hi);
    }
    return BAD(what, "invalid_type", "'%s' must be an integer", what);
}

static int get_int(json_t *root, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   zs_oai_error_t *e) {
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) return 0;
    return as_int(v, key, lo, hi, out, e);
}

static int get_bool(json_t *root, const char *key, int *out, zs_oai_error_t *e) {
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return BAD(key, "invalid_type", "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static char *dup_n(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p == NULL) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

#define OOM() (zs_oai_error_set(e, 500, "server_error", NULL, NULL, "out of memory"), -1)

static int parse_stop(json_t *root, zs_oai_req_t *r, zs_oai_error_t *e) {
    json_t *v = json_object_get(root, "stop");
    if (v == NULL || json_is_null(v)) return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > ZS_OAI_MAX_STOP)
            return BAD("stop", "invalid_value", "'stop' has %zu entries; at most %d are supported",
                       n, ZS_OAI_MAX_STOP);
        items = NULL;
    } else if (!json_is_string(v)) {
        return BAD("stop", "invalid_type", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s))
            return BAD("stop", "invalid_type", "'stop[%zu]' must be a string", i);
        size_t len = json_string_length(s);
        if (len == 0) continue; /* an empty stop string never matches */
        if (len > ZS_OAI_MAX_STOP_LEN)
            return BAD("stop", "invalid_value", "'stop[%zu]' is longer than %d bytes", i,
                       ZS_OAI_MAX_STOP_LEN);
        char *c = dup_n(json_string_value(s), len);
        if (c == NULL) return OOM();
        r->stop[r->nstop] = c;
        r->stop_len[r->nstop++] = len;
    }
    return 0;
}

static const char *const ROLES[] = {"system", "user", "assistant", "tool", "developer", "function"};

/* Content parts [{"type": "text", "text": ...}] joined with newlines. */
static int join_parts(json_t *parts, size_t mi, json_t **out, zs_oai_error_t *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", mi);
    size_t total = 0, n = json_array_size(parts);
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(parts, i);
        json_t *t = json_is_object(p) ? json_object_get(p, "type") : NULL;
        if (!json_is_object(p) || !json_is_string(t))
            return BAD(param, "invalid_type", "'%s[%zu]' must be an object with a 'type'", param, i);
        if (strcmp(json_string_value(t), "text") != 0)
            return BAD(param, "unsupported_content",
                       "'%s[%zu]': content part type '%.40s' is not supported (only 'text')", param,
                       i, json_string_value(t));
        json_t *tx = json_object_get(p, "text");
        if (!json_is_string(tx))
            return BAD(param, "invalid_type", "'%s[%zu].text' must be a string", param, i);
        total += json_string_length(tx) + 1;
    }
    char *buf = malloc(total + 1), *w = buf;
    if (buf == NULL) return OOM();
    for (size_t i = 0; i < n; i++) {
        json_t *tx = json_object_get(json_array_get(parts, i), "text");
        if (i) *w++ = '\n';
        memcpy(w, json_string_value(tx), json_string_length(tx));
        w += json_string_length(tx);
    }
    *out = json_stringn(buf, (size_t)(w - buf));
    free(buf);
    return *out ? 0 : OOM();
}

static int parse_messages(json_t *root, zs_oai_req_t *r, zs_oai_error_t *e) {
    json_t *m = json_object_get(root, "messages");
    if (m == NULL || json_is_null(m))
        return BAD("messages", "missing_required_parameter", "'messages' is a required property");
    if (!json_is_array(m)) return BAD("messages", "invalid_type", "'messages' must be an array");
    if (json_array_size(m) == 0)
        return BAD("messages", "invalid_value", "'messages' must contain at least one message");
    json_t *out = json_array();
    if (out == NULL) return OOM();
    r->messages = out;
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg) {
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(msg)) return BAD(param, "invalid_type", "'%s' must be an object", param);
        json_t *role = json_object_get(msg, "role");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (role == NULL) return BAD(param, "missing_required_parameter", "'%s' is required", param);
        if (!json_is_string(role)) return BAD(param, "invalid_type", "'%s' must be a string", param);
        int known = 0;
        for (size_t k = 0; k < sizeof ROLES / sizeof ROLES[0]; k++)
            if (strcmp(json_string_value(role), ROLES[k]) == 0) known = 1;
        if (!known || strlen(json_string_value(role)) != json_string_length(role))
            return BAD(param, "invalid_value",
                       "'%s' must be one of system, user, assistant, tool, developer", param);
        int assistant = strcmp(json_string_value(role), "assistant") == 0;
        json_t *content = json_object_get(msg, "content");
        snprintf(param, sizeof param, "messages[%zu].content", i);
        json_t *norm = NULL;
        if (content == NULL || json_is_null(content)) {
            if (!assistant)
                return BAD(param, "missing_required_parameter", "'%s' is required", param);
            norm = json_null();
        } else if (json_is_string(content)) {
            norm = json_incref(content);
        } else if (json_is_array(content)) {
            if (join_parts(content, i, &norm, e)) return -1;
        } else {
            return BAD(param, "invalid_type", "'%s' must be a string or an array of content parts",
                       param);
        }
        json_t *copy = json_copy(msg);
        if (copy == NULL || json_object_set_new(copy, "content", norm) != 0) {
            if (copy) json_decref(copy);
            else json_decref(norm);
            return OOM();
        }
        if (json_array_append_new(out, copy) != 0) return OOM();
    }
    return 0;
}

static int parse_ids(json_t *arr, const char *param, zs_oai_req_t *r, zs_oai_error_t *e) {
    size_t n = json_array_size(arr);
    if (n == 0) return BAD(param, "invalid_value", "'%s' must not be empty", param);
    r->prompt_ids = malloc(n * sizeof(int32_t));
    if (r->prompt_ids == NULL) return OOM();
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return BAD(param, "invalid_value", "'%s[%zu]' must be a non-negative token id", param, i);
        r->prompt_ids[i] = (int32_t)json_integer_value(v);
    }
    r->nprompt_ids = n;
    return 0;
}

static int parse_prompt(json_t *root, zs_oai_req_t *r, zs_oai_error_t *e) {
    json_t *p = json_object_get(root, "prompt");
    if (p == NULL || json_is_null(p))
        return BAD("prompt", "missing_required_parameter", "'prompt' is a required property");
    if (json_is_string(p)) {
        r->prompt = dup_n(json_string_value(p), json_string_length(p));
        r->prompt_len = json_string_length(p);
        return r->prompt ? 0 : OOM();
    }
    if (!json_is_array(p))
        return BAD("prompt", "invalid_type",
                   "'prompt' must be a string, an array of strings or an array of token ids");
    size_t n = json_array_size(p);
    if (n == 0) return BAD("prompt", "invalid_value", "'prompt' must not be empty");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) return parse_ids(p, "prompt", r, e);
    if (n > 1)
        return BAD("prompt", "unsupported_value",
                   "only one prompt per request is supported (got %zu); send one request each", n);
    if (json_is_string(first)) {
        r->prompt = dup_n(json_string_value(first), json_string_length(first));
        r->prompt_len = json_string_length(first);
        return r->prompt ? 0 : OOM();
    }
    if (json_is_array(first)) return parse_ids(first, "prompt[0]", r, e);
    return BAD("prompt", "invalid_type",
               "'prompt' must be a string, an array of strings or an array of token ids");
}

static int parse_body(zs_oai_kind_t kind, json_t *root, zs_oai_req_t *r, zs_oai_error_t *e) {
    json_t *model = json_object_get(root, "model");
    if (model == NULL || json_is_null(model))
        return BAD("model", "missing_required_parameter", "'model' is a required property");
    if (!json_is_string(model)) return BAD("model", "invalid_type", "'model' must be a string");
    if ((r->model = dup_n(json_string_value(model), json_string_length(model))) == NULL) return OOM();

    if (kind == ZS_OAI_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e)) return -1;

    int64_t v = -1;
    if (get_int(root, "max_tokens", 1, INT32_MAX, &v, e)) return -1;
    if (kind == ZS_OAI_CHAT && get_int(root, "max_completion_tokens", 1, INT32_MAX, &v, e)) return -1;
    r->max_tokens = v;
    if (get_number(root, "temperature", 0, 2, &r->temperature, e)) return -1;
    if (get_number(root, "top_p", 0, 1, &r->top_p, e)) return -1;
    json_t *tp = json_object_get(root, "top_p");
    if (json_is_number(tp) && r->top_p <= 0)
        return BAD("top_p", "invalid_value", "'top_p' must be in (0, 1]");
    if (get_number(root, "min_p", 0, 1, &r->min_p, e)) return -1;
    if (get_number(root, "presence_penalty", -2, 2, &r->presence_penalty, e)) return -1;
    if (get_number(root, "frequency_penalty", -2, 2, &r->frequency_penalty, e)) return -1;
    if (get_number(root, "repetition_penalty", 1e-3, 100, &r->repetition_penalty, e)) return -1;
    int64_t k = 0;
    if (get_int(root, "top_k", -1, INT32_MAX, &k, e)) return -1;
    r->top_k = k < 0 ? 0 : (int32_t)k;
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        int64_t s = 0;
        if (as_int(seed, "seed", INT64_MIN, INT64_MAX, &s, e)) return -1;
        r->has_seed = 1;
        r->seed = (uint64_t)s;
    }
    int64_t n = 1;
    if (get_int(root, "n", 1, 128, &n, e)) return -1;
    if (n != 1) return BAD("n", "unsupported_value", "only n = 1 is supported (got %lld)", (long long)n);
    if (kind == ZS_OAI_COMPLETIONS) {
        int64_t best_of = 1;
        if (get_int(root, "best_of", 1, 128, &best_of, e)) return -1;
        if (best_of != 1)
            return BAD("best_of", "unsupported_value", "only best_of = 1 is supported");
        int echo = 0;
        if (get_bool(root, "echo", &echo, e)) return -1;
        if (echo) return BAD("echo", "unsupported_value", "'echo' is not supported");
        json_t *suffix = json_object_get(root, "suffix");
        if (suffix && !json_is_null(suffix) &&
            !(json_is_string(suffix) && json_string_length(suffix) == 0))
            return BAD("suffix", "unsupported_value", "'suffix' is not supported");
    }
    json_t *lp = json_object_get(root, "logprobs");
    if (lp && !json_is_null(lp) && !json_is_false(lp)) {
        if (kind == ZS_OAI_CHAT && !json_is_boolean(lp))
            return BAD("logprobs", "invalid_type", "'logprobs' must be a boolean");
        if (kind == ZS_OAI_COMPLETIONS && !json_is_integer(lp))
            return BAD("logprobs", "invalid_type", "'logprobs' must be an integer");
        if (!(json_is_integer(lp) && json_integer_value(lp) == 0))
            return BAD("logprobs", "unsupported_value", "'logprobs' is not supported by this server");
    }
    json_t *tlp = json_object_get(root, "top_logprobs");
    if (tlp && !json_is_null(tlp))
        return BAD("top_logprobs", "unsupported_value", "'top_logprobs' is not supported by this server");
    if (parse_stop(root, r, e)) return -1;
    if (get_bool(root, "stream", &r->stream, e)) return -1;
    if (get_bool(root, "ignore_eos", &r->ignore_eos, e)) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return BAD("stream_options", "invalid_type", "'stream_options' must be an object");
        if (!r->stream)
            return BAD("stream_options", "invalid_value",
                       "'stream_options' is only allowed when 'stream' is true");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu)) {
            if (!json_is_boolean(iu))
                return BAD("stream_options.include_usage", "invalid_type",
                           "'stream_options.include_usage' must be a boolean");
            r->include_usage = json_is_true(iu);
        }
    }
    json_t *user = json_object_get(root, "user");
    if (user && !json_is_null(user) && !json_is_string(user))
        return BAD("user", "invalid_type", "'user' must be a string");
    /* extension (as vLLM): the tenant of the prompt's cached KV; requests with different
     * salts never share cached blocks */
    json_t *salt = json_object_get(root, "cache_salt");
    if (salt && !json_is_null(salt)) {
        if (!json_is_string(salt)) return BAD("cache_salt", "invalid_type", "'cache_salt' must be a string");
        size_t sl = json_string_length(salt);
        if (sl == 0 || sl > 256)
            return BAD("cache_salt", "invalid_value", "'cache_salt' must be 1 to 256 bytes (got %zu)", sl);
        if (memchr(json_string_value(salt), 0, sl) != NULL)
            return BAD("cache_salt", "invalid_value", "'cache_salt' must not contain NUL characters");
        if ((r->cache_salt = dup_n(json_string_value(salt), sl)) == NULL) return OOM();
    }
    return 0;
}

int zs_oai_request_parse(zs_oai_kind_t kind, const char *body, size_t len, zs_oai_req_t *r,
                         zs_oai_error_t *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->max_tokens = -1;
    r->temperature = 1.0;
    r->top_p = 1.0;
    r->repetition_penalty = 1.0;
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (root == NULL) {
        zs_oai_error_set(e, 400, "invalid_request_error", NULL, "invalid_json",
                         "We could not parse the JSON body of your request: %s (line %d, column %d)",
                         je.text, je.line, je.column);
        return -1;
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = BAD(NULL, "invalid_json", "the request body must be a JSON object");
    } else {
        rc = parse_body(kind, root, r, e);
    }
    json_decref(root);
    if (rc) zs_oai_request_free(r);
    return rc;
}
