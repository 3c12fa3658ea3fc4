/* Unicode normalization forms NFC, NFD, NFKC, NFKD (UAX #15) on UTF-8 text: strict UTF-8
 * decoding, full canonical/compatibility decomposition (tables) with algorithmic Hangul,
 * canonical ordering (stable sort of each run of non-starters by combining class) and
 * canonical composition (primary composites, blocking rules, Hangul LV/LVT). Results equal
 * the Rust crate unicode-normalization-alignments that the reference tokenizers package uses
 * (Unicode 9.0 tables, generated into unicode_tables.c). */
#include "engine/unicode_normalize.h"
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

/* Hangul (Unicode 3.12, "Conjoining Jamo Behavior") */
enum {
    S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7,
    L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

/* Runs of non-starters longer than this are sorted by counting sort instead of insertion. */
#define SHORT_RUN 16

int unorm_form_parse(const char *name, unorm_form *form) {
    static const char *const names[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *form = (unorm_form)i;
            return 0;
        }
    }
    return -1;
}

unsigned unorm_ccc(uint32_t cp) {
    size_t blk = cp >> unorm_ccc_shift;
    if (blk >= unorm_ccc_index_len) return 0;
    size_t bs = (size_t)1 << unorm_ccc_shift;
    return unorm_ccc_blocks[(size_t)unorm_ccc_index[blk] * bs + (cp & (bs - 1))];
}

/* The table entry for cp, or NULL when it has no decomposition. */
static const unorm_decomp_entry *decomp_find(uint32_t cp) {
    size_t lo = 0, hi = unorm_decomp_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t k = unorm_decomp[mid].key >> 8;
        if (k == cp) return &unorm_decomp[mid];
        if (k < cp) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Primary composite of (a, b), or 0. */
static uint32_t compose_pair(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    size_t lo = 0, hi = unorm_comp_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const unorm_comp_entry *e = &unorm_comp[mid];
        if (e->first == a && e->second == b) return e->composite;
        if (e->first < a || (e->first == a && e->second < b)) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* Strict UTF-8 (no surrogates, overlongs or values above U+10FFFF): the length of the
 * character at s[0..n) and its value, or 0 when invalid or truncated. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Code points with, per slot, the byte offset of the input character the slot is aligned to. */
typedef struct cpbuf {
    uint32_t *cp, *pos;
    size_t n, cap;
} cpbuf;

static int cpbuf_reserve(cpbuf *b, size_t extra) {
    if (extra <= b->cap - b->n) return ZS_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n < extra) {
        if (cap > SIZE_MAX / 2 / sizeof(uint32_t)) return ZS_ENOMEM;
        cap *= 2;
    }
    uint32_t *cp = realloc(b->cp, cap * sizeof *cp);
    if (cp == NULL) return ZS_ENOMEM;
    b->cp = cp;
    uint32_t *pos = realloc(b->pos, cap * sizeof *pos);
    if (pos == NULL) return ZS_ENOMEM;
    b->pos = pos;
    b->cap = cap;
    return ZS_OK;
}

/* Stable sort of cp[0..n) by combining class (all non-zero). */
static int sort_run(uint32_t *cp, size_t n) {
    if (n <= SHORT_RUN) {
        for (size_t i = 1; i < n; i++) {
            uint32_t x = cp[i];
            unsigned cx = unorm_ccc(x);
            size_t j = i;
            while (j > 0 && unorm_ccc(cp[j - 1]) > cx) {
                cp[j] = cp[j - 1];
                j--;
            }
            cp[j] = x;
        }
        return ZS_OK;
    }
    size_t count[257] = {0};
    uint32_t *tmp = malloc(n * sizeof *tmp);
    if (tmp == NULL) return ZS_ENOMEM;
    for (size_t i = 0; i < n; i++) count[unorm_ccc(cp[i]) + 1]++;
    for (size_t k = 1; k < 257; k++) count[k] += count[k - 1];
    for (size_t i = 0; i < n; i++) tmp[count[unorm_ccc(cp[i])]++] = cp[i];
    memcpy(cp, tmp, n * sizeof *tmp);
    free(tmp);
    return ZS_OK;
}

/* Canonical ordering. Only the code points move: slot positions stay in input order. */
static int reorder(cpbuf *b) {
    size_t i = 0;
    while (i < b->n) {
        if (unorm_ccc(b->cp[i]) == 0) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < b->n && unorm_ccc(b->cp[j]) != 0) j++;
        if (j - i > 1) {
            int rc = sort_run(b->cp + i, j - i);
            if (rc) return rc;
        }
        i = j;
    }
    return ZS_OK;
}

/* Canonical composition in place (UAX #15 D117). */
static void compose(cpbuf *b) {
    size_t w = 0, starter = SIZE_MAX;
    int last_ccc = -1; /* class of the last character kept after the starter; -1: none */
    for (size_t i = 0; i < b->n; i++) {
        uint32_t c = b->cp[i];
        int cc = (int)unorm_ccc(c);
        if (starter != SIZE_MAX && (last_ccc < 0 || last_ccc < cc)) {
            uint32_t comp = compose_pair(b->cp[starter], c);
            if (comp) {
                b->cp[starter] = comp;
                continue;
            }
        }
        if (cc == 0) {
            starter = w;
            last_ccc = -1;
        } else {
            last_ccc = cc;
        }
        b->cp[w] = c;
        b->pos[w] = b->pos[i];
        w++;
    }
    b->n = w;
}

int unorm_utf8(unorm_form form, const char *s, size_t n, char **out, size_t *out_len,
               uint32_t **src, zs_err_t *err) {
    *out = NULL;
    *out_len = 0;
    if (src) *src = NULL;
    if ((unsigned)form > UNORM_NFKD)
        return zs_err_set(err, ZS_EINVAL, "unicode: unknown normalization form %d", (int)form);
    if (n >= UINT32_MAX)
        return zs_err_set(err, ZS_EINVAL, "unicode: text of %zu bytes is too long to normalize",
                          n);
    const unsigned char *u = (const unsigned char *)s;
    int compat = form == UNORM_NFKC || form == UNORM_NFKD;
    int comp = form == UNORM_NFC || form == UNORM_NFKC;
    cpbuf b = {0};
    char *o = NULL;
    uint32_t *op = NULL;
    int rc = cpbuf_reserve(&b, n + 1);
    if (rc) goto oom;

    /* 1. decode and decompose */
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t len = utf8_next(u + i, n - i, &c);
        if (len == 0) {
            rc = zs_err_set(err, ZS_EINVAL, "unicode: invalid UTF-8 at byte %zu", i);
            goto fail;
        }
        uint32_t at = (uint32_t)i;
        i += len;
        if (c < 0xA0) { /* nothing below U+00A0 decomposes */
            if ((rc = cpbuf_reserve(&b, 1))) goto oom;
            b.cp[b.n] = c;
            b.pos[b.n++] = at;
            continue;
        }
        if (c >= S_BASE && c < S_BASE + S_COUNT) {
            uint32_t si = c - S_BASE, t = T_BASE + si % T_COUNT;
            if ((rc = cpbuf_reserve(&b, 3))) goto oom;
            b.cp[b.n] = L_BASE + si / N_COUNT;
            b.pos[b.n++] = at;
            b.cp[b.n] = V_BASE + (si % N_COUNT) / T_COUNT;
            b.pos[b.n++] = at;
            if (t != T_BASE) {
                b.cp[b.n] = t;
                b.pos[b.n++] = at;
            }
            continue;
        }
        const unorm_decomp_entry *e = decomp_find(c);
        size_t dl = 0, off = 0;
        if (e) {
            dl = compat ? (e->key & 0x1F) : ((e->key >> 5) & 0x7);
            off = compat ? e->compat : e->canon;
        }
        if ((rc = cpbuf_reserve(&b, dl ? dl : 1))) goto oom;
        if (dl == 0) {
            b.cp[b.n] = c;
            b.pos[b.n++] = at;
        } else {
            for (size_t k = 0; k < dl; k++) {
                b.cp[b.n] = unorm_decomp_data[off + k];
                b.pos[b.n++] = at;
            }
        }
    }

    /* 2. canonical ordering, 3. composition */
    if ((rc = reorder(&b))) goto oom;
    if (comp) compose(&b);

    /* 4. encode */
    size_t olen = 0;
    for (size_t i = 0; i < b.n; i++) {
        uint32_t c = b.cp[i];
        olen += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    }
    if ((o = malloc(olen + 1)) == NULL) goto oom;
    if (src && (op = malloc((olen ? olen : 1) * sizeof *op)) == NULL) goto oom;
    size_t w = 0;
    for (size_t i = 0; i < b.n; i++) {
        size_t k = zs_utf8_encode(b.cp[i], o + w);
        if (op)
            for (size_t j = 0; j < k; j++) op[w + j] = b.pos[i];
        w += k;
    }
    o[w] = '\0';
    free(b.cp);
    free(b.pos);
    *out = o;
    *out_len = w;
    if (src) *src = op;
    return ZS_OK;
oom:
    rc = zs_err_set(err, ZS_ENOMEM, "unicode: out of memory normalizing %zu bytes", n);
fail:
    free(b.cp);
    free(b.pos);
    free(o);
    free(op);
    return rc;
}
