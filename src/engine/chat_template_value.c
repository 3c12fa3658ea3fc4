/* Chat-template runtime values: the arena they live in, the bounded string builder, error
 * formatting with template line/column, UTF-8 helpers, truthiness and equality, and the
 * Python-compatible text forms of values: str(), repr() and transformers' tojson. */
#include "engine/chat_template_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena --------------------------------------------------------------------------- */
struct ct_chunk {
    ct_chunk *next;
    size_t size, used;
    max_align_t data[];
};

void ct_arena_init(ct_arena *a, size_t cap) {
    memset(a, 0, sizeof *a);
    a->cap = cap;
}

void *ct_alloc(ct_arena *a, size_t n) {
    const size_t al = sizeof(max_align_t);
    if (n > SIZE_MAX / 2) { a->over = 1; return NULL; }
    n = (n + al - 1) / al * al;
    if (n == 0) n = al;
    ct_chunk *h = a->head;
    if (h == NULL || h->size - h->used < n) {
        size_t sz = n > 65536 ? n : 65536;
        if (a->used + sz > a->cap) { a->over = 1; return NULL; }
        h = malloc(sizeof *h + sz);
        if (h == NULL) { a->over = 2; return NULL; }
        h->size = sz;
        h->used = 0;
        h->next = a->head;
        a->head = h;
        a->used += sz;
    }
    void *p = (char *)h->data + h->used;
    h->used += n;
    memset(p, 0, n);
    return p;
}

void ct_arena_free(ct_arena *a) {
    ct_chunk *h = a->head;
    while (h) {
        ct_chunk *nx = h->next;
        free(h);
        h = nx;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- string builder -------------------------------------------------------------------- */
int ct_sb_put(ct_sb *b, const char *s, size_t n) {
    if (b->over) return -1;
    if (n > b->max || b->n > b->max - n) { b->over = 1; return -1; }
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (p == NULL) { b->over = 2; return -1; }
        b->p = p;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int ct_sb_puts(ct_sb *b, const char *s) { return ct_sb_put(b, s, strlen(s)); }
int ct_sb_putc(ct_sb *b, char ch) { return ct_sb_put(b, &ch, 1); }

void ct_sb_free(ct_sb *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- errors -------------------------------------------------------------------------------- */
static void line_col(const char *src, size_t off, size_t *line, size_t *col) {
    size_t l = 1, cpos = 1;
    for (size_t i = 0; src && i < off && src[i]; i++) {
        if (src[i] == '\n') { l++; cpos = 1; } else cpos++;
    }
    *line = l;
    *col = cpos;
}

static int err_atv(zs_err_t *err, const char *src, size_t off, int code, const char *fmt,
                   va_list ap) __attribute__((format(printf, 5, 0)));
static int err_atv(zs_err_t *err, const char *src, size_t off, int code, const char *fmt,
                   va_list ap) {
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t line, col;
    line_col(src, off, &line, &col);
    return zs_err_set(err, code, "chat template line %zu col %zu: %s", line, col, msg);
}

int ct_err_at(zs_err_t *err, const char *src, size_t off, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = err_atv(err, src, off, code, fmt, ap);
    va_end(ap);
    return r;
}

int ct_fail(ct_ctx *c, size_t off, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = err_atv(c->err, c->src, off, code, fmt, ap);
    va_end(ap);
    return r;
}

int ct_fail_mem(ct_ctx *c, size_t off) {
    if (c->arena.over == 2) return ct_fail(c, off, ZS_ENOMEM, "out of memory");
    return ct_fail(c, off, ZS_ERANGE, "render memory limit (%zu bytes) exceeded",
                   c->lim.max_memory_bytes);
}

int ct_fail_sb(ct_ctx *c, const ct_sb *b, size_t off) {
    if (b->over == 2) return ct_fail(c, off, ZS_ENOMEM, "out of memory");
    return ct_fail(c, off, ZS_ERANGE, "output/string size limit (%zu bytes) exceeded", b->max);
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */
size_t ct_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) { *cp = 0; return 1; }
    if (u[0] < 0x80) { *cp = u[0]; return 1; }
    size_t need = (u[0] >= 0xF0) ? 4 : (u[0] >= 0xE0) ? 3 : (u[0] >= 0xC0) ? 2 : 1;
    if (need == 1 || need > n) { *cp = 0xFFFD; return 1; }
    uint32_t v = u[0] & (0xFF >> (need + 1));
    for (size_t i = 1; i < need; i++) v = (v << 6) | (u[i] & 0x3F);
    *cp = v;
    return need;
}

int ct_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char b = u[i];
        if (b < 0x80) { i++; continue; }
        size_t need;
        uint32_t min;
        if (b >= 0xC2 && b <= 0xDF) { need = 2; min = 0x80; }
        else if (b >= 0xE0 && b <= 0xEF) { need = 3; min = 0x800; }
        else if (b >= 0xF0 && b <= 0xF4) { need = 4; min = 0x10000; }
        else return 0;
        if (n - i < need) return 0;
        uint32_t v = b & (0xFF >> (need + 1));
        for (size_t k = 1; k < need; k++) {
            if ((u[i + k] & 0xC0) != 0x80) return 0;
            v = (v << 6) | (u[i + k] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
        i += need;
    }
    return 1;
}

size_t ct_utf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) k++;
    return k;
}

int ct_py_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
           cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* ---- constructors -------------------------------------------------------------------------- */
ct_val ct_undef(const char *name) { ct_val v = {.t = CT_UNDEF}; v.u.uname = name; return v; }
ct_val ct_none(void) { ct_val v = {.t = CT_NONE}; return v; }
ct_val ct_bool(int b) { ct_val v = {.t = CT_BOOL}; v.u.b = b ? 1 : 0; return v; }
ct_val ct_int(int64_t i) { ct_val v = {.t = CT_INT}; v.u.i = i; return v; }
ct_val ct_float(double f) { ct_val v = {.t = CT_FLOAT}; v.u.f = f; return v; }

ct_str *ct_str_new(ct_arena *a, const char *s, size_t n) {
    if (n > SIZE_MAX - sizeof(ct_str) - 1) return NULL;
    ct_str *r = ct_alloc(a, sizeof(ct_str) + n + 1);
    if (r == NULL) return NULL;
    r->len = n;
    if (n) memcpy(r->s, s, n);
    r->s[n] = '\0';
    return r;
}

int ct_mkstr(ct_ctx *c, size_t off, const char *s, size_t n, ct_val *out) {
    if (n > c->lim.max_output_bytes)
        return ct_fail(c, off, ZS_ERANGE, "string size limit (%zu bytes) exceeded",
                       c->lim.max_output_bytes);
    ct_str *r = ct_str_new(&c->arena, s, n);
    if (r == NULL) return ct_fail_mem(c, off);
    out->t = CT_STR;
    out->u.s = r;
    return 0;
}

ct_list *ct_list_new(ct_arena *a, size_t cap, int kind) {
    ct_list *l = ct_alloc(a, sizeof *l);
    if (l == NULL) return NULL;
    l->kind = kind;
    if (cap == 0) cap = 1; /* never a NULL item pointer, even for empty lists */
    if (cap > SIZE_MAX / sizeof(ct_val)) return NULL;
    l->v = ct_alloc(a, cap * sizeof(ct_val));
    if (l->v == NULL) return NULL;
    l->cap = cap;
    return l;
}

int ct_list_push(ct_arena *a, ct_list *l, ct_val v) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        if (nc > SIZE_MAX / sizeof(ct_val)) return -1;
        ct_val *nv = ct_alloc(a, nc * sizeof(ct_val));
        if (nv == NULL) return -1;
        if (l->n) memcpy(nv, l->v, l->n * sizeof(ct_val));
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = v;
    return 0;
}

ct_dict *ct_dict_new(ct_arena *a, size_t cap) {
    ct_dict *d = ct_alloc(a, sizeof *d);
    if (d == NULL) return NULL;
    if (cap) {
        if (cap > SIZE_MAX / sizeof(ct_val)) return NULL;
        d->k = ct_alloc(a, cap * sizeof(ct_val));
        d->v = ct_alloc(a, cap * sizeof(ct_val));
        if (d->k == NULL || d->v == NULL) return NULL;
        d->cap = cap;
    }
    return d;
}

static int hashable(ct_val k) {
    return k.t == CT_STR || k.t == CT_INT || k.t == CT_BOOL || k.t == CT_FLOAT ||
           k.t == CT_NONE || (k.t == CT_LIST && k.u.l->kind == CT_LK_TUPLE);
}

ct_val *ct_dict_get(ct_dict *d, ct_val k) {
    for (size_t i = 0; i < d->n; i++)
        if (ct_eq(d->k[i], k, 0)) return &d->v[i];
    return NULL;
}

ct_val *ct_dict_gets(ct_dict *d, const char *key) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == CT_STR && d->k[i].u.s->len == kl && memcmp(d->k[i].u.s->s, key, kl) == 0)
            return &d->v[i];
    return NULL;
}

int ct_dict_set(ct_arena *a, ct_dict *d, ct_val k, ct_val v) {
    if (!hashable(k)) return -2;
    ct_val *e = ct_dict_get(d, k);
    if (e) { *e = v; return 0; }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 4;
        if (nc > SIZE_MAX / sizeof(ct_val)) return -1;
        ct_val *nk = ct_alloc(a, nc * sizeof(ct_val));
        ct_val *nv = ct_alloc(a, nc * sizeof(ct_val));
        if (nk == NULL || nv == NULL) return -1;
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(ct_val));
            memcpy(nv, d->v, d->n * sizeof(ct_val));
        }
        d->k = nk;
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
    return 0;
}

const char *ct_type_name(ct_val v) {
    switch (v.t) {
    case CT_UNDEF: return "Undefined";
    case CT_NONE: return "NoneType";
    case CT_BOOL: return "bool";
    case CT_INT: return "int";
    case CT_FLOAT: return "float";
    case CT_STR: return "str";
    case CT_LIST:
        switch (v.u.l->kind) {
        case CT_LK_TUPLE: return "tuple";
        case CT_LK_VIEW: return v.u.l->vname ? v.u.l->vname : "dict_view";
        case CT_LK_GEN: return "generator";
        default: return "list";
        }
    case CT_DICT: return "dict";
    case CT_NS: return "Namespace";
    case CT_FUNC: return "function";
    case CT_LOOP: return "LoopContext";
    default: return "?";
    }
}

int ct_truthy(ct_val v) {
    switch (v.t) {
    case CT_UNDEF: case CT_NONE: return 0;
    case CT_BOOL: return v.u.b;
    case CT_INT: return v.u.i != 0;
    case CT_FLOAT: return v.u.f != 0.0;
    case CT_STR: return v.u.s->len != 0;
    case CT_LIST: return v.u.l->kind == CT_LK_GEN ? 1 : v.u.l->n != 0;
    case CT_DICT: return v.u.d->n != 0;
    default: return 1;
    }
}

int ct_is_num(ct_val v) { return v.t == CT_BOOL || v.t == CT_INT || v.t == CT_FLOAT; }

int ct_eq(ct_val a, ct_val b, int depth) {
    if (depth > CT_MAX_VALUE_DEPTH) return 0;
    if (ct_is_num(a) && ct_is_num(b)) {
        if (a.t != CT_FLOAT && b.t != CT_FLOAT) {
            int64_t x = a.t == CT_INT ? a.u.i : a.u.b, y = b.t == CT_INT ? b.u.i : b.u.b;
            return x == y;
        }
        if (a.t == CT_FLOAT && b.t == CT_FLOAT) return a.u.f == b.u.f;
        /* int vs float: exact comparison as Python does */
        double f = a.t == CT_FLOAT ? a.u.f : b.u.f;
        int64_t i = a.t == CT_FLOAT ? (b.t == CT_INT ? b.u.i : b.u.b) : (a.t == CT_INT ? a.u.i : a.u.b);
        if (!(f == f) || f != floor(f) || f < -9.3e18 || f > 9.3e18) return 0;
        return (int64_t)f == i && (double)i == f;
    }
    if (a.t != b.t) return 0;
    switch (a.t) {
    case CT_UNDEF: case CT_NONE: return 1;
    case CT_STR: return a.u.s->len == b.u.s->len && memcmp(a.u.s->s, b.u.s->s, a.u.s->len) == 0;
    case CT_LIST: {
        ct_list *x = a.u.l, *y = b.u.l;
        if (x == y) return 1;
        if (x->kind != y->kind || x->kind == CT_LK_GEN || x->kind == CT_LK_VIEW) return 0;
        if (x->n != y->n) return 0;
        for (size_t i = 0; i < x->n; i++)
            if (!ct_eq(x->v[i], y->v[i], depth + 1)) return 0;
        return 1;
    }
    case CT_DICT: {
        ct_dict *x = a.u.d, *y = b.u.d;
        if (x == y) return 1;
        if (x->n != y->n) return 0;
        for (size_t i = 0; i < x->n; i++) {
            ct_val *o = ct_dict_get(y, x->k[i]);
            if (o == NULL || !ct_eq(x->v[i], *o, depth + 1)) return 0;
        }
        return 1;
    }
    case CT_NS: return a.u.d == b.u.d;
    case CT_FUNC: return a.u.fn == b.u.fn;
    case CT_LOOP: return a.u.loop == b.u.loop;
    default: return 0;
    }
}

/* ---- Python float repr ------------------------------------------------------------------- */
int ct_format_float(double f, char *buf, size_t n) {
    if (f != f) return snprintf(buf, n, "nan");
    if (isinf(f)) return snprintf(buf, n, f < 0 ? "-inf" : "inf");
    if (f == 0.0) return snprintf(buf, n, signbit(f) ? "-0.0" : "0.0");
    char e[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    if (prec > 17) prec = 17;
    snprintf(e, sizeof e, "%.*e", prec - 1, f);
    /* e = [-]d.ddddde[+-]XX ; collect digits and exponent */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = e;
    if (*p == '-') { neg = 1; p++; }
    while (*p && *p != 'e') {
        if (*p >= '0' && *p <= '9' && nd < 20) digits[nd++] = *p;
        p++;
    }
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = '\0';
    int decpt = exp10 + 1;
    char out[64];
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++) out[o++] = '0';
            for (int i = 0; i < nd; i++) out[o++] = digits[i];
        } else {
            for (int i = 0; i < decpt; i++) out[o++] = i < nd ? digits[i] : '0';
            out[o++] = '.';
            if (nd > decpt) for (int i = decpt; i < nd; i++) out[o++] = digits[i];
            else out[o++] = '0';
        }
        out[o] = '\0';
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (int i = 1; i < nd; i++) out[o++] = digits[i];
        }
        out[o] = '\0';
        int ex = decpt - 1;
        snprintf(out + o, sizeof out - o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    return snprintf(buf, n, "%s", out);
}

/* ---- str() / repr() -------------------------------------------------------------------------- */
/* Code points whose printability (Python str.isprintable) we know; others are refused in
 * repr() rather than guessed. */
static int known_printable(uint32_t cp, int *printable) {
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0xA0) || cp == 0xAD) { *printable = 0; return 1; }
    if (cp < 0x7F) { *printable = 1; return 1; }
    if (cp >= 0xD800 && cp <= 0xDFFF) { *printable = 0; return 1; }
    if ((cp >= 0xA1 && cp <= 0x377) || (cp >= 0x37A && cp <= 0x37F) || (cp >= 0x384 && cp <= 0x38A) ||
        cp == 0x38C || (cp >= 0x38E && cp <= 0x3A1) || (cp >= 0x3A3 && cp <= 0x52F) ||
        (cp >= 0x3041 && cp <= 0x3096) || (cp >= 0x3099 && cp <= 0x30FF) ||
        (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xAC00 && cp <= 0xD7A3) ||
        (cp >= 0xFF01 && cp <= 0xFF60) || (cp >= 0x3001 && cp <= 0x303F) ||
        (cp >= 0x2010 && cp <= 0x2027) || (cp >= 0x2030 && cp <= 0x205E) ||
        (cp >= 0x1F300 && cp <= 0x1F64F)) { *printable = 1; return 1; }
    if (cp == 0x2028 || cp == 0x2029 || (cp >= 0x2000 && cp <= 0x200F) || cp == 0x3000 ||
        cp == 0xFEFF || (cp >= 0x202A && cp <= 0x202F) || (cp >= 0x2060 && cp <= 0x206F) ||
        (cp >= 0xE000 && cp <= 0xF8FF)) { *printable = 0; return 1; }
    return 0;
}

static int repr_str(ct_ctx *c, const ct_str *s, ct_sb *b, size_t off) {
    int has_sq = memchr(s->s, '\'', s->len) != NULL, has_dq = memchr(s->s, '"', s->len) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    ct_sb_putc(b, q);
    for (size_t i = 0; i < s->len;) {
        uint32_t cp;
        size_t k = ct_utf8_decode(s->s + i, s->len - i, &cp);
        char tmp[16];
        int pr;
        if (cp == '\\') ct_sb_put(b, "\\\\", 2);
        else if (cp == (uint32_t)q) { ct_sb_putc(b, '\\'); ct_sb_putc(b, q); }
        else if (cp == '\n') ct_sb_put(b, "\\n", 2);
        else if (cp == '\r') ct_sb_put(b, "\\r", 2);
        else if (cp == '\t') ct_sb_put(b, "\\t", 2);
        else if (!known_printable(cp, &pr))
            return ct_fail(c, off, ZS_EUNSUPPORTED,
                           "cannot reproduce Python repr() of a string containing U+%04X", (unsigned)cp);
        else if (pr) ct_sb_put(b, s->s + i, k);
        else {
            if (cp <= 0xFF) snprintf(tmp, sizeof tmp, "\\x%02x", (unsigned)cp);
            else if (cp <= 0xFFFF) snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            else snprintf(tmp, sizeof tmp, "\\U%08x", (unsigned)cp);
            ct_sb_puts(b, tmp);
        }
        i += k;
    }
    ct_sb_putc(b, q);
    return b->over ? ct_fail_sb(c, b, off) : 0;
}

static int put_num(ct_sb *b, ct_val v) {
    char tmp[64];
    if (v.t == CT_BOOL) return ct_sb_puts(b, v.u.b ? "True" : "False");
    if (v.t == CT_INT) snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i);
    else ct_format_float(v.u.f, tmp, sizeof tmp);
    return ct_sb_puts(b, tmp);
}

int ct_repr(ct_ctx *c, ct_val v, ct_sb *b, size_t off, int depth) {
    if (depth > CT_MAX_VALUE_DEPTH)
        return ct_fail(c, off, ZS_ERANGE, "value nesting deeper than %d", CT_MAX_VALUE_DEPTH);
    int r = 0;
    switch (v.t) {
    case CT_UNDEF: ct_sb_puts(b, "Undefined"); break;
    case CT_NONE: ct_sb_puts(b, "None"); break;
    case CT_BOOL: case CT_INT: case CT_FLOAT: put_num(b, v); break;
    case CT_STR: return repr_str(c, v.u.s, b, off);
    case CT_LIST: {
        ct_list *l = v.u.l;
        if (l->kind == CT_LK_GEN || l->kind == CT_LK_VIEW)
            return ct_fail(c, off, ZS_EUNSUPPORTED, "cannot render a %s object", ct_type_name(v));
        int tup = l->kind == CT_LK_TUPLE;
        ct_sb_putc(b, tup ? '(' : '[');
        for (size_t i = 0; i < l->n && r == 0; i++) {
            if (i) ct_sb_put(b, ", ", 2);
            r = ct_repr(c, l->v[i], b, off, depth + 1);
        }
        if (tup && l->n == 1) ct_sb_putc(b, ',');
        ct_sb_putc(b, tup ? ')' : ']');
        break;
    }
    case CT_NS:
        ct_sb_puts(b, "<Namespace ");
        /* fall through */
    case CT_DICT: {
        ct_dict *d = v.u.d;
        ct_sb_putc(b, '{');
        for (size_t i = 0; i < d->n && r == 0; i++) {
            if (i) ct_sb_put(b, ", ", 2);
            r = ct_repr(c, d->k[i], b, off, depth + 1);
            if (r == 0) {
                ct_sb_put(b, ": ", 2);
                r = ct_repr(c, d->v[i], b, off, depth + 1);
            }
        }
        ct_sb_putc(b, '}');
        if (v.t == CT_NS) ct_sb_putc(b, '>');
        break;
    }
    default:
        return ct_fail(c, off, ZS_EUNSUPPORTED, "cannot render a %s object", ct_type_name(v));
    }
    if (r) return r;
    return b->over ? ct_fail_sb(c, b, off) : 0;
}

int ct_to_str(ct_ctx *c, ct_val v, ct_sb *b, size_t off) {
    if (v.t == CT_UNDEF) return 0;
    if (v.t == CT_STR) {
        if (ct_sb_put(b, v.u.s->s, v.u.s->len)) return ct_fail_sb(c, b, off);
        return 0;
    }
    return ct_repr(c, v, b, off, 0);
}

int ct_strval(ct_ctx *c, ct_val v, size_t off, ct_val *out) {
    if (v.t == CT_STR) { *out = v; return 0; }
    ct_sb b = {.max = c->lim.max_output_bytes};
    int r = ct_to_str(c, v, &b, off);
    if (r == 0) r = ct_mkstr(c, off, b.p ? b.p : "", b.n, out);
    ct_sb_free(&b);
    return r;
}

/* ---- tojson (Python json.dumps) ---------------------------------------------------------------- */
static void json_str(ct_sb *b, const char *s, size_t n, int ensure_ascii) {
    ct_sb_putc(b, '"');
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = ct_utf8_decode(s + i, n - i, &cp);
        char tmp[16];
        switch (cp) {
        case '"': ct_sb_put(b, "\\\"", 2); break;
        case '\\': ct_sb_put(b, "\\\\", 2); break;
        case '\n': ct_sb_put(b, "\\n", 2); break;
        case '\r': ct_sb_put(b, "\\r", 2); break;
        case '\t': ct_sb_put(b, "\\t", 2); break;
        case '\b': ct_sb_put(b, "\\b", 2); break;
        case '\f': ct_sb_put(b, "\\f", 2); break;
        default:
            if (cp < 0x20 || (ensure_ascii && cp >= 0x7F)) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", (unsigned)(0xD800 | (v >> 10)),
                             (unsigned)(0xDC00 | (v & 0x3FF)));
                } else {
                    snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
                }
                ct_sb_puts(b, tmp);
            } else {
                ct_sb_put(b, s + i, k);
            }
        }
        i += k;
    }
    ct_sb_putc(b, '"');
}

static void json_nl(ct_sb *b, const ct_json_opts *o, int level) {
    ct_sb_putc(b, '\n');
    for (int i = 0; i < level; i++) ct_sb_puts(b, o->indent);
}

typedef struct { ct_val k, v; } kv_pair;
static int kv_cmp(const void *x, const void *y) {
    const ct_str *a = ((const kv_pair *)x)->k.u.s, *b2 = ((const kv_pair *)y)->k.u.s;
    size_t m = a->len < b2->len ? a->len : b2->len;
    int r = memcmp(a->s, b2->s, m);
    if (r) return r;
    return a->len < b2->len ? -1 : a->len > b2->len;
}

static int json_at(ct_ctx *c, ct_val v, const ct_json_opts *o, ct_sb *b, size_t off, int depth,
                   int level) {
    if (depth > CT_MAX_VALUE_DEPTH)
        return ct_fail(c, off, ZS_ERANGE, "value nesting deeper than %d", CT_MAX_VALUE_DEPTH);
    char tmp[64];
    switch (v.t) {
    case CT_NONE: ct_sb_puts(b, "null"); break;
    case CT_BOOL: ct_sb_puts(b, v.u.b ? "true" : "false"); break;
    case CT_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i); ct_sb_puts(b, tmp); break;
    case CT_FLOAT:
        if (v.u.f != v.u.f) ct_sb_puts(b, "NaN");
        else if (isinf(v.u.f)) ct_sb_puts(b, v.u.f < 0 ? "-Infinity" : "Infinity");
        else { ct_format_float(v.u.f, tmp, sizeof tmp); ct_sb_puts(b, tmp); }
        break;
    case CT_STR: json_str(b, v.u.s->s, v.u.s->len, o->ensure_ascii); break;
    case CT_LIST: {
        ct_list *l = v.u.l;
        if (l->kind == CT_LK_GEN || l->kind == CT_LK_VIEW)
            return ct_fail(c, off, ZS_EINVAL, "Object of type %s is not JSON serializable",
                           ct_type_name(v));
        if (l->n == 0) { ct_sb_puts(b, "[]"); break; }
        ct_sb_putc(b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) ct_sb_puts(b, o->item_sep);
            if (o->indent) json_nl(b, o, level + 1);
            int r = json_at(c, l->v[i], o, b, off, depth + 1, level + 1);
            if (r) return r;
        }
        if (o->indent) json_nl(b, o, level);
        ct_sb_putc(b, ']');
        break;
    }
    case CT_DICT: {
        ct_dict *d = v.u.d;
        if (d->n == 0) { ct_sb_puts(b, "{}"); break; }
        kv_pair *kv = ct_alloc(&c->arena, d->n * sizeof *kv);
        if (kv == NULL) return ct_fail_mem(c, off);
        for (size_t i = 0; i < d->n; i++) {
            ct_val k = d->k[i];
            if (k.t != CT_STR) {
                /* json.dumps converts int/float/bool/None keys to strings */
                if (k.t == CT_NONE) snprintf(tmp, sizeof tmp, "null");
                else if (k.t == CT_BOOL) snprintf(tmp, sizeof tmp, "%s", k.u.b ? "true" : "false");
                else if (k.t == CT_INT) snprintf(tmp, sizeof tmp, "%lld", (long long)k.u.i);
                else if (k.t == CT_FLOAT && isfinite(k.u.f)) ct_format_float(k.u.f, tmp, sizeof tmp);
                else return ct_fail(c, off, ZS_EINVAL, "keys must be str, int, float, bool or None, not %s",
                                    ct_type_name(k));
                int r = ct_mkstr(c, off, tmp, strlen(tmp), &k);
                if (r) return r;
            }
            kv[i].k = k;
            kv[i].v = d->v[i];
        }
        if (o->sort_keys) qsort(kv, d->n, sizeof *kv, kv_cmp);
        ct_sb_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) ct_sb_puts(b, o->item_sep);
            if (o->indent) json_nl(b, o, level + 1);
            json_str(b, kv[i].k.u.s->s, kv[i].k.u.s->len, o->ensure_ascii);
            ct_sb_puts(b, o->key_sep);
            int r = json_at(c, kv[i].v, o, b, off, depth + 1, level + 1);
            if (r) return r;
        }
        if (o->indent) json_nl(b, o, level);
        ct_sb_putc(b, '}');
        break;
    }
    default:
        return ct_fail(c, off, ZS_EINVAL, "Object of type %s is not JSON serializable",
                       ct_type_name(v));
    }
    return b->over ? ct_fail_sb(c, b, off) : 0;
}

int ct_tojson(ct_ctx *c, ct_val v, const ct_json_opts *o, ct_sb *b, size_t off, int depth) {
    return json_at(c, v, o, b, off, depth, 0);
}

/* ---- JSON input -> values ------------------------------------------------------------------------- */
int ct_from_json(ct_ctx *c, const json_t *j, ct_val *out, int depth) {
    if (depth > CT_MAX_VALUE_DEPTH)
        return ct_fail(c, 0, ZS_ERANGE, "input JSON nested deeper than %d", CT_MAX_VALUE_DEPTH);
    switch (json_typeof(j)) {
    case JSON_NULL: *out = ct_none(); return 0;
    case JSON_TRUE: *out = ct_bool(1); return 0;
    case JSON_FALSE: *out = ct_bool(0); return 0;
    case JSON_INTEGER: *out = ct_int((int64_t)json_integer_value(j)); return 0;
    case JSON_REAL: *out = ct_float(json_real_value(j)); return 0;
    case JSON_STRING:
        if (!ct_utf8_valid(json_string_value(j), json_string_length(j)))
            return ct_fail(c, 0, ZS_EINVAL, "input string is not valid UTF-8");
        return ct_mkstr(c, 0, json_string_value(j), json_string_length(j), out);
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        ct_list *l = ct_list_new(&c->arena, n, CT_LK_LIST);
        if (l == NULL) return ct_fail_mem(c, 0);
        for (size_t i = 0; i < n; i++) {
            int r = ct_from_json(c, json_array_get(j, i), &l->v[i], depth + 1);
            if (r) return r;
        }
        l->n = n;
        out->t = CT_LIST;
        out->u.l = l;
        return 0;
    }
    case JSON_OBJECT: {
        ct_dict *d = ct_dict_new(&c->arena, json_object_size(j));
        if (d == NULL) return ct_fail_mem(c, 0);
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) {
            ct_val k, v;
            if (!ct_utf8_valid(key, strlen(key)))
                return ct_fail(c, 0, ZS_EINVAL, "input object key is not valid UTF-8");
            int r = ct_mkstr(c, 0, key, strlen(key), &k);
            if (r == 0) r = ct_from_json(c, val, &v, depth + 1);
            if (r) return r;
            /* keys of a JSON object are unique: append without a lookup */
            d->k[d->n] = k;
            d->v[d->n] = v;
            d->n++;
        }
        out->t = CT_DICT;
        out->u.d = d;
        return 0;
    }
    default:
        return ct_fail(c, 0, ZS_EINVAL, "unexpected JSON value type");
    }
}
