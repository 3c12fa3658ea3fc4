/* Chat-template public API: loading the template and special tokens from a
 * tokenizer_config.json (file or text, string or named-list chat_template, sibling
 * chat_template.jinja), building the render variables the way transformers'
 * apply_chat_template does, and freeing. */
#include "common/file_read.h"
#include "engine/chat_template_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONFIG_BYTES (64u << 20)

static const char *const TOKEN_KEYS[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                         "pad_token", "cls_token", "mask_token", NULL};

void zs_chat_template_free(zs_chat_template_t *t) {
    if (t == NULL) return;
    ct_arena_free(&t->arena);
    free(t->src);
    free(t->orig);
    json_decref(t->tokens);
    free(t);
}

void zs_chat_template_set_limits(zs_chat_template_t *t, const zs_chat_template_limits_t *lim) {
    if (t == NULL) return;
    if (lim) t->lim = *lim;
    else memset(&t->lim, 0, sizeof t->lim);
}

const char *zs_chat_template_source(const zs_chat_template_t *t) { return t ? t->orig : NULL; }

static const char *token_str(const zs_chat_template_t *t, const char *key) {
    if (t == NULL) return NULL;
    return json_string_value(json_object_get(t->tokens, key));
}
const char *zs_chat_template_bos_token(const zs_chat_template_t *t) { return token_str(t, "bos_token"); }
const char *zs_chat_template_eos_token(const zs_chat_template_t *t) { return token_str(t, "eos_token"); }

/* Creates a template from source and a (stolen) tokens object. */
static int create(const char *source, size_t len, json_t *tokens, zs_chat_template_t **out, zs_err_t *err) {
    *out = NULL;
    if (tokens == NULL) return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
    if (source == NULL) {
        json_decref(tokens);
        return zs_err_set(err, ZS_EINVAL, "chat template: NULL source");
    }
    if (!ct_utf8_valid(source, len)) {
        json_decref(tokens);
        return zs_err_set(err, ZS_EINVAL, "chat template: source is not valid UTF-8");
    }
    zs_chat_template_t *t = calloc(1, sizeof *t);
    if (t == NULL) {
        json_decref(tokens);
        return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
    }
    t->tokens = tokens;
    ct_arena_init(&t->arena, SIZE_MAX / 4);
    t->orig = malloc(len + 1);
    t->src = malloc(len + 1);
    if (t->orig == NULL || t->src == NULL) {
        zs_chat_template_free(t);
        return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
    }
    memcpy(t->orig, source, len);
    t->orig[len] = '\0';
    /* jinja2: \r\n and \r become \n; one trailing newline is dropped */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (source[i] == '\r') {
            t->src[n++] = '\n';
            if (i + 1 < len && source[i + 1] == '\n') i++;
        } else {
            t->src[n++] = source[i];
        }
    }
    if (n > 0 && t->src[n - 1] == '\n') n--;
    t->src[n] = '\0';
    t->src_len = n;
    int r = ct_parse(t, err);
    if (r) {
        zs_chat_template_free(t);
        return r;
    }
    *out = t;
    return 0;
}

int zs_chat_template_from_source(const char *source, size_t len, const char *bos_token,
                                 const char *eos_token, zs_chat_template_t **out, zs_err_t *err) {
    zs_err_t local = {0};
    if (err == NULL) err = &local;
    if (out == NULL) return zs_err_set(err, ZS_EINVAL, "chat template: NULL out");
    json_t *tok = json_object();
    if (tok && bos_token && json_object_set_new(tok, "bos_token", json_string(bos_token))) {
        json_decref(tok);
        tok = NULL;
    }
    if (tok && eos_token && json_object_set_new(tok, "eos_token", json_string(eos_token))) {
        json_decref(tok);
        tok = NULL;
    }
    return create(source, len, tok, out, err);
}

/* A special token value: a string or an AddedToken {"content": ...}. */
static const char *token_content(json_t *v) {
    if (json_is_string(v)) return json_string_value(v);
    if (json_is_object(v)) return json_string_value(json_object_get(v, "content"));
    return NULL;
}

static int from_config(json_t *root, const char *jinja, size_t jinja_len, const char *name,
                       const char *where, zs_chat_template_t **out, zs_err_t *err) {
    if (!json_is_object(root))
        return zs_err_set(err, ZS_EFORMAT, "%s: tokenizer config is not a JSON object", where);
    json_t *ct = json_object_get(root, "chat_template");
    const char *src = NULL;
    size_t src_len = 0;
    const char *want = name ? name : "default";
    if (json_is_string(ct)) {
        if (name && strcmp(name, "default") != 0)
            return zs_err_set(err, ZS_ENOENT, "%s: no chat template named '%s'", where, name);
        src = json_string_value(ct);
        src_len = json_string_length(ct);
    } else if (json_is_array(ct)) {
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e) {
            const char *nm = json_string_value(json_object_get(e, "name"));
            json_t *tpl = json_object_get(e, "template");
            if (nm && strcmp(nm, want) == 0 && json_is_string(tpl)) {
                src = json_string_value(tpl);
                src_len = json_string_length(tpl);
                break;
            }
        }
        if (src == NULL)
            return zs_err_set(err, ZS_ENOENT, "%s: chat_template list has no template named '%s'", where, want);
    } else if (ct == NULL || json_is_null(ct)) {
        if (jinja == NULL)
            return zs_err_set(err, ZS_ENOENT, "%s: no chat_template in the tokenizer config", where);
        src = jinja;
        src_len = jinja_len;
    } else {
        return zs_err_set(err, ZS_EFORMAT, "%s: chat_template must be a string or a list", where);
    }
    json_t *tok = json_object();
    if (tok == NULL) return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
    for (int k = 0; TOKEN_KEYS[k]; k++) {
        const char *v = token_content(json_object_get(root, TOKEN_KEYS[k]));
        if (v && json_object_set_new(tok, TOKEN_KEYS[k], json_string(v))) {
            json_decref(tok);
            return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
        }
    }
    json_t *extra = json_object_get(root, "additional_special_tokens");
    if (json_is_array(extra)) {
        json_t *lst = json_array();
        size_t i;
        json_t *e;
        int bad = lst == NULL;
        json_array_foreach(extra, i, e) {
            const char *v = token_content(e);
            if (bad || (v && json_array_append_new(lst, json_string(v)))) { bad = 1; break; }
        }
        if (bad || json_object_set_new(tok, "additional_special_tokens", lst)) {
            json_decref(tok);
            return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
        }
    }
    int r = create(src, src_len, tok, out, err);
    if (r) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        int code = err->code;
        zs_err_clear(err);
        zs_err_set(err, code, "%s: %s", where, msg);
    }
    return r;
}

int zs_chat_template_load_json(const char *config_json, size_t len, const char *name,
                               zs_chat_template_t **out, zs_err_t *err) {
    zs_err_t local = {0};
    if (err == NULL) err = &local;
    if (out == NULL || config_json == NULL) return zs_err_set(err, ZS_EINVAL, "chat template: NULL argument");
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(config_json, len, 0, &je);
    if (root == NULL)
        return zs_err_set(err, ZS_EFORMAT, "tokenizer config: JSON error at line %d col %d: %s", je.line,
                          je.column, je.text);
    int r = from_config(root, NULL, 0, name, "tokenizer config", out, err);
    json_decref(root);
    return r;
}

static int read_file(const char *path, char **buf, size_t *len, zs_err_t *err) {
    return zs_read_file(path, MAX_CONFIG_BYTES, buf, len, err);
}

int zs_chat_template_load_file(const char *path, const char *name, zs_chat_template_t **out,
                               zs_err_t *err) {
    zs_err_t local = {0};
    if (err == NULL) err = &local;
    if (out == NULL || path == NULL) return zs_err_set(err, ZS_EINVAL, "chat template: NULL argument");
    *out = NULL;
    char *buf;
    size_t len;
    int r = read_file(path, &buf, &len, err);
    if (r) return r;
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je);
    free(buf);
    if (root == NULL)
        return zs_err_set(err, ZS_EFORMAT, "%s: JSON error at line %d col %d: %s", path, je.line, je.column,
                          je.text);
    char *jinja = NULL;
    size_t jlen = 0;
    json_t *ct = json_object_get(root, "chat_template");
    if (json_is_object(root) && (ct == NULL || json_is_null(ct))) {
        /* transformers >= 4.43 may store the template next to the config */
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path + 1) : 0;
        char *jp = malloc(dl + sizeof "chat_template.jinja");
        if (jp == NULL) {
            json_decref(root);
            return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", path);
        }
        memcpy(jp, path, dl);
        memcpy(jp + dl, "chat_template.jinja", sizeof "chat_template.jinja");
        zs_err_t e2 = {0};
        if (read_file(jp, &jinja, &jlen, &e2) != 0 && e2.code != ZS_ENOENT) {
            zs_err_set(err, e2.code, "%s", e2.msg);
            free(jp);
            json_decref(root);
            return err->code;
        }
        free(jp);
    }
    r = from_config(root, jinja, jlen, name, path, out, err);
    free(jinja);
    json_decref(root);
    return r;
}

int zs_chat_template_render(const zs_chat_template_t *t, const json_t *messages,
                            int add_generation_prompt, const json_t *extra_vars, char **out,
                            size_t *out_len, zs_err_t *err) {
    zs_err_t local = {0};
    if (err == NULL) err = &local;
    if (t == NULL || out == NULL) return zs_err_set(err, ZS_EINVAL, "chat template: NULL argument");
    *out = NULL;
    if (out_len) *out_len = 0;
    if (!json_is_array(messages)) return zs_err_set(err, ZS_EINVAL, "chat template: messages must be a JSON array");
    if (extra_vars && !json_is_object(extra_vars) && !json_is_null(extra_vars))
        return zs_err_set(err, ZS_EINVAL, "chat template: extra variables must be a JSON object");
    json_t *vars = json_copy(t->tokens);
    if (vars == NULL || json_object_set(vars, "messages", (json_t *)messages) ||
        json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt)) ||
        json_object_set_new(vars, "tools", json_null()) || json_object_set_new(vars, "documents", json_null()) ||
        (json_is_object(extra_vars) && json_object_update(vars, (json_t *)extra_vars))) {
        json_decref(vars);
        return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
    }
    int r = ct_render(t, vars, out, out_len, err);
    json_decref(vars);
    return r;
}

int zs_chat_template_render_json(const zs_chat_template_t *t, const char *messages_json,
                                 int add_generation_prompt, const char *extra_vars_json, char **out,
                                 size_t *out_len, zs_err_t *err) {
    zs_err_t local = {0};
    if (err == NULL) err = &local;
    if (messages_json == NULL || out == NULL) return zs_err_set(err, ZS_EINVAL, "chat template: NULL argument");
    *out = NULL;
    json_error_t je;
    json_t *msgs = json_loads(messages_json, 0, &je);
    if (msgs == NULL)
        return zs_err_set(err, ZS_EINVAL, "chat template: messages JSON error at line %d col %d: %s", je.line,
                          je.column, je.text);
    json_t *extra = NULL;
    if (extra_vars_json) {
        extra = json_loads(extra_vars_json, 0, &je);
        if (extra == NULL) {
            json_decref(msgs);
            return zs_err_set(err, ZS_EINVAL, "chat template: extra variables JSON error at line %d col %d: %s",
                              je.line, je.column, je.text);
        }
    }
    int r = zs_chat_template_render(t, msgs, add_generation_prompt, extra, out, out_len, err);
    json_decref(msgs);
    json_decref(extra);
    return r;
}
