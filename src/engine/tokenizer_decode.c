/* Decoding ids to text: id validation, the decoder chain (ByteLevel, Replace, ByteFallback,
 * Fuse, Strip, Metaspace) applied to the token-string list exactly as tokenizers'
 * decode_chain does, and the streaming decoder (tokenizers' DecodeStream algorithm: re-decode
 * a small window of ids and emit only new text that does not end in U+FFFD). */
#include "engine/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define FFFD "\xEF\xBF\xBD"

typedef struct strlist {
    tok_buf *v;
    size_t n, cap;
} strlist;

static void sl_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) tok_buf_free(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Appends an empty string and returns it (NULL on allocation failure). */
static tok_buf *sl_add(strlist *l) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        tok_buf *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL) return NULL;
        l->v = v;
        l->cap = cap;
    }
    tok_buf *b = &l->v[l->n++];
    memset(b, 0, sizeof *b);
    if (tok_buf_put(b, "", 0)) {
        l->n--;
        return NULL;
    }
    return b;
}

static int sl_add_bytes(strlist *l, const char *s, size_t n) {
    tok_buf *b = sl_add(l);
    return b == NULL || tok_buf_put(b, s, n) ? ZS_ENOMEM : ZS_OK;
}

/* ---- decoder steps: each maps list `in` to a new list `out` ----------------------------- */

static int dec_bytelevel(const strlist *in, strlist *out) {
    tok_buf raw = {0};
    int rc = ZS_OK;
    for (size_t i = 0; i < in->n && rc == ZS_OK; i++) {
        const tok_buf *t = &in->v[i];
        size_t start = raw.len;
        int all = 1;
        for (size_t k = 0; k < t->len && rc == ZS_OK;) {
            uint32_t cp;
            k += tok_utf8_decode(t->p + k, &cp);
            int b = tok_cp_to_byte(cp);
            if (b < 0) {
                all = 0;
                break;
            }
            rc = tok_buf_putc(&raw, (char)b);
        }
        if (rc == ZS_OK && !all) {
            raw.len = start;
            rc = tok_buf_put(&raw, t->p, t->len);
        }
    }
    tok_buf *o = rc ? NULL : sl_add(out);
    if (o == NULL || tok_utf8_lossy(o, raw.p ? raw.p : "", raw.len)) rc = ZS_ENOMEM;
    tok_buf_free(&raw);
    return rc;
}

static int dec_replace(const tok_dec_step *st, const strlist *in, strlist *out, zs_err_t *err) {
    for (size_t i = 0; i < in->n; i++) {
        const tok_buf *t = &in->v[i];
        tok_spans m = {0};
        int rc = tok_re_find_all(st->re, t->p, t->len, &m, err);
        if (rc) return rc;
        tok_buf *o = sl_add(out);
        size_t prev = 0;
        if (o == NULL) rc = ZS_ENOMEM;
        for (size_t k = 0; k < m.n && rc == ZS_OK; k++) {
            if (tok_buf_put(o, t->p + prev, m.v[2 * k] - prev) ||
                tok_buf_put(o, st->str, st->str_len))
                rc = ZS_ENOMEM;
            prev = m.v[2 * k + 1];
        }
        if (rc == ZS_OK && tok_buf_put(o, t->p + prev, t->len - prev)) rc = ZS_ENOMEM;
        tok_spans_free(&m);
        if (rc) return rc;
    }
    return ZS_OK;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" -> byte (u8::from_str_radix semantics, which also accepts "+N"), else -1. */
static int byte_token(const tok_buf *t) {
    if (t->len != 6 || memcmp(t->p, "<0x", 3) != 0 || t->p[5] != '>') return -1;
    int hi = hexval(t->p[3]), lo = hexval(t->p[4]);
    if (t->p[3] == '+' && lo >= 0) return lo;
    if (hi < 0 || lo < 0) return -1;
    return hi * 16 + lo;
}

static int flush_bytes(tok_buf *run, strlist *out) {
    if (run->len == 0) return ZS_OK;
    int rc = ZS_OK;
    if (tok_utf8_is_valid(run->p, run->len)) {
        rc = sl_add_bytes(out, run->p, run->len);
    } else {
        for (size_t i = 0; i < run->len && rc == ZS_OK; i++) rc = sl_add_bytes(out, FFFD, 3);
    }
    run->len = 0;
    return rc;
}

static int dec_bytefallback(const strlist *in, strlist *out) {
    tok_buf run = {0};
    int rc = ZS_OK;
    for (size_t i = 0; i < in->n && rc == ZS_OK; i++) {
        int b = byte_token(&in->v[i]);
        if (b >= 0) {
            rc = tok_buf_putc(&run, (char)b);
            continue;
        }
        rc = flush_bytes(&run, out);
        if (rc == ZS_OK) rc = sl_add_bytes(out, in->v[i].p, in->v[i].len);
    }
    if (rc == ZS_OK) rc = flush_bytes(&run, out);
    tok_buf_free(&run);
    return rc;
}

static int dec_fuse(const strlist *in, strlist *out) {
    tok_buf *o = sl_add(out);
    if (o == NULL) return ZS_ENOMEM;
    for (size_t i = 0; i < in->n; i++)
        if (tok_buf_put(o, in->v[i].p, in->v[i].len)) return ZS_ENOMEM;
    return ZS_OK;
}

static int dec_strip(const tok_dec_step *st, const strlist *in, strlist *out) {
    for (size_t i = 0; i < in->n; i++) {
        const tok_buf *t = &in->v[i];
        size_t a = 0, b = t->len;
        for (size_t k = 0; k < st->start && a < b; k++) {
            uint32_t cp;
            size_t cl = tok_utf8_decode(t->p + a, &cp);
            if (cp != st->cp) break;
            a += cl;
        }
        for (size_t k = 0; k < st->stop && b > a; k++) {
            size_t cs = b - 1;
            while (cs > a && ((unsigned char)t->p[cs] & 0xC0) == 0x80) cs--;
            uint32_t cp;
            tok_utf8_decode(t->p + cs, &cp);
            if (cp != st->cp) break;
            b = cs;
        }
        if (sl_add_bytes(out, t->p + a, b - a)) return ZS_ENOMEM;
    }
    return ZS_OK;
}

static int dec_metaspace(const tok_dec_step *st, const strlist *in, strlist *out) {
    for (size_t i = 0; i < in->n; i++) {
        const tok_buf *t = &in->v[i];
        tok_buf *o = sl_add(out);
        if (o == NULL) return ZS_ENOMEM;
        for (size_t k = 0; k < t->len;) {
            uint32_t cp;
            size_t cl = tok_utf8_decode(t->p + k, &cp);
            int rc;
            if (cp != st->cp) rc = tok_buf_put(o, t->p + k, cl);
            else if (i == 0 && !st->prepend_never) rc = ZS_OK;
            else rc = tok_buf_putc(o, ' ');
            if (rc) return rc;
            k += cl;
        }
    }
    return ZS_OK;
}

static int check_ids(const zs_tok_t *tok, const int32_t *ids, size_t n, zs_err_t *err) {
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= tok->vocab_size)
            return zs_err_set(err, ZS_EINVAL, "%s: token id %d at position %zu is out of range "
                              "[0, %zu)", tok->name, ids[i], i, tok->vocab_size);
        if (tok->id_tok[ids[i]] == NULL)
            return zs_err_set(err, ZS_EINVAL, "%s: token id %d at position %zu has no token",
                              tok->name, ids[i], i);
    }
    return ZS_OK;
}

/* Decodes valid ids into out (appended). */
static int decode_into(const zs_tok_t *tok, const int32_t *ids, size_t n, int skip_special,
                       tok_buf *out, zs_err_t *err) {
    strlist a = {0}, b = {0};
    int rc = ZS_OK;
    for (size_t i = 0; i < n && rc == ZS_OK; i++) {
        if (skip_special && tok->id_special[ids[i]]) continue;
        rc = sl_add_bytes(&a, tok->id_tok[ids[i]], tok->id_len[ids[i]]);
    }
    for (size_t s = 0; s < tok->n_dec && rc == ZS_OK; s++) {
        const tok_dec_step *st = &tok->dec[s];
        switch (st->kind) {
        case TD_BYTELEVEL: rc = dec_bytelevel(&a, &b); break;
        case TD_REPLACE: rc = dec_replace(st, &a, &b, err); break;
        case TD_BYTEFALLBACK: rc = dec_bytefallback(&a, &b); break;
        case TD_FUSE: rc = dec_fuse(&a, &b); break;
        case TD_STRIP: rc = dec_strip(st, &a, &b); break;
        default: rc = dec_metaspace(st, &a, &b); break;
        }
        sl_free(&a);
        a = b;
        memset(&b, 0, sizeof b);
    }
    for (size_t i = 0; i < a.n && rc == ZS_OK; i++) {
        if (!tok->has_decoder && i > 0 && tok_buf_putc(out, ' ')) rc = ZS_ENOMEM;
        if (rc == ZS_OK && tok_buf_put(out, a.v[i].p, a.v[i].len)) rc = ZS_ENOMEM;
    }
    if (rc == ZS_OK && tok_buf_put(out, "", 0)) rc = ZS_ENOMEM;
    sl_free(&a);
    sl_free(&b);
    if (rc == ZS_ENOMEM) return zs_err_set(err, rc, "%s: out of memory decoding", tok->name);
    return rc;
}

int zs_tok_decode(const zs_tok_t *tok, const int32_t *ids, size_t n, int skip_special,
                  char **text, size_t *len, zs_err_t *err) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (tok == NULL || text == NULL || (ids == NULL && n))
        return zs_err_set(err, ZS_EINVAL, "zs_tok_decode: NULL argument");
    int rc = check_ids(tok, ids, n, err);
    if (rc) return rc;
    tok_buf out = {0};
    rc = decode_into(tok, ids, n, skip_special, &out, err);
    if (rc) {
        tok_buf_free(&out);
        return rc;
    }
    *text = out.p;
    if (len) *len = out.len;
    return ZS_OK;
}

/* ---- streaming ------------------------------------------------------------------------- */

/* Past this many ids without emitting, text ending in U+FFFD is emitted anyway so that a
 * stream of invalid bytes cannot make each step re-decode an ever longer window. */
#define STREAM_MAX_PENDING 32

struct zs_tok_stream {
    const zs_tok_t *tok;
    int skip_special;
    int32_t *ids;          /* window: context ids, then ids not yet emitted */
    size_t n, cap;
    size_t prefix_index;   /* ids[0..prefix_index) decode to `prefix` */
    tok_buf prefix;
    tok_buf cur;           /* scratch decode of the window */
    tok_buf out;           /* returned text */
};

int zs_tok_stream_new(const zs_tok_t *tok, int skip_special, zs_tok_stream_t **out,
                      zs_err_t *err) {
    if (out) *out = NULL;
    if (tok == NULL || out == NULL)
        return zs_err_set(err, ZS_EINVAL, "zs_tok_stream_new: NULL argument");
    zs_tok_stream_t *s = calloc(1, sizeof *s);
    if (s == NULL || tok_buf_put(&s->prefix, "", 0) || tok_buf_put(&s->out, "", 0)) {
        if (s) tok_buf_free(&s->prefix);
        free(s);
        return zs_err_set(err, ZS_ENOMEM, "zs_tok_stream_new: out of memory");
    }
    s->tok = tok;
    s->skip_special = skip_special;
    *out = s;
    return ZS_OK;
}

void zs_tok_stream_free(zs_tok_stream_t *s) {
    if (s == NULL) return;
    free(s->ids);
    tok_buf_free(&s->prefix);
    tok_buf_free(&s->cur);
    tok_buf_free(&s->out);
    free(s);
}

static int ends_with_fffd(const tok_buf *b) {
    return b->len >= 3 && memcmp(b->p + b->len - 3, FFFD, 3) == 0;
}

/* Emits cur minus the prefix when it grew (and, unless forced, does not end in U+FFFD);
 * then slides the window as DecodeStream does. */
static int stream_emit(zs_tok_stream_t *s, int force, zs_err_t *err) {
    s->out.len = 0;
    s->out.p[0] = '\0';
    if (s->cur.len <= s->prefix.len || (!force && ends_with_fffd(&s->cur))) return ZS_OK;
    size_t common = s->prefix.len;
    if (memcmp(s->cur.p, s->prefix.p, s->prefix.len) != 0) {
        /* the window re-decoded differently (e.g. an invalid byte-fallback run): emit what
         * follows the longest common prefix, cut back to a character boundary */
        common = 0;
        while (common < s->prefix.len && s->cur.p[common] == s->prefix.p[common]) common++;
        while (common > 0 && ((unsigned char)s->cur.p[common] & 0xC0) == 0x80) common--;
    }
    if (tok_buf_put(&s->out, s->cur.p + common, s->cur.len - common)) goto oom;
    size_t new_prefix_index = s->n - s->prefix_index;
    memmove(s->ids, s->ids + s->prefix_index, new_prefix_index * sizeof *s->ids);
    s->n = new_prefix_index;
    s->prefix.len = 0;
    int rc = decode_into(s->tok, s->ids, s->n, s->skip_special, &s->prefix, err);
    if (rc) return rc;
    s->prefix_index = new_prefix_index;
    return ZS_OK;
oom:
    return zs_err_set(err, ZS_ENOMEM, "zs_tok_stream: out of memory");
}

int zs_tok_stream_step(zs_tok_stream_t *s, int32_t id, const char **text, size_t *len,
                       zs_err_t *err) {
    if (text) *text = "";
    if (len) *len = 0;
    if (s == NULL || text == NULL || len == NULL)
        return zs_err_set(err, ZS_EINVAL, "zs_tok_stream_step: NULL argument");
    int rc = check_ids(s->tok, &id, 1, err);
    if (rc) return rc;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        int32_t *v = realloc(s->ids, cap * sizeof *v);
        if (v == NULL) return zs_err_set(err, ZS_ENOMEM, "zs_tok_stream: out of memory");
        s->ids = v;
        s->cap = cap;
    }
    s->ids[s->n++] = id;
    s->cur.len = 0;
    rc = decode_into(s->tok, s->ids, s->n, s->skip_special, &s->cur, err);
    if (rc == ZS_OK)
        rc = stream_emit(s, s->n - s->prefix_index > STREAM_MAX_PENDING, err);
    if (rc) {
        s->n--; /* leave the stream as it was */
        return rc;
    }
    *text = s->out.p;
    *len = s->out.len;
    return ZS_OK;
}

int zs_tok_stream_flush(zs_tok_stream_t *s, const char **text, size_t *len, zs_err_t *err) {
    if (text) *text = "";
    if (len) *len = 0;
    if (s == NULL || text == NULL || len == NULL)
        return zs_err_set(err, ZS_EINVAL, "zs_tok_stream_flush: NULL argument");
    s->cur.len = 0;
    int rc = decode_into(s->tok, s->ids, s->n, s->skip_special, &s->cur, err);
    if (rc == ZS_OK) rc = stream_emit(s, 1, err);
    if (rc) return rc;
    *text = s->out.p;
    *len = s->out.len;
    return ZS_OK;
}
