/* Building OpenAI response and streaming-chunk JSON with jansson. */
#include "server/openai_response.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static char *dump(json_t *o) {
    if (o == NULL) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Decodes one UTF-8 character at s (n bytes left): its length, or 0 when invalid. */
static size_t utf8_char(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) return 0;
    if (len == 1) return 1;
    uint32_t cp = len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

char *zs_utf8_sanitize(const char *s, size_t n, size_t *out_len) {
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    char *out = malloc(n * 3 + 1);
    if (out == NULL) return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char((const unsigned char *)s + i, n - i);
        if (k == 0 || (k == 1 && s[i] == 0)) {
            if (k == 0) {
                memcpy(out + w, "\xEF\xBF\xBD", 3);
                w += 3;
            }
            i++;
            continue;
        }
        memcpy(out + w, s + i, k);
        w += k;
        i += k;
    }
    out[w] = 0;
    if (out_len) *out_len = w;
    return out;
}

static json_t *text_json(const char *s, size_t n) {
    json_t *j = json_stringn(s ? s : "", s ? n : 0);
    if (j) return j;
    size_t len;
    char *c = zs_utf8_sanitize(s, n, &len);
    if (c == NULL) return NULL;
    j = json_stringn(c, len);
    free(c);
    return j;
}

static json_t *usage(const zs_oai_usage_t *u) {
    json_t *o = json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                          "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                          (json_int_t)(u->prompt_tokens + u->completion_tokens), "prompt_tokens_details",
                          "cached_tokens", (json_int_t)u->cached_tokens);
    if (o == NULL || !u->has_kv) return o;
    double gbps = u->restore_s > 0 ? (double)u->restore_bytes / u->restore_s / 1e9 : 0;
    json_t *kv = json_pack("{s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f}", "gpu_tokens", (json_int_t)u->gpu_tokens,
                           "host_tokens", (json_int_t)u->host_tokens, "disk_tokens", (json_int_t)u->disk_tokens,
                           "computed_tokens", (json_int_t)u->computed_tokens, "restore_s", u->restore_s,
                           "restore_gbps", gbps, "restore_began_s", u->restore_began_s, "admitted_s",
                           u->admitted_s);
    if (kv == NULL || json_object_set_new(o, "kv_cache", kv) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *model_obj(const zs_oai_model_info_t *m) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:I}", "id", m->id, "object", "model", "created",
                          (json_int_t)m->created, "owned_by", "zerostart", "max_model_len",
                          (json_int_t)m->max_model_len);
    if (o != NULL && m->state != NULL &&
        (json_object_set_new(o, "state", json_string(m->state)) != 0 ||
         json_object_set_new(o, "location", json_string(m->location ? m->location : "")) != 0 ||
         json_object_set_new(o, "device", m->device && m->device[0] ? json_string(m->device) : json_null()) != 0 ||
         json_object_set_new(o, "keep_alive_s", json_real(m->keep_alive_s)) != 0)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

char *zs_oai_model_json(const zs_oai_model_info_t *m) { return dump(model_obj(m)); }

char *zs_oai_models_json(const zs_oai_model_info_t *m, int n) {
    json_t *data = json_array();
    if (data == NULL) return NULL;
    for (int i = 0; i < n; i++)
        if (json_array_append_new(data, model_obj(&m[i])) != 0) {
            json_decref(data);
            return NULL;
        }
    return dump(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static json_t *envelope(const zs_oai_meta_t *m, const char *object, json_t *choices) {
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", m->id, "object", object, "created",
                     (json_int_t)m->created, "model", m->model, "choices", choices);
}

static json_t *reason(const char *r) { return r ? json_string(r) : json_null(); }

char *zs_oai_completion_json(const zs_oai_meta_t *m, const char *text, size_t len,
                             const char *finish_reason, const zs_oai_usage_t *u) {
    json_t *t = text_json(text, len);
    if (t == NULL) return NULL;
    json_t *choice;
    if (m->kind == ZS_OAI_CHAT)
        choice = json_pack("{s:i, s:{s:s, s:o}, s:n, s:o}", "index", 0, "message", "role",
                           "assistant", "content", t, "logprobs", "finish_reason",
                           reason(finish_reason));
    else
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "text", t, "logprobs",
                           "finish_reason", reason(finish_reason));
    json_t *o = envelope(m, m->kind == ZS_OAI_CHAT ? "chat.completion" : "text_completion",
                         json_pack("[o]", choice));
    if (o && json_object_set_new(o, "usage", usage(u)) != 0) {
        json_decref(o);
        return NULL;
    }
    return dump(o);
}

char *zs_oai_chunk_json(const zs_oai_meta_t *m, int role_first, const char *text, size_t len,
                        const char *finish_reason, int usage_null) {
    json_t *choice;
    if (m->kind == ZS_OAI_CHAT) {
        json_t *delta = json_object();
        if (delta == NULL) return NULL;
        int bad = 0;
        if (role_first) bad |= json_object_set_new(delta, "role", json_string("assistant"));
        if (text || role_first) bad |= json_object_set_new(delta, "content", text_json(text, len));
        if (bad) {
            json_decref(delta);
            return NULL;
        }
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs",
                           "finish_reason", reason(finish_reason));
    } else {
        choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "text", text_json(text, len),
                           "logprobs", "finish_reason", reason(finish_reason));
    }
    json_t *o = envelope(m, m->kind == ZS_OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                         json_pack("[o]", choice));
    if (o && usage_null && json_object_set_new(o, "usage", json_null()) != 0) {
        json_decref(o);
        return NULL;
    }
    return dump(o);
}

char *zs_oai_usage_chunk_json(const zs_oai_meta_t *m, const zs_oai_usage_t *u) {
    json_t *o = envelope(m, m->kind == ZS_OAI_CHAT ? "chat.completion.chunk" : "text_completion",
                         json_array());
    if (o && json_object_set_new(o, "usage", usage(u)) != 0) {
        json_decref(o);
        return NULL;
    }
    return dump(o);
}
