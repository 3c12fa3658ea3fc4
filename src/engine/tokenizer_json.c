/* Loading and validating tokenizer.json: the BPE model (vocab, merges in both forms,
 * options), added_tokens (ids checked against what tokenizers would assign), normalizer,
 * pre_tokenizer, post_processor and decoder descriptions (Sequences flattened), BOS/EOS
 * detection, and freeing. Anything unsupported is refused with an error naming the field. */
#include "engine/tokenizer_internal.h"
#include "engine/unicode_normalize.h"

#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_ID ((1 << 24) - 1) /* largest vocabularies in use are ~260k */
#define TOK_MAX_DEPTH 16

typedef struct ld {
    zs_tok_t *tok;
    zs_err_t *err;
    const char *name;
} ld;

#define FAIL(L, code, ...) fail((L), (code), __VA_ARGS__)

__attribute__((format(printf, 3, 4)))
static int fail(ld *L, int code, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return zs_err_set(L->err, code, "%s: %s", L->name, msg);
}

static int oom(ld *L) { return FAIL(L, ZS_ENOMEM, "out of memory"); }

/* Copies into a malloc'd NUL-terminated string. */
static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p == NULL) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- typed accessors ------------------------------------------------------------------- */

/* Optional string: absent/null -> *s = NULL. */
static int opt_str(ld *L, json_t *o, const char *key, const char *path, const char **s,
                   size_t *n) {
    json_t *v = json_object_get(o, key);
    *s = NULL;
    *n = 0;
    if (v == NULL || json_is_null(v)) return ZS_OK;
    if (!json_is_string(v)) return FAIL(L, ZS_EFORMAT, "%s.%s must be a string", path, key);
    *s = json_string_value(v);
    *n = json_string_length(v);
    return ZS_OK;
}

static int req_str(ld *L, json_t *o, const char *key, const char *path, const char **s,
                   size_t *n) {
    int rc = opt_str(L, o, key, path, s, n);
    if (rc) return rc;
    if (*s == NULL) return FAIL(L, ZS_EFORMAT, "%s.%s is missing", path, key);
    return ZS_OK;
}

static int opt_bool(ld *L, json_t *o, const char *key, const char *path, int def, int *out) {
    json_t *v = json_object_get(o, key);
    *out = def;
    if (v == NULL || json_is_null(v)) return ZS_OK;
    if (!json_is_boolean(v)) return FAIL(L, ZS_EFORMAT, "%s.%s must be a boolean", path, key);
    *out = json_is_true(v);
    return ZS_OK;
}

static int opt_uint(ld *L, json_t *o, const char *key, const char *path, size_t def,
                    size_t max, size_t *out) {
    json_t *v = json_object_get(o, key);
    *out = def;
    if (v == NULL || json_is_null(v)) return ZS_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (unsigned long long)json_integer_value(v) > max)
        return FAIL(L, ZS_EFORMAT, "%s.%s must be an integer in [0, %zu]", path, key, max);
    *out = (size_t)json_integer_value(v);
    return ZS_OK;
}

/* A single Unicode character given as a string. */
static int req_char(ld *L, json_t *o, const char *key, const char *path, uint32_t *cp) {
    const char *s;
    size_t n;
    int rc = req_str(L, o, key, path, &s, &n);
    if (rc) return rc;
    if (n == 0 || tok_utf8_decode(s, cp) != n)
        return FAIL(L, ZS_EFORMAT, "%s.%s must be exactly one character", path, key);
    return ZS_OK;
}

static int get_type(ld *L, json_t *o, const char *path, const char **type) {
    size_t n;
    if (!json_is_object(o)) return FAIL(L, ZS_EFORMAT, "%s must be an object or null", path);
    return req_str(L, o, "type", path, type, &n);
}

/* {"String": s} or {"Regex": r} */
static int load_pattern(ld *L, json_t *o, const char *path, pcre2_code **re) {
    json_t *p = json_object_get(o, "pattern");
    char where[300];
    snprintf(where, sizeof where, "%s: %s.pattern", L->name, path);
    if (!json_is_object(p) || json_object_size(p) != 1)
        return FAIL(L, ZS_EFORMAT, "%s.pattern must be {\"String\": ...} or {\"Regex\": ...}", path);
    json_t *s = json_object_get(p, "String");
    json_t *r = json_object_get(p, "Regex");
    json_t *v = s ? s : r;
    if (!json_is_string(v))
        return FAIL(L, ZS_EFORMAT, "%s.pattern must be {\"String\": ...} or {\"Regex\": ...}", path);
    return tok_re_compile(json_string_value(v), json_string_length(v), s != NULL, where, re,
                          L->err);
}

static int grow(void **v, size_t *n, size_t elem) {
    void *p = realloc(*v, (*n + 1) * elem);
    if (p == NULL) return ZS_ENOMEM;
    memset((char *)p + *n * elem, 0, elem);
    *v = p;
    (*n)++;
    return ZS_OK;
}

/* ---- normalizer ------------------------------------------------------------------------ */

/* A "Sequence" step: loads each element of o[key] with `one` (same path, depth + 1). */
typedef int (*tok_step_loader)(ld *L, json_t *o, const char *path, int depth);
static int load_sequence(ld *L, json_t *o, const char *key, const char *path, int depth, tok_step_loader one) {
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a)) return FAIL(L, ZS_EFORMAT, "%s.%s must be an array", path, key);
    for (size_t i = 0; i < json_array_size(a); i++) {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.%s[%zu]", path, key, i);
        int rc = one(L, json_array_get(a, i), sub, depth + 1);
        if (rc) return rc;
    }
    return ZS_OK;
}

static int load_normalizer(ld *L, json_t *o, const char *path, int depth) {
    zs_tok_t *tok = L->tok;
    if (o == NULL || json_is_null(o)) return ZS_OK;
    if (depth > TOK_MAX_DEPTH) return FAIL(L, ZS_EFORMAT, "%s: nested too deeply", path);
    const char *type;
    int rc = get_type(L, o, path, &type);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        return load_sequence(L, o, "normalizers", path, depth, load_normalizer);
    }
    if (strcmp(type, "Prepend") == 0 || strcmp(type, "Replace") == 0) {
        if (grow((void **)&tok->norm, &tok->n_norm, sizeof *tok->norm)) return oom(L);
        tok_norm_step *st = &tok->norm[tok->n_norm - 1];
        const char *s;
        size_t n;
        if (type[1] == 'r') {
            st->kind = TN_PREPEND;
            if ((rc = req_str(L, o, "prepend", path, &s, &n))) return rc;
        } else {
            st->kind = TN_REPLACE;
            if ((rc = req_str(L, o, "content", path, &s, &n))) return rc;
            if ((rc = load_pattern(L, o, path, &st->re))) return rc;
        }
        if ((st->str = dupn(s, n)) == NULL) return oom(L);
        st->str_len = n;
        return ZS_OK;
    }
    unorm_form form;
    if (unorm_form_parse(type, &form) == 0) {
        if (grow((void **)&tok->norm, &tok->n_norm, sizeof *tok->norm)) return oom(L);
        tok->norm[tok->n_norm - 1].kind = TN_UNICODE;
        tok->norm[tok->n_norm - 1].form = (int)form;
        return ZS_OK;
    }
    return FAIL(L, ZS_EUNSUPPORTED, "%s: unsupported normalizer '%s' (supported: Sequence, "
                "Prepend, Replace, NFC, NFD, NFKC, NFKD)", path, type);
}

/* ---- pre-tokenizer --------------------------------------------------------------------- */

static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_prepend_scheme(ld *L, json_t *o, const char *path, int *scheme) {
    const char *s;
    size_t n;
    int aps, rc;
    if ((rc = opt_str(L, o, "prepend_scheme", path, &s, &n))) return rc;
    if ((rc = opt_bool(L, o, "add_prefix_space", path, 1, &aps))) return rc;
    *scheme = TS_ALWAYS;
    if (s) {
        if (strcmp(s, "always") == 0) *scheme = TS_ALWAYS;
        else if (strcmp(s, "first") == 0) *scheme = TS_FIRST;
        else if (strcmp(s, "never") == 0) *scheme = TS_NEVER;
        else return FAIL(L, ZS_EFORMAT, "%s.prepend_scheme '%s' is not first/always/never", path, s);
    }
    if (!aps) *scheme = TS_NEVER;
    return ZS_OK;
}

static int load_pretok(ld *L, json_t *o, const char *path, int depth) {
    zs_tok_t *tok = L->tok;
    if (o == NULL || json_is_null(o)) return ZS_OK;
    if (depth > TOK_MAX_DEPTH) return FAIL(L, ZS_EFORMAT, "%s: nested too deeply", path);
    const char *type;
    int rc = get_type(L, o, path, &type);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        return load_sequence(L, o, "pretokenizers", path, depth, load_pretok);
    }
    int kind;
    if (strcmp(type, "ByteLevel") == 0) kind = TP_BYTELEVEL;
    else if (strcmp(type, "Split") == 0) kind = TP_SPLIT;
    else if (strcmp(type, "Metaspace") == 0) kind = TP_METASPACE;
    else if (strcmp(type, "Digits") == 0) kind = TP_DIGITS;
    else
        return FAIL(L, ZS_EUNSUPPORTED, "%s: unsupported pre_tokenizer '%s' (supported: "
                    "Sequence, ByteLevel, Split, Metaspace, Digits)", path, type);
    if (grow((void **)&tok->pre, &tok->n_pre, sizeof *tok->pre)) return oom(L);
    tok_pre_step *st = &tok->pre[tok->n_pre - 1];
    st->kind = kind;
    char where[300];
    snprintf(where, sizeof where, "%s: %s", L->name, path);
    if (kind == TP_BYTELEVEL) {
        int use_regex, trim;
        if ((rc = opt_bool(L, o, "add_prefix_space", path, 1, &st->add_prefix_space))) return rc;
        if ((rc = opt_bool(L, o, "use_regex", path, 1, &use_regex))) return rc;
        if ((rc = opt_bool(L, o, "trim_offsets", path, 1, &trim))) return rc; /* offsets only */
        if (use_regex &&
            (rc = tok_re_compile(GPT2_RE, sizeof GPT2_RE - 1, 0, where, &st->re, L->err)))
            return rc;
    } else if (kind == TP_SPLIT) {
        const char *b;
        size_t n;
        if ((rc = load_pattern(L, o, path, &st->re))) return rc;
        if ((rc = req_str(L, o, "behavior", path, &b, &n))) return rc;
        if ((rc = opt_bool(L, o, "invert", path, 0, &st->invert))) return rc;
        if (strcmp(b, "Removed") == 0) st->behavior = TB_REMOVED;
        else if (strcmp(b, "Isolated") == 0) st->behavior = TB_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0) st->behavior = TB_MERGED_PREV;
        else if (strcmp(b, "MergedWithNext") == 0) st->behavior = TB_MERGED_NEXT;
        else if (strcmp(b, "Contiguous") == 0) st->behavior = TB_CONTIGUOUS;
        else return FAIL(L, ZS_EFORMAT, "%s.behavior '%s' is not a split behavior", path, b);
    } else if (kind == TP_DIGITS) {
        int individual;
        if ((rc = opt_bool(L, o, "individual_digits", path, 0, &individual))) return rc;
        const char *pat = individual ? "\\p{N}" : "\\p{N}+";
        st->behavior = TB_ISOLATED;
        if ((rc = tok_re_compile(pat, strlen(pat), 0, where, &st->re, L->err))) return rc;
    } else {
        uint32_t cp;
        if ((rc = req_char(L, o, "replacement", path, &cp))) return rc;
        st->repl_len = zs_utf8_encode(cp, st->repl);
        if ((rc = load_prepend_scheme(L, o, path, &st->prepend_scheme))) return rc;
        if ((rc = opt_bool(L, o, "split", path, 1, &st->split))) return rc;
    }
    return ZS_OK;
}

/* ---- decoder --------------------------------------------------------------------------- */

static int load_decoder(ld *L, json_t *o, const char *path, int depth) {
    zs_tok_t *tok = L->tok;
    if (o == NULL || json_is_null(o)) return ZS_OK;
    if (depth > TOK_MAX_DEPTH) return FAIL(L, ZS_EFORMAT, "%s: nested too deeply", path);
    tok->has_decoder = 1;
    const char *type;
    int rc = get_type(L, o, path, &type);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        return load_sequence(L, o, "decoders", path, depth, load_decoder);
    }
    int kind;
    if (strcmp(type, "ByteLevel") == 0) kind = TD_BYTELEVEL;
    else if (strcmp(type, "Replace") == 0) kind = TD_REPLACE;
    else if (strcmp(type, "ByteFallback") == 0) kind = TD_BYTEFALLBACK;
    else if (strcmp(type, "Fuse") == 0) kind = TD_FUSE;
    else if (strcmp(type, "Strip") == 0) kind = TD_STRIP;
    else if (strcmp(type, "Metaspace") == 0) kind = TD_METASPACE;
    else
        return FAIL(L, ZS_EUNSUPPORTED, "%s: unsupported decoder '%s' (supported: Sequence, "
                    "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)", path, type);
    if (grow((void **)&tok->dec, &tok->n_dec, sizeof *tok->dec)) return oom(L);
    tok_dec_step *st = &tok->dec[tok->n_dec - 1];
    st->kind = kind;
    if (kind == TD_REPLACE) {
        const char *s;
        size_t n;
        if ((rc = req_str(L, o, "content", path, &s, &n))) return rc;
        if ((st->str = dupn(s, n)) == NULL) return oom(L);
        st->str_len = n;
        if ((rc = load_pattern(L, o, path, &st->re))) return rc;
    } else if (kind == TD_STRIP) {
        if ((rc = req_char(L, o, "content", path, &st->cp))) return rc;
        if ((rc = opt_uint(L, o, "start", path, 0, 1u << 20, &st->start))) return rc;
        if ((rc = opt_uint(L, o, "stop", path, 0, 1u << 20, &st->stop))) return rc;
    } else if (kind == TD_METASPACE) {
        int scheme;
        if ((rc = req_char(L, o, "replacement", path, &st->cp))) return rc;
        if ((rc = load_prepend_scheme(L, o, path, &scheme))) return rc;
        st->prepend_never = scheme == TS_NEVER;
    }
    return ZS_OK;
}

/* ---- post-processor -------------------------------------------------------------------- */

static int ids_append(int32_t **v, size_t *n, int32_t id) {
    int32_t *p = realloc(*v, (*n + 1) * sizeof *p);
    if (p == NULL) return ZS_ENOMEM;
    p[(*n)++] = id;
    *v = p;
    return ZS_OK;
}

/* Wraps the current prefix/suffix: new prefix = pre + old prefix, suffix = old + suf. */
static int post_wrap(ld *L, const int32_t *pre, size_t npre, const int32_t *suf, size_t nsuf) {
    zs_tok_t *tok = L->tok;
    int32_t *np = malloc((npre + tok->n_post_prefix + 1) * sizeof *np);
    if (np == NULL) return oom(L);
    if (npre) memcpy(np, pre, npre * sizeof *np);
    if (tok->n_post_prefix) memcpy(np + npre, tok->post_prefix, tok->n_post_prefix * sizeof *np);
    free(tok->post_prefix);
    tok->post_prefix = np;
    tok->n_post_prefix += npre;
    for (size_t i = 0; i < nsuf; i++)
        if (ids_append(&tok->post_suffix, &tok->n_post_suffix, suf[i])) return oom(L);
    return ZS_OK;
}

static int pair_token(ld *L, json_t *o, const char *key, const char *path, int32_t *id) {
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || json_array_size(a) != 2 || !json_is_string(json_array_get(a, 0)) ||
        !json_is_integer(json_array_get(a, 1)) || json_integer_value(json_array_get(a, 1)) < 0 ||
        json_integer_value(json_array_get(a, 1)) > TOK_MAX_ID)
        return FAIL(L, ZS_EFORMAT, "%s.%s must be [token, id]", path, key);
    *id = (int32_t)json_integer_value(json_array_get(a, 1));
    return ZS_OK;
}

static int load_template(ld *L, json_t *o, const char *path) {
    json_t *single = json_object_get(o, "single");
    json_t *specials = json_object_get(o, "special_tokens");
    if (!json_is_array(single)) return FAIL(L, ZS_EFORMAT, "%s.single must be an array", path);
    if (specials && !json_is_null(specials) && !json_is_object(specials))
        return FAIL(L, ZS_EFORMAT, "%s.special_tokens must be an object", path);
    int32_t *pre = NULL, *suf = NULL;
    size_t npre = 0, nsuf = 0;
    int seen_a = 0, rc = ZS_OK;
    for (size_t i = 0; i < json_array_size(single) && rc == ZS_OK; i++) {
        json_t *it = json_array_get(single, i);
        json_t *sp = json_object_get(it, "SpecialToken");
        json_t *sq = json_object_get(it, "Sequence");
        if (sq && json_is_object(sq)) {
            const char *id;
            size_t n;
            char sub[256];
            snprintf(sub, sizeof sub, "%s.single[%zu].Sequence", path, i);
            if ((rc = req_str(L, sq, "id", sub, &id, &n))) break;
            if (strcmp(id, "A") != 0 || seen_a) {
                rc = FAIL(L, ZS_EUNSUPPORTED, "%s.single[%zu]: only one Sequence A is "
                          "supported in the single template", path, i);
                break;
            }
            seen_a = 1;
        } else if (sp && json_is_object(sp)) {
            json_t *name = json_object_get(sp, "id");
            json_t *def = json_is_string(name) ? json_object_get(specials, json_string_value(name)) : NULL;
            json_t *ids = json_object_get(def, "ids");
            if (!json_is_array(ids)) {
                rc = FAIL(L, ZS_EFORMAT, "%s.single[%zu]: special token %s%s%s not defined in "
                          "special_tokens", path, i, json_is_string(name) ? "'" : "",
                          json_is_string(name) ? json_string_value(name) : "(no id)",
                          json_is_string(name) ? "'" : "");
                break;
            }
            for (size_t k = 0; k < json_array_size(ids); k++) {
                json_t *v = json_array_get(ids, k);
                if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                    json_integer_value(v) > TOK_MAX_ID) {
                    rc = FAIL(L, ZS_EFORMAT, "%s.special_tokens['%s'].ids[%zu] is not a valid id",
                              path, json_string_value(name), k);
                    break;
                }
                if (ids_append(seen_a ? &suf : &pre, seen_a ? &nsuf : &npre,
                               (int32_t)json_integer_value(v))) {
                    rc = oom(L);
                    break;
                }
            }
        } else {
            rc = FAIL(L, ZS_EFORMAT, "%s.single[%zu] must be {\"SpecialToken\": ...} or "
                      "{\"Sequence\": ...}", path, i);
        }
    }
    if (rc == ZS_OK && !seen_a)
        rc = FAIL(L, ZS_EFORMAT, "%s.single has no Sequence A", path);
    if (rc == ZS_OK) rc = post_wrap(L, pre, npre, suf, nsuf);
    free(pre);
    free(suf);
    return rc;
}

static int load_post(ld *L, json_t *o, const char *path, int depth) {
    if (o == NULL || json_is_null(o)) return ZS_OK;
    if (depth > TOK_MAX_DEPTH) return FAIL(L, ZS_EFORMAT, "%s: nested too deeply", path);
    const char *type;
    int rc = get_type(L, o, path, &type);
    if (rc) return rc;
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(o, "processors");
        if (!json_is_array(a)) return FAIL(L, ZS_EFORMAT, "%s.processors must be an array", path);
        for (size_t i = 0; i < json_array_size(a); i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.processors[%zu]", path, i);
            if ((rc = load_post(L, json_array_get(a, i), sub, depth + 1))) return rc;
        }
        return ZS_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) return ZS_OK; /* changes offsets only */
    if (strcmp(type, "TemplateProcessing") == 0) return load_template(L, o, path);
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        int32_t cls, sep;
        if ((rc = pair_token(L, o, "cls", path, &cls))) return rc;
        if ((rc = pair_token(L, o, "sep", path, &sep))) return rc;
        return post_wrap(L, &cls, 1, &sep, 1);
    }
    return FAIL(L, ZS_EUNSUPPORTED, "%s: unsupported post_processor '%s' (supported: Sequence, "
                "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing)", path, type);
}

/* ---- model ----------------------------------------------------------------------------- */

typedef struct vent {
    const char *s;
    size_t n;
    int32_t id;
} vent;

static int load_model(ld *L, json_t *m) {
    zs_tok_t *tok = L->tok;
    tok_bpe *bpe = &tok->bpe;
    int rc;
    if (!json_is_object(m)) return FAIL(L, ZS_EFORMAT, "model is missing or not an object");
    json_t *type = json_object_get(m, "type");
    if (type && !json_is_string(type)) return FAIL(L, ZS_EFORMAT, "model.type must be a string");
    if (type && strcmp(json_string_value(type), "BPE") != 0)
        return FAIL(L, ZS_EUNSUPPORTED, "model.type '%s' is not supported (only BPE)",
                    json_string_value(type));
    json_t *dropout = json_object_get(m, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return FAIL(L, ZS_EUNSUPPORTED, "model.dropout must be null or 0 (BPE dropout is not "
                    "supported)");
    if ((rc = opt_bool(L, m, "fuse_unk", "model", 0, &bpe->fuse_unk))) return rc;
    if ((rc = opt_bool(L, m, "byte_fallback", "model", 0, &bpe->byte_fallback))) return rc;
    if ((rc = opt_bool(L, m, "ignore_merges", "model", 0, &bpe->ignore_merges))) return rc;
    const char *s;
    size_t n;
    if ((rc = opt_str(L, m, "continuing_subword_prefix", "model", &s, &n))) return rc;
    if (s && (bpe->prefix = dupn(s, n)) == NULL) return oom(L);
    bpe->prefix_len = n;
    if ((rc = opt_str(L, m, "end_of_word_suffix", "model", &s, &n))) return rc;
    if (s && (bpe->suffix = dupn(s, n)) == NULL) return oom(L);
    bpe->suffix_len = n;

    json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_object(vocab)) return FAIL(L, ZS_EFORMAT, "model.vocab must be an object");
    size_t count = json_object_size(vocab), total = 0;
    int32_t max_id = -1;
    vent *ents = calloc(count ? count : 1, sizeof *ents);
    if (ents == NULL) return oom(L);
    size_t k = 0;
    for (void *it = json_object_iter(vocab); it; it = json_object_iter_next(vocab, it), k++) {
        json_t *v = json_object_iter_value(it);
        ents[k].s = json_object_iter_key(it);
        ents[k].n = json_object_iter_key_len(it);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > TOK_MAX_ID) {
            rc = FAIL(L, ZS_EFORMAT, "model.vocab['%.100s']: id must be an integer in [0, %d]",
                      ents[k].s, TOK_MAX_ID);
            free(ents);
            return rc;
        }
        ents[k].id = (int32_t)json_integer_value(v);
        if (ents[k].id > max_id) max_id = ents[k].id;
        total += ents[k].n + 1;
    }
    bpe->vocab_count = count;
    tok->vocab_size = (size_t)(max_id + 1);
    tok->arena = malloc(total ? total : 1);
    if (tok->arena == NULL || tok_map_init(&bpe->vocab, count)) {
        free(ents);
        return oom(L);
    }
    tok->id_tok = calloc(tok->vocab_size ? tok->vocab_size : 1, sizeof *tok->id_tok);
    tok->id_len = calloc(tok->vocab_size ? tok->vocab_size : 1, sizeof *tok->id_len);
    if (tok->id_tok == NULL || tok->id_len == NULL) {
        free(ents);
        return oom(L);
    }
    char *a = tok->arena;
    for (size_t i = 0; i < count; i++) {
        if (!tok_utf8_is_valid(ents[i].s, ents[i].n)) {
            rc = FAIL(L, ZS_EFORMAT, "model.vocab: token with id %d is not valid UTF-8", ents[i].id);
            break;
        }
        if (tok->id_tok[ents[i].id]) {
            rc = FAIL(L, ZS_EFORMAT, "model.vocab: id %d is used by two tokens", ents[i].id);
            break;
        }
        if (ents[i].n > UINT32_MAX) {
            rc = FAIL(L, ZS_EFORMAT, "model.vocab: token with id %d is too long", ents[i].id);
            break;
        }
        memcpy(a, ents[i].s, ents[i].n);
        a[ents[i].n] = '\0';
        tok->id_tok[ents[i].id] = a;
        tok->id_len[ents[i].id] = (uint32_t)ents[i].n;
        if (tok_map_put(&bpe->vocab, a, ents[i].n, ents[i].id, NULL) < 0) {
            rc = oom(L);
            break;
        }
        a += ents[i].n + 1;
    }
    free(ents);
    if (rc) return rc;

    bpe->unk_id = -1;
    if ((rc = opt_str(L, m, "unk_token", "model", &s, &n))) return rc;
    if (s) {
        bpe->unk_id = tok_map_get(&bpe->vocab, s, n);
        if (bpe->unk_id < 0)
            return FAIL(L, ZS_EFORMAT, "model.unk_token '%.100s' is not in model.vocab", s);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        bpe->byte_ids[b] = tok_map_get(&bpe->vocab, name, 6);
    }

    json_t *merges = json_object_get(m, "merges");
    if (merges == NULL || json_is_null(merges)) merges = NULL;
    else if (!json_is_array(merges)) return FAIL(L, ZS_EFORMAT, "model.merges must be an array");
    size_t nm = merges ? json_array_size(merges) : 0;
    if (tok_pairmap_init(&bpe->merges, nm)) return oom(L);
    tok_buf cat = {0};
    uint32_t rank = 0;
    for (size_t i = 0; i < nm; i++) {
        json_t *e = json_array_get(merges, i);
        const char *x, *y;
        size_t xn, yn;
        if (json_is_string(e)) {
            x = json_string_value(e);
            size_t len = json_string_length(e);
            if (len >= 8 && memcmp(x, "#version", 8) == 0) continue;
            const char *sp = memchr(x, ' ', len);
            if (sp == NULL || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - x)) != NULL) {
                rc = FAIL(L, ZS_EFORMAT, "model.merges[%zu] '%.100s' is not \"a b\"", i, x);
                break;
            }
            xn = (size_t)(sp - x);
            y = sp + 1;
            yn = len - xn - 1;
        } else if (json_is_array(e) && json_array_size(e) == 2 &&
                   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            x = json_string_value(json_array_get(e, 0));
            xn = json_string_length(json_array_get(e, 0));
            y = json_string_value(json_array_get(e, 1));
            yn = json_string_length(json_array_get(e, 1));
        } else {
            rc = FAIL(L, ZS_EFORMAT, "model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]", i);
            break;
        }
        int32_t xa = tok_map_get(&bpe->vocab, x, xn), yb = tok_map_get(&bpe->vocab, y, yn);
        if (xa < 0 || yb < 0) {
            rc = FAIL(L, ZS_EFORMAT, "model.merges[%zu]: token '%.100s' is not in model.vocab",
                      i, xa < 0 ? x : y);
            break;
        }
        size_t skip = bpe->prefix ? bpe->prefix_len : 0;
        if (skip > yn || (skip < yn && ((unsigned char)y[skip] & 0xC0) == 0x80)) {
            rc = FAIL(L, ZS_EFORMAT, "model.merges[%zu]: '%.100s' is shorter than "
                      "continuing_subword_prefix", i, y);
            break;
        }
        cat.len = 0;
        if (tok_buf_put(&cat, x, xn) || tok_buf_put(&cat, y + skip, yn - skip)) {
            rc = oom(L);
            break;
        }
        int32_t nid = tok_map_get(&bpe->vocab, cat.p, cat.len);
        if (nid < 0) {
            rc = FAIL(L, ZS_EFORMAT, "model.merges[%zu]: merged token '%.100s' is not in "
                      "model.vocab", i, cat.p);
            break;
        }
        if (tok_pairmap_set(&bpe->merges, xa, yb, rank++, nid)) {
            rc = oom(L);
            break;
        }
    }
    tok_buf_free(&cat);
    return rc;
}

/* ---- added tokens ---------------------------------------------------------------------- */

static int load_added(ld *L, json_t *arr) {
    zs_tok_t *tok = L->tok;
    int rc;
    if (arr == NULL || json_is_null(arr)) return ZS_OK;
    if (!json_is_array(arr)) return FAIL(L, ZS_EFORMAT, "added_tokens must be an array");
    size_t n = json_array_size(arr);
    tok->added = calloc(n ? n : 1, sizeof *tok->added);
    if (tok->added == NULL || tok_map_init(&tok->added_map, n)) return oom(L);
    int32_t max_added = -1;
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        if (!json_is_object(o)) return FAIL(L, ZS_EFORMAT, "%s must be an object", path);
        const char *c;
        size_t cl;
        if ((rc = req_str(L, o, "content", path, &c, &cl))) return rc;
        if (cl == 0) return FAIL(L, ZS_EFORMAT, "%s.content is empty", path);
        json_t *jid = json_object_get(o, "id");
        if (!json_is_integer(jid) || json_integer_value(jid) < 0 ||
            json_integer_value(jid) > TOK_MAX_ID)
            return FAIL(L, ZS_EFORMAT, "%s.id must be an integer in [0, %d]", path, TOK_MAX_ID);
        tok_added ad = {0};
        int sw, ls, rs, sp, nz;
        if ((rc = opt_bool(L, o, "special", path, 0, &sp)) ||
            (rc = opt_bool(L, o, "single_word", path, 0, &sw)) ||
            (rc = opt_bool(L, o, "lstrip", path, 0, &ls)) ||
            (rc = opt_bool(L, o, "rstrip", path, 0, &rs)) ||
            (rc = opt_bool(L, o, "normalized", path, !sp, &nz)))
            return rc;
        if (tok_map_get(&tok->added_map, c, cl) >= 0) continue; /* duplicate: ignored, as tokenizers does */
        if ((ad.content = dupn(c, cl)) == NULL) return oom(L);
        ad.len = cl;
        ad.special = (unsigned char)sp;
        ad.single_word = (unsigned char)sw;
        ad.lstrip = (unsigned char)ls;
        ad.rstrip = (unsigned char)rs;
        ad.normalized = (unsigned char)nz;
        /* the id tokenizers assigns (it ignores the file's id) */
        int32_t id = tok_map_get(&tok->bpe.vocab, c, cl);
        if (id < 0) {
            size_t vc = tok->bpe.vocab_count;
            if (max_added < 0) id = (int32_t)vc;
            else if ((size_t)max_added >= vc || vc == 0) id = max_added + 1;
            else id = (int32_t)vc;
        }
        if (id != (int32_t)json_integer_value(jid)) {
            rc = FAIL(L, ZS_EFORMAT, "%s '%.100s' has id %lld but tokenizers would assign id %d "
                      "(added tokens not in the vocab must follow it in order)", path, c,
                      (long long)json_integer_value(jid), id);
            free(ad.content);
            return rc;
        }
        if (id > TOK_MAX_ID) {
            free(ad.content);
            return FAIL(L, ZS_EFORMAT, "%s: id %d too large", path, id);
        }
        if (id > max_added) max_added = id;
        ad.id = id;
        tok->added[tok->n_added++] = ad;
        if (tok_map_put(&tok->added_map, ad.content, cl, id, NULL) < 0) return oom(L);
    }
    return ZS_OK;
}

static int cmp_added_idx(const void *a, const void *b, void *ctx) {
    const zs_tok_t *tok = ((const void **)ctx)[0];
    int use_norm = *(const int *)((const void **)ctx)[1];
    const tok_added *x = &tok->added[*(const uint32_t *)a], *y = &tok->added[*(const uint32_t *)b];
    const char *xs = use_norm ? x->norm : x->content, *ys = use_norm ? y->norm : y->content;
    size_t xn = use_norm ? x->norm_len : x->len, yn = use_norm ? y->norm_len : y->len;
    unsigned char xb = (unsigned char)xs[0], yb = (unsigned char)ys[0];
    if (xb != yb) return xb < yb ? -1 : 1;
    if (xn != yn) return xn > yn ? -1 : 1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

static int build_matchset(ld *L, int use_norm, tok_matchset *ms) {
    zs_tok_t *tok = L->tok;
    ms->idx = malloc((tok->n_added ? tok->n_added : 1) * sizeof *ms->idx);
    if (ms->idx == NULL) return oom(L);
    for (size_t i = 0; i < tok->n_added; i++) {
        const tok_added *a = &tok->added[i];
        if ((int)a->normalized != use_norm) continue;
        if (use_norm && a->norm_len == 0) continue;
        ms->idx[ms->n++] = (uint32_t)i;
    }
    const void *ctx[2] = {tok, &use_norm};
    qsort_r(ms->idx, ms->n, sizeof *ms->idx, cmp_added_idx, (void *)ctx);
    size_t k = 0;
    for (unsigned b = 0; b <= 256; b++) {
        while (k < ms->n && b < 256) {
            const tok_added *a = &tok->added[ms->idx[k]];
            unsigned fb = (unsigned char)(use_norm ? a->norm : a->content)[0];
            if (fb >= b) break;
            k++;
        }
        ms->first[b] = (uint32_t)k;
    }
    ms->first[256] = (uint32_t)ms->n;
    return ZS_OK;
}

/* ---- assembling ------------------------------------------------------------------------ */

static int32_t find_special(const zs_tok_t *tok, const char *const *names) {
    for (size_t k = 0; names[k]; k++)
        for (size_t i = 0; i < tok->n_added; i++)
            if (tok->added[i].special && strcmp(tok->added[i].content, names[k]) == 0)
                return tok->added[i].id;
    return -1;
}

static int finish(ld *L) {
    zs_tok_t *tok = L->tok;
    int rc;
    size_t vs = tok->vocab_size;
    for (size_t i = 0; i < tok->n_added; i++)
        if ((size_t)tok->added[i].id + 1 > vs) vs = (size_t)tok->added[i].id + 1;
    if (vs > tok->vocab_size) {
        const char **t = realloc(tok->id_tok, vs * sizeof *t);
        if (t == NULL) return oom(L);
        tok->id_tok = t;
        uint32_t *l = realloc(tok->id_len, vs * sizeof *l);
        if (l == NULL) return oom(L);
        tok->id_len = l;
        for (size_t i = tok->vocab_size; i < vs; i++) {
            tok->id_tok[i] = NULL;
            tok->id_len[i] = 0;
        }
        tok->vocab_size = vs;
    }
    if (tok->vocab_size == 0) return FAIL(L, ZS_EFORMAT, "the vocabulary is empty");
    tok->id_special = calloc(tok->vocab_size, 1);
    if (tok->id_special == NULL) return oom(L);
    int any_single = 0;
    for (size_t i = 0; i < tok->n_added; i++) {
        tok_added *a = &tok->added[i];
        if (a->special) tok->id_special[a->id] = 1;
        any_single |= a->single_word;
        if (a->normalized &&
            (rc = tok_normalize_string(tok, a->content, a->len, &a->norm, &a->norm_len, L->err)))
            return rc;
        /* like tokenizers, an id maps back to the normalized form of a normalized token */
        tok->id_tok[a->id] = a->normalized ? a->norm : a->content;
        tok->id_len[a->id] = (uint32_t)(a->normalized ? a->norm_len : a->len);
    }
    if ((rc = build_matchset(L, 0, &tok->match_raw))) return rc;
    if ((rc = build_matchset(L, 1, &tok->match_norm))) return rc;
    if (any_single) {
        static const char word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
        char where[300];
        snprintf(where, sizeof where, "%s: single_word class", L->name);
        if ((rc = tok_re_compile(word, sizeof word - 1, 0, where, &tok->word_re, L->err)))
            return rc;
    }
    for (size_t i = 0; i < tok->n_post_prefix; i++)
        if ((size_t)tok->post_prefix[i] >= tok->vocab_size || !tok->id_tok[tok->post_prefix[i]])
            return FAIL(L, ZS_EFORMAT, "post_processor: special token id %d is not in the "
                        "vocabulary", tok->post_prefix[i]);
    for (size_t i = 0; i < tok->n_post_suffix; i++)
        if ((size_t)tok->post_suffix[i] >= tok->vocab_size || !tok->id_tok[tok->post_suffix[i]])
            return FAIL(L, ZS_EFORMAT, "post_processor: special token id %d is not in the "
                        "vocabulary", tok->post_suffix[i]);
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>",
                                            "<｜begin▁of▁sentence｜>", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>",
                                            "<｜end▁of▁sentence｜>", NULL};
    tok->bos = tok->n_post_prefix ? tok->post_prefix[0] : find_special(tok, bos_names);
    tok->eos = tok->n_post_suffix ? tok->post_suffix[tok->n_post_suffix - 1]
                                  : find_special(tok, eos_names);
    return ZS_OK;
}

int zs_tok_load_from_string(const char *json, size_t len, const char *name, zs_tok_t **out,
                            zs_err_t *err) {
    if (out) *out = NULL;
    if (json == NULL || out == NULL)
        return zs_err_set(err, ZS_EINVAL, "zs_tok_load_from_string: NULL argument");
    ld L = {NULL, err, name ? name : "tokenizer.json"};
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL)
        return FAIL(&L, ZS_EFORMAT, "invalid JSON at line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);
    int rc = ZS_OK;
    zs_tok_t *tok = calloc(1, sizeof *tok);
    if (tok == NULL || (tok->name = dupn(L.name, strlen(L.name))) == NULL) {
        free(tok);
        json_decref(root);
        return oom(&L);
    }
    L.tok = tok;
    tok->bos = tok->eos = -1;
    if (!json_is_object(root)) {
        rc = FAIL(&L, ZS_EFORMAT, "top level must be an object");
        goto out;
    }
    static const char *const refused[] = {"truncation", "padding", NULL};
    for (size_t i = 0; refused[i]; i++) {
        json_t *v = json_object_get(root, refused[i]);
        if (v && !json_is_null(v)) {
            rc = FAIL(&L, ZS_EUNSUPPORTED, "%s must be null (the server does its own %s)",
                      refused[i], refused[i]);
            goto out;
        }
    }
    if ((rc = load_model(&L, json_object_get(root, "model")))) goto out;
    if ((rc = load_added(&L, json_object_get(root, "added_tokens")))) goto out;
    if ((rc = load_normalizer(&L, json_object_get(root, "normalizer"), "normalizer", 0))) goto out;
    if ((rc = load_pretok(&L, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0))) goto out;
    if ((rc = load_post(&L, json_object_get(root, "post_processor"), "post_processor", 0))) goto out;
    if ((rc = load_decoder(&L, json_object_get(root, "decoder"), "decoder", 0))) goto out;
    rc = finish(&L);
out:
    json_decref(root);
    if (rc) {
        zs_tok_free(tok);
        return rc;
    }
    *out = tok;
    return ZS_OK;
}

int zs_tok_load(const char *path, zs_tok_t **out, zs_err_t *err) {
    if (out) *out = NULL;
    if (path == NULL || out == NULL) return zs_err_set(err, ZS_EINVAL, "zs_tok_load: NULL argument");
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        return zs_err_set(err, zs_status_from_errno(e), "%s: cannot open: %s", path, strerror(e));
    }
    tok_buf b = {0};
    char chunk[65536];
    size_t got;
    int rc = ZS_OK;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (tok_buf_put(&b, chunk, got)) {
            rc = zs_err_set(err, ZS_ENOMEM, "%s: out of memory reading file", path);
            break;
        }
    if (rc == ZS_OK && ferror(f)) rc = zs_err_set(err, ZS_EIO, "%s: read error", path);
    fclose(f);
    if (rc == ZS_OK) rc = zs_tok_load_from_string(b.p ? b.p : "", b.len, path, out, err);
    tok_buf_free(&b);
    return rc;
}

void zs_tok_free(zs_tok_t *tok) {
    if (tok == NULL) return;
    free(tok->name);
    free(tok->arena);
    tok_map_free(&tok->bpe.vocab);
    tok_pairmap_free(&tok->bpe.merges);
    free(tok->bpe.prefix);
    free(tok->bpe.suffix);
    free(tok->id_tok);
    free(tok->id_len);
    free(tok->id_special);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].norm);
    }
    free(tok->added);
    tok_map_free(&tok->added_map);
    free(tok->match_raw.idx);
    free(tok->match_norm.idx);
    pcre2_code_free(tok->word_re);
    for (size_t i = 0; i < tok->n_norm; i++) {
        free(tok->norm[i].str);
        pcre2_code_free(tok->norm[i].re);
    }
    free(tok->norm);
    for (size_t i = 0; i < tok->n_pre; i++) pcre2_code_free(tok->pre[i].re);
    free(tok->pre);
    free(tok->post_prefix);
    free(tok->post_suffix);
    for (size_t i = 0; i < tok->n_dec; i++) {
        free(tok->dec[i].str);
        pcre2_code_free(tok->dec[i].re);
    }
    free(tok->dec);
    free(tok);
}
