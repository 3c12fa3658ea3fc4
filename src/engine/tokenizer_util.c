/* Tokenizer building blocks shared by the tokenizer_*.c files: growable buffers, the
 * open-addressing hash maps for the vocabulary and the BPE merges, UTF-8 validation and
 * lossy repair, Unicode White_Space, the GPT-2 byte-level alphabet, and PCRE2 pattern
 * compilation/matching with Oniguruma-compatible semantics. */
#include "engine/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ------------------------------------------------------------------------- */

int tok_buf_put(tok_buf *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) return ZS_ENOMEM;
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) return ZS_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return ZS_OK;
}

int tok_buf_putc(tok_buf *b, char c) { return tok_buf_put(b, &c, 1); }

void tok_buf_free(tok_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- string map ---------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *k, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static size_t cap_for(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 1) cap *= 2;
    return cap;
}

int tok_map_init(tok_map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    if (expected > SIZE_MAX / 8) return ZS_ENOMEM;
    m->cap = cap_for(expected);
    m->key = calloc(m->cap, sizeof *m->key);
    m->klen = calloc(m->cap, sizeof *m->klen);
    m->val = calloc(m->cap, sizeof *m->val);
    if (!m->key || !m->klen || !m->val) {
        tok_map_free(m);
        return ZS_ENOMEM;
    }
    return ZS_OK;
}

void tok_map_free(tok_map *m) {
    free(m->key);
    free(m->klen);
    free(m->val);
    memset(m, 0, sizeof *m);
}

static size_t map_slot(const tok_map *m, const char *k, size_t klen) {
    size_t mask = m->cap - 1;
    size_t i = (size_t)hash_bytes(k, klen) & mask;
    while (m->key[i] != NULL) {
        if (m->klen[i] == klen && memcmp(m->key[i], k, klen) == 0) return i;
        i = (i + 1) & mask;
    }
    return i;
}

static int map_grow(tok_map *m) {
    tok_map n;
    int rc = tok_map_init(&n, m->cap);  /* doubles the capacity */
    if (rc) return rc;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->key[i] == NULL) continue;
        size_t j = map_slot(&n, m->key[i], m->klen[i]);
        n.key[j] = m->key[i];
        n.klen[j] = m->klen[i];
        n.val[j] = m->val[i];
        n.count++;
    }
    tok_map_free(m);
    *m = n;
    return ZS_OK;
}

int tok_map_put(tok_map *m, const char *k, size_t klen, int32_t v, int32_t *old) {
    if (klen > UINT32_MAX) return ZS_ERANGE;
    if ((m->count + 1) * 2 > m->cap) {
        int rc = map_grow(m);
        if (rc) return rc;
    }
    size_t i = map_slot(m, k, klen);
    if (m->key[i] != NULL) {
        if (old) *old = m->val[i];
        return 0;
    }
    m->key[i] = k;
    m->klen[i] = (uint32_t)klen;
    m->val[i] = v;
    m->count++;
    return 1;
}

int tok_map_set(tok_map *m, const char *k, size_t klen, int32_t v) {
    int rc = tok_map_put(m, k, klen, v, NULL);
    if (rc < 0) return rc;
    if (rc == 0) m->val[map_slot(m, k, klen)] = v;
    return ZS_OK;
}

int32_t tok_map_get(const tok_map *m, const char *k, size_t klen) {
    if (m->cap == 0) return -1;
    size_t i = map_slot(m, k, klen);
    return m->key[i] ? m->val[i] : -1;
}

/* ---- pair map ------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

int tok_pairmap_init(tok_pairmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    if (expected > SIZE_MAX / 16) return ZS_ENOMEM;
    m->cap = cap_for(expected);
    m->key = calloc(m->cap, sizeof *m->key);
    m->rank = calloc(m->cap, sizeof *m->rank);
    m->newid = calloc(m->cap, sizeof *m->newid);
    if (!m->key || !m->rank || !m->newid) {
        tok_pairmap_free(m);
        return ZS_ENOMEM;
    }
    return ZS_OK;
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->key);
    free(m->rank);
    free(m->newid);
    memset(m, 0, sizeof *m);
}

static size_t pair_slot(const tok_pairmap *m, uint64_t key) {
    size_t mask = m->cap - 1;
    size_t i = (size_t)mix64(key) & mask;
    while (m->key[i] != 0 && m->key[i] != key) i = (i + 1) & mask;
    return i;
}

int tok_pairmap_set(tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t newid) {
    if ((m->count + 1) * 2 > m->cap) {
        tok_pairmap n;
        int rc = tok_pairmap_init(&n, m->cap);
        if (rc) return rc;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->key[i] == 0) continue;
            size_t j = pair_slot(&n, m->key[i]);
            n.key[j] = m->key[i];
            n.rank[j] = m->rank[i];
            n.newid[j] = m->newid[i];
            n.count++;
        }
        tok_pairmap_free(m);
        *m = n;
    }
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = pair_slot(m, key);
    if (m->key[i] == 0) m->count++;
    m->key[i] = key;
    m->rank[i] = rank;
    m->newid[i] = newid;
    return ZS_OK;
}

int tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *newid) {
    if (m->cap == 0) return 0;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = pair_slot(m, key);
    if (m->key[i] == 0) return 0;
    *rank = m->rank[i];
    *newid = m->newid[i];
    return 1;
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

size_t tok_utf8_valid_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else return 0;
    if (n < need) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return need;
}

/* Length of the maximal prefix of an ill-formed sequence that one U+FFFD replaces. */
static size_t utf8_bad_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else return 1;
    size_t i = 1;
    if (i < n && i < need && s[1] >= lo && s[1] <= hi) {
        i = 2;
        while (i < n && i < need && s[i] >= 0x80 && s[i] <= 0xBF) i++;
    }
    return i;
}

size_t tok_utf8_decode(const char *str, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)str;
    if (s[0] < 0x80) { *cp = s[0]; return 1; }
    if (s[0] < 0xE0) { *cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (s[0] < 0xF0) {
        *cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
          ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

int tok_utf8_lossy(tok_buf *out, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t k = tok_utf8_valid_len(s + i, n - i);
        if (k) { i += k; continue; }
        if (i > run && tok_buf_put(out, s + run, i - run)) return ZS_ENOMEM;
        if (tok_buf_put(out, "\xEF\xBF\xBD", 3)) return ZS_ENOMEM;
        i += utf8_bad_len(s + i, n - i);
        run = i;
    }
    if (n > run && tok_buf_put(out, s + run, n - run)) return ZS_ENOMEM;
    return ZS_OK;
}

int tok_utf8_is_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        size_t k = tok_utf8_valid_len(s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

int tok_is_whitespace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- byte-level alphabet ------------------------------------------------------------- */

static int byte_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(unsigned b) {
    if (byte_printable(b)) return b;
    if (b <= 0x20) return 256 + b;              /* 0x00..0x20 -> U+0100..U+0120 */
    if (b >= 0x7F && b <= 0xA0) return 289 + (b - 0x7F); /* -> U+0121..U+0142 */
    return 323;                                 /* 0xAD -> U+0143 */
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_printable(cp) ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(0x7F + (cp - 289));
    if (cp == 323) return 0xAD;
    return -1;
}

/* ---- regular expressions ------------------------------------------------------------- */

void tok_spans_free(tok_spans *s) {
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int spans_push(tok_spans *s, size_t a, size_t b) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        size_t *v = realloc(s->v, cap * 2 * sizeof *v);
        if (v == NULL) return ZS_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[2 * s->n] = a;
    s->v[2 * s->n + 1] = b;
    s->n++;
    return ZS_OK;
}

/* Rewrites Oniguruma escapes into PCRE2: Oniguruma's \s (Unicode White_Space) includes
 * U+0085, which PCRE2's \s does not; \w, \b, \h differ and are refused. */
static int rewrite_pattern(const char *pat, size_t len, const char *where, tok_buf *out,
                           zs_err_t *err) {
    int in_class = 0;
    for (size_t i = 0; i < len; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char e = pat[i + 1];
            const char *rep = NULL;
            if (e == 's') rep = in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
            else if (e == 'S' && !in_class) rep = "[^\\s\\x{85}]";
            else if (e == 'S' || e == 'w' || e == 'W' || e == 'b' || e == 'B' || e == 'h' ||
                     e == 'H' || e == 'X' || e == 'R' || e == 'K' || e == 'y' || e == 'Y')
                return zs_err_set(err, ZS_EUNSUPPORTED,
                                  "%s: regex escape \\%c is not supported (its meaning differs "
                                  "between Oniguruma and PCRE2)", where, e);
            if ((e == 'p' || e == 'P') && i + 2 < len && pat[i + 2] == '{') {
                /* Oniguruma's \p{Script} is the Script property; PCRE2 >= 10.40 reads it as
                 * Script_Extensions (e.g. U+3002 is in \p{Han} there): force sc: */
                size_t a = i + 3, b = a;
                while (b < len && b - a < 64 &&
                       ((pat[b] >= 'A' && pat[b] <= 'Z') || (pat[b] >= 'a' && pat[b] <= 'z') ||
                        pat[b] == '_'))
                    b++;
                if (b < len && pat[b] == '}' && b - a > 2) {
                    char probe[96];
                    snprintf(probe, sizeof probe, "\\p{sc:%.*s}", (int)(b - a), pat + a);
                    int ec;
                    PCRE2_SIZE eo;
                    pcre2_code *t = pcre2_compile((PCRE2_SPTR)probe, PCRE2_ZERO_TERMINATED,
                                                  PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
                    if (t) {
                        pcre2_code_free(t);
                        probe[1] = e;
                        if (tok_buf_put(out, probe, strlen(probe))) goto oom;
                        i = b;
                        continue;
                    }
                }
            }
            if (rep) {
                if (tok_buf_put(out, rep, strlen(rep))) goto oom;
            } else if (tok_buf_put(out, pat + i, 2)) {
                goto oom;
            }
            i++;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            if (tok_buf_putc(out, c)) goto oom;
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < len && pat[i + 1] == '^') {
                if (tok_buf_putc(out, '^')) goto oom;
                i++;
            }
            if (i + 1 < len && pat[i + 1] == ']') {
                if (tok_buf_putc(out, ']')) goto oom;
                i++;
            }
            continue;
        }
        if (c == '[' && in_class && i + 1 < len && pat[i + 1] == ':')
            return zs_err_set(err, ZS_EUNSUPPORTED, "%s: POSIX/nested character classes are "
                              "not supported in regex", where);
        if (c == ']' && in_class) in_class = 0;
        if (tok_buf_putc(out, c)) goto oom;
    }
    return ZS_OK;
oom:
    return zs_err_set(err, ZS_ENOMEM, "%s: out of memory", where);
}

int tok_re_compile(const char *pat, size_t len, int literal, const char *where,
                   pcre2_code **out, zs_err_t *err) {
    *out = NULL;
    if (len == 0)
        return zs_err_set(err, ZS_EUNSUPPORTED, "%s: empty pattern is not supported", where);
    tok_buf rw = {0};
    const char *src = pat;
    size_t src_len = len;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;
    if (literal) {
        opts = PCRE2_UTF | PCRE2_LITERAL; /* PCRE2_UCP is not allowed with PCRE2_LITERAL */
    } else {
        int rc = rewrite_pattern(pat, len, where, &rw, err);
        if (rc) { tok_buf_free(&rw); return rc; }
        src = rw.p;
        src_len = rw.len;
    }
    int ecode = 0;
    PCRE2_SIZE eoff = 0;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, src_len, opts, &ecode, &eoff, NULL);
    tok_buf_free(&rw);
    if (re == NULL) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(ecode, msg, sizeof msg) < 0) strcpy((char *)msg, "?");
        return zs_err_set(err, ZS_EFORMAT, "%s: invalid regex at offset %zu: %s", where,
                          (size_t)eoff, (const char *)msg);
    }
    uint32_t minlen = 0;
    if (pcre2_pattern_info(re, PCRE2_INFO_MINLENGTH, &minlen) != 0 || minlen == 0) {
        pcre2_code_free(re);
        return zs_err_set(err, ZS_EUNSUPPORTED,
                          "%s: regex can match the empty string (not supported)", where);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    *out = re;
    return ZS_OK;
}

int tok_re_find_all(const pcre2_code *re, const char *s, size_t n, tok_spans *out,
                    zs_err_t *err) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (md == NULL) return zs_err_set(err, ZS_ENOMEM, "tokenizer: out of memory (regex)");
    size_t pos = 0;
    int rc = ZS_OK;
    while (pos < n) {
        int m = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT)
            m = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                            NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            if (pcre2_get_error_message(m, msg, sizeof msg) < 0) strcpy((char *)msg, "?");
            rc = zs_err_set(err, ZS_EINVAL, "tokenizer: regex match failed at byte %zu: %s",
                            pos, (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (b <= a || b <= pos) { /* cannot happen: empty-matching patterns are refused */
            rc = zs_err_set(err, ZS_EINVAL, "tokenizer: regex matched empty at byte %zu", a);
            break;
        }
        if (spans_push(out, a, b)) {
            rc = zs_err_set(err, ZS_ENOMEM, "tokenizer: out of memory (regex)");
            break;
        }
        pos = b;
    }
    pcre2_match_data_free(md);
    return rc;
}
