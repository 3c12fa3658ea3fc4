/* Chat-template builtins: the jinja2 filters and tests the supported templates use, the
 * globals transformers and jinja2 provide (raise_exception, strftime_now, namespace, range,
 * dict), and the Python str/dict methods templates call (startswith, split, strip, get,
 * items, ...). Anything else that Python would accept is refused with ZS_EUNSUPPORTED. */
#include "engine/chat_template_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

enum {
    F_TRIM = 1, F_LENGTH, F_TOJSON, F_UPPER, F_LOWER, F_CAPITALIZE, F_DEFAULT, F_JOIN, F_FIRST,
    F_LAST, F_STRING, F_LIST, F_ITEMS, F_SELECTATTR, F_REJECTATTR, F_SELECT, F_REJECT, F_MAP,
    F_REVERSE, F_REPLACE, F_SAFE,
};
static const struct { const char *name; int id; } FILTERS[] = {
    {"trim", F_TRIM}, {"length", F_LENGTH}, {"count", F_LENGTH}, {"tojson", F_TOJSON},
    {"upper", F_UPPER}, {"lower", F_LOWER}, {"capitalize", F_CAPITALIZE}, {"default", F_DEFAULT},
    {"d", F_DEFAULT}, {"join", F_JOIN}, {"first", F_FIRST}, {"last", F_LAST},
    {"string", F_STRING}, {"list", F_LIST}, {"items", F_ITEMS}, {"selectattr", F_SELECTATTR},
    {"rejectattr", F_REJECTATTR}, {"select", F_SELECT}, {"reject", F_REJECT}, {"map", F_MAP},
    {"reverse", F_REVERSE}, {"replace", F_REPLACE}, {"safe", F_SAFE},
};

enum {
    T_DEFINED = 1, T_UNDEFINED, T_NONE, T_STRING, T_MAPPING, T_ITERABLE, T_SEQUENCE, T_NUMBER,
    T_INTEGER, T_FLOAT, T_BOOLEAN, T_TRUE, T_FALSE, T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE, T_IN,
    T_ODD, T_EVEN, T_DIVISIBLEBY, T_CALLABLE, T_SAMEAS, T_LOWER, T_UPPER,
};
static const struct { const char *name; int id; } TESTS[] = {
    {"defined", T_DEFINED}, {"undefined", T_UNDEFINED}, {"none", T_NONE}, {"string", T_STRING},
    {"mapping", T_MAPPING}, {"iterable", T_ITERABLE}, {"sequence", T_SEQUENCE},
    {"number", T_NUMBER}, {"integer", T_INTEGER}, {"float", T_FLOAT}, {"boolean", T_BOOLEAN},
    {"true", T_TRUE}, {"false", T_FALSE}, {"eq", T_EQ}, {"equalto", T_EQ}, {"==", T_EQ},
    {"ne", T_NE}, {"!=", T_NE}, {"lt", T_LT}, {"lessthan", T_LT}, {"<", T_LT}, {"le", T_LE},
    {"<=", T_LE}, {"gt", T_GT}, {"greaterthan", T_GT}, {">", T_GT}, {"ge", T_GE}, {">=", T_GE},
    {"in", T_IN}, {"odd", T_ODD}, {"even", T_EVEN}, {"divisibleby", T_DIVISIBLEBY},
    {"callable", T_CALLABLE}, {"sameas", T_SAMEAS}, {"lower", T_LOWER}, {"upper", T_UPPER},
};

int ct_filter_id(const char *name) {
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (!strcmp(FILTERS[i].name, name)) return FILTERS[i].id;
    return 0;
}

int ct_test_id(const char *name) {
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++)
        if (!strcmp(TESTS[i].name, name)) return TESTS[i].id;
    return 0;
}

/* ---- argument binding -------------------------------------------------------------------- */
typedef struct args_t {
    ct_val v[8];
    int set[8];
} args_t;

static int bind(ct_ctx *c, size_t off, const char *fname, const char *const *params, size_t np,
                ct_val *args, size_t nargs, const char **kwn, ct_val *kwv, size_t nkw, args_t *a) {
    memset(a, 0, sizeof *a);
    if (nargs > np)
        return ct_fail(c, off, ZS_EINVAL, "%s() takes at most %zu arguments (%zu given)", fname, np, nargs);
    for (size_t i = 0; i < nargs; i++) { a->v[i] = args[i]; a->set[i] = 1; }
    for (size_t k = 0; k < nkw; k++) {
        size_t i;
        for (i = 0; i < np; i++)
            if (!strcmp(params[i], kwn[k])) break;
        if (i == np)
            return ct_fail(c, off, ZS_EINVAL, "%s() got an unexpected keyword argument '%s'", fname, kwn[k]);
        if (a->set[i])
            return ct_fail(c, off, ZS_EINVAL, "%s() got multiple values for argument '%s'", fname, kwn[k]);
        a->v[i] = kwv[k];
        a->set[i] = 1;
    }
    return 0;
}

static int need_str(ct_ctx *c, size_t off, ct_val v, const char *what) {
    if (v.t == CT_STR) return 0;
    if (v.t == CT_UNDEF) return ct_fail(c, off, ZS_EINVAL, "%s: '%s' is undefined", what, v.u.uname ? v.u.uname : "value");
    return ct_fail(c, off, ZS_EINVAL, "%s: expected a string, got '%s'", what, ct_type_name(v));
}

static int mk_list(ct_ctx *c, size_t off, size_t cap, int kind, ct_list **l) {
    *l = ct_list_new(&c->arena, cap, kind);
    return *l ? 0 : ct_fail_mem(c, off);
}
static ct_val list_val(ct_list *l) { ct_val v = {.t = CT_LIST}; v.u.l = l; return v; }
static int push(ct_ctx *c, size_t off, ct_list *l, ct_val v) {
    return ct_list_push(&c->arena, l, v) ? ct_fail_mem(c, off) : 0;
}

/* ---- string helpers ------------------------------------------------------------------------ */
static int in_chars(uint32_t cp, const ct_str *chars) {
    if (chars == NULL) return ct_py_space(cp);
    for (size_t i = 0; i < chars->len;) {
        uint32_t x;
        i += ct_utf8_decode(chars->s + i, chars->len - i, &x);
        if (x == cp) return 1;
    }
    return 0;
}

static int do_strip(ct_ctx *c, size_t off, const ct_str *s, const ct_str *chars, int left, int right, ct_val *out) {
    size_t b = 0, e = s->len;
    if (left) {
        while (b < e) {
            uint32_t cp;
            size_t k = ct_utf8_decode(s->s + b, e - b, &cp);
            if (!in_chars(cp, chars)) break;
            b += k;
        }
    }
    if (right) {
        while (e > b) {
            size_t st = e - 1;
            while (st > b && ((unsigned char)s->s[st] & 0xC0) == 0x80) st--;
            uint32_t cp;
            ct_utf8_decode(s->s + st, e - st, &cp);
            if (!in_chars(cp, chars)) break;
            e = st;
        }
    }
    return ct_mkstr(c, off, s->s + b, e - b, out);
}

static int ascii_only(ct_ctx *c, size_t off, const ct_str *s, const char *what) {
    for (size_t i = 0; i < s->len; i++)
        if ((unsigned char)s->s[i] >= 0x80)
            return ct_fail(c, off, ZS_EUNSUPPORTED, "%s of non-ASCII text is not supported", what);
    return 0;
}

enum { CASE_UPPER, CASE_LOWER, CASE_CAPITALIZE, CASE_TITLE };
static int do_case(ct_ctx *c, size_t off, const ct_str *s, int mode, ct_val *out) {
    int r = ascii_only(c, off, s, "changing the case");
    if (r) return r;
    if ((r = ct_mkstr(c, off, s->s, s->len, out))) return r;
    char *p = out->u.s->s;
    int prev_cased = 0;
    for (size_t i = 0; i < s->len; i++) {
        char ch = p[i];
        int up;
        if (mode == CASE_UPPER) up = 1;
        else if (mode == CASE_LOWER) up = 0;
        else if (mode == CASE_CAPITALIZE) up = i == 0;
        else up = !prev_cased;
        if (up && ch >= 'a' && ch <= 'z') p[i] = (char)(ch - 32);
        if (!up && ch >= 'A' && ch <= 'Z') p[i] = (char)(ch + 32);
        prev_cased = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
    }
    return 0;
}

static int do_replace(ct_ctx *c, size_t off, const ct_str *s, const ct_str *old, const ct_str *nw,
                      int64_t count, ct_val *out) {
    ct_sb b = {.max = c->lim.max_output_bytes};
    size_t i = 0;
    int64_t done = 0;
    if (old->len == 0) {
        /* Python inserts `new` before every character and at the end */
        for (; i <= s->len; ) {
            if (count >= 0 && done >= count) { ct_sb_put(&b, s->s + i, s->len - i); break; }
            ct_sb_put(&b, nw->s, nw->len);
            done++;
            if (i == s->len) break;
            uint32_t cp;
            size_t k = ct_utf8_decode(s->s + i, s->len - i, &cp);
            ct_sb_put(&b, s->s + i, k);
            i += k;
        }
    } else {
        while (i < s->len) {
            const char *f = (count >= 0 && done >= count) ? NULL
                          : memmem(s->s + i, s->len - i, old->s, old->len);
            if (f == NULL) { ct_sb_put(&b, s->s + i, s->len - i); break; }
            ct_sb_put(&b, s->s + i, (size_t)(f - (s->s + i)));
            ct_sb_put(&b, nw->s, nw->len);
            i = (size_t)(f - s->s) + old->len;
            done++;
        }
    }
    int r = b.over ? ct_fail_sb(c, &b, off) : ct_mkstr(c, off, b.p ? b.p : "", b.n, out);
    ct_sb_free(&b);
    return r;
}

static int do_split(ct_ctx *c, size_t off, const ct_str *s, const ct_str *sep, int64_t maxsplit,
                    int from_right, ct_val *out) {
    ct_list *l;
    int r = mk_list(c, off, 0, CT_LK_LIST, &l);
    if (r) return r;
    ct_val part;
    if (sep && sep->len == 0) return ct_fail(c, off, ZS_EINVAL, "empty separator");
    if (!from_right) {
        size_t i = 0;
        int64_t splits = 0;
        if (sep == NULL) {
            for (;;) {
                while (i < s->len) {
                    uint32_t cp;
                    size_t k = ct_utf8_decode(s->s + i, s->len - i, &cp);
                    if (!ct_py_space(cp)) break;
                    i += k;
                }
                if (i >= s->len) break;
                size_t j = i;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    j = s->len;
                } else {
                    while (j < s->len) {
                        uint32_t cp;
                        size_t k = ct_utf8_decode(s->s + j, s->len - j, &cp);
                        if (ct_py_space(cp)) break;
                        j += k;
                    }
                }
                if ((r = ct_mkstr(c, off, s->s + i, j - i, &part)) || (r = push(c, off, l, part))) return r;
                splits++;
                i = j;
            }
        } else {
            for (;;) {
                const char *f = (maxsplit >= 0 && splits >= maxsplit) ? NULL
                              : memmem(s->s + i, s->len - i, sep->s, sep->len);
                size_t j = f ? (size_t)(f - s->s) : s->len;
                if ((r = ct_mkstr(c, off, s->s + i, j - i, &part)) || (r = push(c, off, l, part))) return r;
                if (!f) break;
                i = j + sep->len;
                splits++;
            }
        }
    } else {
        /* collect from the right, then reverse */
        size_t e = s->len;
        int64_t splits = 0;
        if (sep == NULL) {
            for (;;) {
                while (e > 0) {
                    size_t st = e - 1;
                    while (st > 0 && ((unsigned char)s->s[st] & 0xC0) == 0x80) st--;
                    uint32_t cp;
                    ct_utf8_decode(s->s + st, e - st, &cp);
                    if (!ct_py_space(cp)) break;
                    e = st;
                }
                if (e == 0) break;
                size_t b = e;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    b = 0;
                } else {
                    while (b > 0) {
                        size_t st = b - 1;
                        while (st > 0 && ((unsigned char)s->s[st] & 0xC0) == 0x80) st--;
                        uint32_t cp;
                        ct_utf8_decode(s->s + st, b - st, &cp);
                        if (ct_py_space(cp)) break;
                        b = st;
                    }
                }
                if ((r = ct_mkstr(c, off, s->s + b, e - b, &part)) || (r = push(c, off, l, part))) return r;
                splits++;
                e = b;
            }
        } else {
            for (;;) {
                size_t found = SIZE_MAX;
                if (!(maxsplit >= 0 && splits >= maxsplit) && e >= sep->len) {
                    for (size_t k = e - sep->len + 1; k > 0; k--)
                        if (memcmp(s->s + k - 1, sep->s, sep->len) == 0) { found = k - 1; break; }
                }
                size_t b = found == SIZE_MAX ? 0 : found + sep->len;
                if ((r = ct_mkstr(c, off, s->s + b, e - b, &part)) || (r = push(c, off, l, part))) return r;
                if (found == SIZE_MAX) break;
                e = found;
                splits++;
            }
        }
        for (size_t i = 0; i < l->n / 2; i++) {
            ct_val t = l->v[i];
            l->v[i] = l->v[l->n - 1 - i];
            l->v[l->n - 1 - i] = t;
        }
    }
    *out = list_val(l);
    return 0;
}

static int affix_match(const ct_str *s, const ct_str *a, int suffix) {
    if (a->len > s->len) return 0;
    return memcmp(suffix ? s->s + s->len - a->len : s->s, a->s, a->len) == 0;
}

/* ---- globals ------------------------------------------------------------------------------- */
static ct_func G_RAISE = {CT_FN_RAISE, "raise_exception", {0}};
static ct_func G_STRFTIME = {CT_FN_STRFTIME, "strftime_now", {0}};
static ct_func G_NAMESPACE = {CT_FN_NAMESPACE, "namespace", {0}};
static ct_func G_RANGE = {CT_FN_RANGE, "range", {0}};
static ct_func G_DICT = {CT_FN_DICT, "dict", {0}};
static ct_func G_LIPSUM = {CT_FN_UNSUPPORTED, "lipsum", {0}};
static ct_func G_CYCLER = {CT_FN_UNSUPPORTED, "cycler", {0}};
static ct_func G_JOINER = {CT_FN_UNSUPPORTED, "joiner", {0}};

int ct_global(const char *name, ct_val *out, ct_arena *a) {
    (void)a;
    ct_func *f = NULL;
    if (!strcmp(name, "raise_exception")) f = &G_RAISE;
    else if (!strcmp(name, "strftime_now")) f = &G_STRFTIME;
    else if (!strcmp(name, "namespace")) f = &G_NAMESPACE;
    else if (!strcmp(name, "range")) f = &G_RANGE;
    else if (!strcmp(name, "dict")) f = &G_DICT;
    else if (!strcmp(name, "lipsum")) f = &G_LIPSUM;
    else if (!strcmp(name, "cycler")) f = &G_CYCLER;
    else if (!strcmp(name, "joiner")) f = &G_JOINER;
    if (f == NULL) return 0;
    out->t = CT_FUNC;
    out->u.fn = f;
    return 1;
}

/* ---- methods ---------------------------------------------------------------------------------- */
static const struct { const char *name; int id; } STR_METHODS[] = {
    {"startswith", CT_FN_STR_STARTSWITH}, {"endswith", CT_FN_STR_ENDSWITH},
    {"split", CT_FN_STR_SPLIT}, {"rsplit", CT_FN_STR_RSPLIT}, {"strip", CT_FN_STR_STRIP},
    {"lstrip", CT_FN_STR_LSTRIP}, {"rstrip", CT_FN_STR_RSTRIP}, {"upper", CT_FN_STR_UPPER},
    {"lower", CT_FN_STR_LOWER}, {"replace", CT_FN_STR_REPLACE}, {"find", CT_FN_STR_FIND},
    {"count", CT_FN_STR_COUNT}, {"join", CT_FN_STR_JOIN}, {"title", CT_FN_STR_TITLE},
    {"capitalize", CT_FN_STR_CAPITALIZE}, {"removeprefix", CT_FN_STR_REMOVEPREFIX},
    {"removesuffix", CT_FN_STR_REMOVESUFFIX},
    /* the rest of Python's str attributes: exist, not implemented */
    {"casefold", CT_FN_UNSUPPORTED}, {"center", CT_FN_UNSUPPORTED}, {"encode", CT_FN_UNSUPPORTED},
    {"expandtabs", CT_FN_UNSUPPORTED}, {"format", CT_FN_UNSUPPORTED}, {"format_map", CT_FN_UNSUPPORTED},
    {"index", CT_FN_UNSUPPORTED}, {"isalnum", CT_FN_UNSUPPORTED}, {"isalpha", CT_FN_UNSUPPORTED},
    {"isascii", CT_FN_UNSUPPORTED}, {"isdecimal", CT_FN_UNSUPPORTED}, {"isdigit", CT_FN_UNSUPPORTED},
    {"isidentifier", CT_FN_UNSUPPORTED}, {"islower", CT_FN_UNSUPPORTED}, {"isnumeric", CT_FN_UNSUPPORTED},
    {"isprintable", CT_FN_UNSUPPORTED}, {"isspace", CT_FN_UNSUPPORTED}, {"istitle", CT_FN_UNSUPPORTED},
    {"isupper", CT_FN_UNSUPPORTED}, {"ljust", CT_FN_UNSUPPORTED}, {"maketrans", CT_FN_UNSUPPORTED},
    {"partition", CT_FN_UNSUPPORTED}, {"rfind", CT_FN_UNSUPPORTED}, {"rindex", CT_FN_UNSUPPORTED},
    {"rjust", CT_FN_UNSUPPORTED}, {"rpartition", CT_FN_UNSUPPORTED}, {"splitlines", CT_FN_UNSUPPORTED},
    {"swapcase", CT_FN_UNSUPPORTED}, {"translate", CT_FN_UNSUPPORTED}, {"zfill", CT_FN_UNSUPPORTED},
};
static const struct { const char *name; int id; } DICT_METHODS[] = {
    {"get", CT_FN_DICT_GET}, {"items", CT_FN_DICT_ITEMS}, {"keys", CT_FN_DICT_KEYS},
    {"values", CT_FN_DICT_VALUES}, {"clear", CT_FN_UNSUPPORTED}, {"copy", CT_FN_UNSUPPORTED},
    {"fromkeys", CT_FN_UNSUPPORTED}, {"pop", CT_FN_UNSUPPORTED}, {"popitem", CT_FN_UNSUPPORTED},
    {"setdefault", CT_FN_UNSUPPORTED}, {"update", CT_FN_UNSUPPORTED},
};
static const char *const LIST_METHODS[] = {"append", "clear", "copy", "count", "extend", "index",
                                           "insert", "pop", "remove", "reverse", "sort", NULL};

int ct_method(ct_arena *a, ct_val self, const char *name, ct_val *out) {
    int id = 0;
    if (self.t == CT_STR) {
        for (size_t i = 0; i < sizeof STR_METHODS / sizeof STR_METHODS[0]; i++)
            if (!strcmp(STR_METHODS[i].name, name)) { id = STR_METHODS[i].id; break; }
    } else if (self.t == CT_DICT) {
        for (size_t i = 0; i < sizeof DICT_METHODS / sizeof DICT_METHODS[0]; i++)
            if (!strcmp(DICT_METHODS[i].name, name)) { id = DICT_METHODS[i].id; break; }
    } else if (self.t == CT_LIST && (self.u.l->kind == CT_LK_LIST || self.u.l->kind == CT_LK_TUPLE)) {
        for (int i = 0; LIST_METHODS[i]; i++)
            if (!strcmp(LIST_METHODS[i], name) &&
                (self.u.l->kind == CT_LK_LIST || !strcmp(name, "count") || !strcmp(name, "index")))
                { id = CT_FN_UNSUPPORTED; break; }
    }
    if (id == 0) return 0;
    ct_func *f = ct_alloc(a, sizeof *f);
    if (f == NULL) return -1;
    f->id = id;
    f->name = name;
    f->self = self;
    out->t = CT_FUNC;
    out->u.fn = f;
    return 1;
}

/* ---- tests ------------------------------------------------------------------------------------ */
static int apply_test(ct_ctx *c, size_t off, int id, ct_val v, ct_val *args, size_t nargs, int *res);

static int test_arg(ct_ctx *c, size_t off, size_t nargs, size_t want) {
    if (nargs != want)
        return ct_fail(c, off, ZS_EINVAL, "test takes %zu argument(s), %zu given", want, nargs);
    return 0;
}

static int py_mod_is(ct_ctx *c, size_t off, ct_val v, ct_val d, int64_t want, int *res) {
    ct_val m;
    int r = ct_binop(c, OP_MOD, v, d, off, &m);
    if (r) return r;
    *res = ct_eq(m, ct_int(want), 0);
    return 0;
}

static int apply_test(ct_ctx *c, size_t off, int id, ct_val v, ct_val *args, size_t nargs, int *res) {
    int r;
    int cmp_op = 0;
    if (id <= T_FALSE || id == T_CALLABLE) {
        if ((r = test_arg(c, off, nargs, 0))) return r;
    }
    switch (id) {
    case T_DEFINED: *res = v.t != CT_UNDEF; return 0;
    case T_UNDEFINED: *res = v.t == CT_UNDEF; return 0;
    case T_NONE: *res = v.t == CT_NONE; return 0;
    case T_STRING: *res = v.t == CT_STR; return 0;
    case T_MAPPING: *res = v.t == CT_DICT; return 0;
    case T_NUMBER: *res = ct_is_num(v); return 0;
    case T_INTEGER: *res = v.t == CT_INT; return 0;
    case T_FLOAT: *res = v.t == CT_FLOAT; return 0;
    case T_BOOLEAN: *res = v.t == CT_BOOL; return 0;
    case T_TRUE: *res = v.t == CT_BOOL && v.u.b; return 0;
    case T_FALSE: *res = v.t == CT_BOOL && !v.u.b; return 0;
    case T_CALLABLE: *res = v.t == CT_FUNC; return 0;
    case T_ITERABLE:
        if (v.t == CT_NS || v.t == CT_FUNC)
            return ct_fail(c, off, ZS_EUNSUPPORTED, "'is iterable' on a %s is not supported", ct_type_name(v));
        *res = v.t == CT_STR || v.t == CT_LIST || v.t == CT_DICT || v.t == CT_UNDEF || v.t == CT_LOOP;
        return 0;
    case T_SEQUENCE:
        if (v.t == CT_NS || v.t == CT_FUNC || v.t == CT_LOOP)
            return ct_fail(c, off, ZS_EUNSUPPORTED, "'is sequence' on a %s is not supported", ct_type_name(v));
        *res = v.t == CT_STR || v.t == CT_DICT || v.t == CT_UNDEF ||
               (v.t == CT_LIST && (v.u.l->kind == CT_LK_LIST || v.u.l->kind == CT_LK_TUPLE ||
                                   (v.u.l->vname && !strcmp(v.u.l->vname, "range"))));
        return 0;
    case T_EQ: cmp_op = OP_EQ; break;
    case T_NE: cmp_op = OP_NE; break;
    case T_LT: cmp_op = OP_LT; break;
    case T_LE: cmp_op = OP_LTEQ; break;
    case T_GT: cmp_op = OP_GT; break;
    case T_GE: cmp_op = OP_GTEQ; break;
    case T_IN: cmp_op = OP_IN; break;
    case T_ODD: case T_EVEN:
        if ((r = test_arg(c, off, nargs, 0))) return r;
        return py_mod_is(c, off, v, ct_int(2), id == T_ODD ? 1 : 0, res);
    case T_DIVISIBLEBY:
        if ((r = test_arg(c, off, nargs, 1))) return r;
        return py_mod_is(c, off, v, args[0], 0, res);
    case T_SAMEAS:
        if ((r = test_arg(c, off, nargs, 1))) return r;
        if (v.t == CT_NONE || v.t == CT_BOOL || v.t == CT_UNDEF || args[0].t == CT_NONE || args[0].t == CT_BOOL) {
            *res = v.t == args[0].t && (v.t != CT_BOOL || v.u.b == args[0].u.b) && v.t != CT_UNDEF;
            return 0;
        }
        if ((v.t == CT_LIST || v.t == CT_DICT || v.t == CT_NS) && v.t == args[0].t) {
            *res = v.t == CT_LIST ? v.u.l == args[0].u.l : v.u.d == args[0].u.d;
            return 0;
        }
        return ct_fail(c, off, ZS_EUNSUPPORTED, "'is sameas' on %s values is not supported", ct_type_name(v));
    case T_LOWER: case T_UPPER: {
        if ((r = test_arg(c, off, nargs, 0))) return r;
        ct_val s;
        if ((r = ct_strval(c, v, off, &s))) return r;
        if ((r = ascii_only(c, off, s.u.s, "'is lower/upper'"))) return r;
        int cased = 0, bad = 0;
        for (size_t i = 0; i < s.u.s->len; i++) {
            char ch = s.u.s->s[i];
            if (ch >= 'a' && ch <= 'z') { cased = 1; if (id == T_UPPER) bad = 1; }
            if (ch >= 'A' && ch <= 'Z') { cased = 1; if (id == T_LOWER) bad = 1; }
        }
        *res = cased && !bad;
        return 0;
    }
    default:
        return ct_fail(c, off, ZS_EUNSUPPORTED, "unsupported test");
    }
    if ((r = test_arg(c, off, nargs, 1))) return r;
    return ct_compare(c, cmp_op, v, args[0], off, res);
}

int ct_apply_test(ct_ctx *c, const ct_node *n, ct_val in, ct_val *args, size_t nargs, int *result) {
    return apply_test(c, n->off, n->fid, in, args, nargs, result);
}

/* test given by name at runtime (select, selectattr, ...) */
static int test_by_name(ct_ctx *c, size_t off, ct_val name, int *id) {
    int r = need_str(c, off, name, "test name");
    if (r) return r;
    *id = ct_test_id(name.u.s->s);
    if (*id == 0) return ct_fail(c, off, ZS_EUNSUPPORTED, "test '%s' is not supported", name.u.s->s);
    return 0;
}

/* ---- filters ------------------------------------------------------------------------------------ */
static int apply_filter(ct_ctx *c, size_t off, int id, ct_val in, ct_val *args, size_t nargs,
                        const char **kwn, ct_val *kwv, size_t nkw, ct_val *out);

/* attribute getter of selectattr/map/join: dotted path, digit parts are indexes */
static int attr_path(ct_ctx *c, size_t off, ct_val item, ct_val path, ct_val *out) {
    int r = need_str(c, off, path, "attribute");
    if (r) return r;
    const char *s = path.u.s->s;
    ct_val cur = item;
    while (1) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        ct_val key;
        int digits = len > 0;
        for (size_t i = 0; i < len; i++) if (s[i] < '0' || s[i] > '9') digits = 0;
        if (digits && len < 18) key = ct_int(strtoll(s, NULL, 10));
        else if ((r = ct_mkstr(c, off, s, len, &key))) return r;
        if ((r = ct_getitem(c, cur, key, off, &cur))) return r;
        if (!dot) break;
        s = dot + 1;
    }
    *out = cur;
    return 0;
}

static int iter_in(ct_ctx *c, size_t off, ct_val v, ct_val **items, size_t *n) {
    if (v.t == CT_NONE || ct_is_num(v) || v.t == CT_FUNC || v.t == CT_NS)
        return ct_fail(c, off, ZS_EINVAL, "'%s' object is not iterable", ct_type_name(v));
    if (v.t == CT_LOOP) return ct_fail(c, off, ZS_EUNSUPPORTED, "iterating a loop object is not supported");
    return ct_iter_items(c, v, off, items, n);
}

static int f_select(ct_ctx *c, size_t off, int id, ct_val in, ct_val *args, size_t nargs, ct_val *out) {
    int attr = id == F_SELECTATTR || id == F_REJECTATTR;
    int reject = id == F_REJECTATTR || id == F_REJECT;
    int r;
    ct_list *l;
    if (!ct_truthy(in)) { /* jinja2's select_or_reject: a falsy input yields nothing, unchecked */
        if ((r = mk_list(c, off, 0, CT_LK_GEN, &l))) return r;
        *out = list_val(l);
        return 0;
    }
    if (attr && nargs < 1) return ct_fail(c, off, ZS_EINVAL, "Missing parameter for attribute name");
    ct_val *rest = args + attr;
    size_t nrest = nargs - (size_t)attr;
    int tid = 0;
    if (nrest >= 1 && (r = test_by_name(c, off, rest[0], &tid))) return r;
    ct_val *items = NULL;
    size_t n = 0;
    if ((r = iter_in(c, off, in, &items, &n))) return r;
    if ((r = mk_list(c, off, n, CT_LK_GEN, &l))) return r;
    for (size_t i = 0; i < n; i++) {
        ct_val v = items[i];
        if (attr && (r = attr_path(c, off, items[i], args[0], &v))) return r;
        int keep;
        if (tid) {
            if ((r = apply_test(c, off, tid, v, rest + 1, nrest - 1, &keep))) return r;
        } else {
            keep = ct_truthy(v);
        }
        if (keep != reject) l->v[l->n++] = items[i];
    }
    *out = list_val(l);
    return 0;
}

static int f_map(ct_ctx *c, size_t off, ct_val in, ct_val *args, size_t nargs, const char **kwn,
                 ct_val *kwv, size_t nkw, ct_val *out) {
    ct_val attr = ct_undef(NULL), dflt = ct_undef(NULL);
    int has_attr = 0, has_default = 0, r;
    for (size_t k = 0; k < nkw; k++)
        if (!strcmp(kwn[k], "attribute")) { attr = kwv[k]; has_attr = 1; }
    if (has_attr) {
        for (size_t k = 0; k < nkw; k++) {
            if (!strcmp(kwn[k], "default")) { dflt = kwv[k]; has_default = 1; }
            else if (strcmp(kwn[k], "attribute") != 0)
                return ct_fail(c, off, ZS_EINVAL, "Unexpected keyword argument '%s'", kwn[k]);
        }
        if (nargs) return ct_fail(c, off, ZS_EINVAL, "map() with attribute= takes no positional arguments");
    }
    if (!has_attr && nargs < 1) return ct_fail(c, off, ZS_EINVAL, "map requires a filter argument");
    int fid = 0;
    if (!has_attr) {
        if ((r = need_str(c, off, args[0], "map filter name"))) return r;
        fid = ct_filter_id(args[0].u.s->s);
        if (fid == 0) return ct_fail(c, off, ZS_EUNSUPPORTED, "filter '%s' is not supported", args[0].u.s->s);
    }
    ct_val *items;
    size_t n;
    if ((r = iter_in(c, off, in, &items, &n))) return r;
    ct_list *l;
    if ((r = mk_list(c, off, n, CT_LK_GEN, &l))) return r;
    for (size_t i = 0; i < n; i++) {
        ct_val v;
        if (has_attr) {
            if ((r = attr_path(c, off, items[i], attr, &v))) return r;
            if (v.t == CT_UNDEF && has_default) v = dflt;
        } else if ((r = apply_filter(c, off, fid, items[i], args + 1, nargs - 1, kwn, kwv, nkw, &v))) {
            return r;
        }
        l->v[l->n++] = v;
    }
    *out = list_val(l);
    return 0;
}

static int f_tojson(ct_ctx *c, size_t off, ct_val in, const args_t *a, ct_val *out) {
    /* transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
    ct_json_opts o = {.item_sep = ", ", .key_sep = ": "};
    char ind[64];
    if (a->set[0]) o.ensure_ascii = ct_truthy(a->v[0]);
    if (a->set[1] && a->v[1].t != CT_NONE) {
        ct_val iv = a->v[1];
        if (iv.t == CT_INT || iv.t == CT_BOOL) {
            int64_t k = iv.t == CT_INT ? iv.u.i : iv.u.b;
            if (k > (int64_t)sizeof ind - 1)
                return ct_fail(c, off, ZS_EUNSUPPORTED, "tojson indent larger than %zu", sizeof ind - 1);
            if (k < 0) k = 0;
            memset(ind, ' ', (size_t)k);
            ind[k] = '\0';
            o.indent = ind;
        } else if (iv.t == CT_STR) {
            o.indent = iv.u.s->s;
        } else {
            return ct_fail(c, off, ZS_EUNSUPPORTED, "tojson indent of type %s", ct_type_name(iv));
        }
        o.item_sep = ",";
    }
    if (a->set[2] && a->v[2].t != CT_NONE) {
        ct_val s = a->v[2];
        if (s.t != CT_LIST || s.u.l->n != 2 || s.u.l->v[0].t != CT_STR || s.u.l->v[1].t != CT_STR ||
            s.u.l->kind == CT_LK_GEN || s.u.l->kind == CT_LK_VIEW)
            return ct_fail(c, off, ZS_EUNSUPPORTED, "tojson separators must be two strings");
        o.item_sep = s.u.l->v[0].u.s->s;
        o.key_sep = s.u.l->v[1].u.s->s;
    }
    if (a->set[3]) o.sort_keys = ct_truthy(a->v[3]);
    ct_sb b = {.max = c->lim.max_output_bytes};
    int r = ct_tojson(c, in, &o, &b, off, 0);
    if (r == 0) r = ct_mkstr(c, off, b.p ? b.p : "", b.n, out);
    ct_sb_free(&b);
    return r;
}

static int apply_filter(ct_ctx *c, size_t off, int id, ct_val in, ct_val *args, size_t nargs,
                        const char **kwn, ct_val *kwv, size_t nkw, ct_val *out) {
    args_t a;
    int r;
    ct_val s;
    ct_val *items;
    size_t n;
    ct_list *l;
#define BIND(name, ...) do { static const char *const P_[] = {__VA_ARGS__}; \
        if ((r = bind(c, off, name, P_, sizeof P_ / sizeof P_[0], args, nargs, kwn, kwv, nkw, &a))) return r; } while (0)
#define BIND0(name) do { if (nargs || nkw) return ct_fail(c, off, ZS_EINVAL, "%s takes no arguments", name); } while (0)
    switch (id) {
    case F_TRIM:
        BIND("trim", "chars");
        if ((r = ct_strval(c, in, off, &s))) return r;
        if (a.set[0] && a.v[0].t != CT_NONE && (r = need_str(c, off, a.v[0], "trim chars"))) return r;
        return do_strip(c, off, s.u.s, (a.set[0] && a.v[0].t == CT_STR) ? a.v[0].u.s : NULL, 1, 1, out);
    case F_LENGTH:
        BIND0("length");
        switch (in.t) {
        case CT_UNDEF: *out = ct_int(0); return 0;
        case CT_STR: *out = ct_int((int64_t)ct_utf8_len(in.u.s->s, in.u.s->len)); return 0;
        case CT_DICT: *out = ct_int((int64_t)in.u.d->n); return 0;
        case CT_LIST:
            if (in.u.l->kind != CT_LK_GEN) { *out = ct_int((int64_t)in.u.l->n); return 0; }
            /* fall through */
        default:
            return ct_fail(c, off, ZS_EINVAL, "object of type '%s' has no len()", ct_type_name(in));
        }
    case F_TOJSON:
        BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
        return f_tojson(c, off, in, &a, out);
    case F_UPPER: case F_LOWER: case F_CAPITALIZE:
        BIND0("upper/lower/capitalize");
        if ((r = ct_strval(c, in, off, &s))) return r;
        return do_case(c, off, s.u.s, id == F_UPPER ? CASE_UPPER : id == F_LOWER ? CASE_LOWER : CASE_CAPITALIZE, out);
    case F_DEFAULT: {
        BIND("default", "default_value", "boolean");
        int use = in.t == CT_UNDEF || (a.set[1] && ct_truthy(a.v[1]) && !ct_truthy(in));
        if (!use) { *out = in; return 0; }
        if (a.set[0]) *out = a.v[0];
        else return ct_mkstr(c, off, "", 0, out);
        return 0;
    }
    case F_JOIN: {
        BIND("join", "d", "attribute");
        if ((r = iter_in(c, off, in, &items, &n))) return r;
        ct_val sep;
        if (a.set[0]) { if ((r = ct_strval(c, a.v[0], off, &sep))) return r; }
        else if ((r = ct_mkstr(c, off, "", 0, &sep))) return r;
        ct_sb b = {.max = c->lim.max_output_bytes};
        for (size_t i = 0; i < n && r == 0; i++) {
            ct_val v = items[i];
            if (i && ct_sb_put(&b, sep.u.s->s, sep.u.s->len)) { r = ct_fail_sb(c, &b, off); break; }
            if (a.set[1] && a.v[1].t != CT_NONE) r = attr_path(c, off, items[i], a.v[1], &v);
            if (r == 0) r = ct_to_str(c, v, &b, off);
        }
        if (r == 0) r = ct_mkstr(c, off, b.p ? b.p : "", b.n, out);
        ct_sb_free(&b);
        return r;
    }
    case F_FIRST:
        BIND0("first");
        if (in.t == CT_LIST && in.u.l->kind == CT_LK_GEN) {
            ct_list *g = in.u.l;
            if (g->pos < g->n) *out = g->v[g->pos++];
            else *out = ct_undef("first");
            return 0;
        }
        if ((r = iter_in(c, off, in, &items, &n))) return r;
        *out = n ? items[0] : ct_undef("first");
        return 0;
    case F_LAST:
        BIND0("last");
        if (in.t == CT_LIST && in.u.l->kind == CT_LK_GEN)
            return ct_fail(c, off, ZS_EINVAL, "'generator' object is not reversible");
        if ((r = iter_in(c, off, in, &items, &n))) return r;
        *out = n ? items[n - 1] : ct_undef("last");
        return 0;
    case F_STRING: case F_SAFE:
        BIND0("string");
        return ct_strval(c, in, off, out);
    case F_LIST:
        BIND0("list");
        if ((r = iter_in(c, off, in, &items, &n))) return r;
        if ((r = mk_list(c, off, n, CT_LK_LIST, &l))) return r;
        if (n) memcpy(l->v, items, n * sizeof *items);
        l->n = n;
        *out = list_val(l);
        return 0;
    case F_ITEMS:
        BIND0("items");
        if (in.t == CT_UNDEF) n = 0;
        else if (in.t == CT_DICT) n = in.u.d->n;
        else return ct_fail(c, off, ZS_EINVAL, "Can only get item pairs from a mapping.");
        if ((r = mk_list(c, off, n, CT_LK_GEN, &l))) return r;
        for (size_t i = 0; i < n; i++) {
            ct_list *pr;
            if ((r = mk_list(c, off, 2, CT_LK_TUPLE, &pr))) return r;
            pr->v[0] = in.u.d->k[i];
            pr->v[1] = in.u.d->v[i];
            pr->n = 2;
            l->v[i] = list_val(pr);
        }
        l->n = n;
        *out = list_val(l);
        return 0;
    case F_SELECTATTR: case F_REJECTATTR: case F_SELECT: case F_REJECT:
        if (nkw) return ct_fail(c, off, ZS_EUNSUPPORTED, "keyword arguments to select filters are not supported");
        return f_select(c, off, id, in, args, nargs, out);
    case F_MAP:
        return f_map(c, off, in, args, nargs, kwn, kwv, nkw, out);
    case F_REVERSE:
        BIND0("reverse");
        if (in.t == CT_STR) {
            size_t len = in.u.s->len;
            char *tmp = malloc(len + 1);
            if (tmp == NULL) return ct_fail(c, off, ZS_ENOMEM, "out of memory");
            size_t o = len;
            for (size_t i = 0; i < len;) {
                uint32_t cp;
                size_t k = ct_utf8_decode(in.u.s->s + i, len - i, &cp);
                o -= k;
                memcpy(tmp + o, in.u.s->s + i, k);
                i += k;
            }
            r = ct_mkstr(c, off, tmp, len, out);
            free(tmp);
            return r;
        }
        {
            int was_gen = in.t == CT_LIST && in.u.l->kind == CT_LK_GEN;
            if ((r = iter_in(c, off, in, &items, &n))) return r;
            if ((r = mk_list(c, off, n, was_gen ? CT_LK_LIST : CT_LK_GEN, &l))) return r;
            for (size_t i = 0; i < n; i++) l->v[i] = items[n - 1 - i];
            l->n = n;
            *out = list_val(l);
            return 0;
        }
    case F_REPLACE: {
        BIND("replace", "old", "new", "count");
        if (!a.set[0] || !a.set[1]) return ct_fail(c, off, ZS_EINVAL, "replace() needs old and new");
        ct_val o2, n2;
        if ((r = ct_strval(c, in, off, &s)) || (r = ct_strval(c, a.v[0], off, &o2)) ||
            (r = ct_strval(c, a.v[1], off, &n2)))
            return r;
        int64_t cnt = -1;
        if (a.set[2] && a.v[2].t != CT_NONE) {
            if (a.v[2].t != CT_INT) return ct_fail(c, off, ZS_EINVAL, "replace count must be an integer");
            cnt = a.v[2].u.i;
        }
        return do_replace(c, off, s.u.s, o2.u.s, n2.u.s, cnt, out);
    }
    default:
        return ct_fail(c, off, ZS_EUNSUPPORTED, "unsupported filter");
    }
#undef BIND
#undef BIND0
}

int ct_apply_filter(ct_ctx *c, const ct_node *n, ct_val in, ct_val *args, size_t nargs,
                    const char **kwn, ct_val *kwv, size_t nkw, ct_val *out) {
    return apply_filter(c, n->off, n->fid, in, args, nargs, kwn, kwv, nkw, out);
}

/* ---- calls -------------------------------------------------------------------------------------- */
static int f_strftime(ct_ctx *c, size_t off, const ct_str *fmt, ct_val *out) {
    struct timeval tv;
    if (gettimeofday(&tv, NULL) != 0) return ct_fail(c, off, ZS_EIO, "gettimeofday failed");
    time_t now = tv.tv_sec;
    struct tm tm;
    tzset();
    if (localtime_r(&now, &tm) == NULL) return ct_fail(c, off, ZS_EIO, "localtime failed");
    /* Python's datetime.strftime handles %f, %z, %Z (naive: empty) itself */
    ct_sb f = {.max = 4096};
    for (size_t i = 0; i < fmt->len; i++) {
        if (fmt->s[i] == '%' && i + 1 < fmt->len) {
            char d = fmt->s[i + 1];
            if (d == 'z' || d == 'Z') { i++; continue; }
            if (d == ':' && i + 2 < fmt->len && fmt->s[i + 2] == 'z') { i += 2; continue; }
            if (d == 'f') {
                char us[16];
                snprintf(us, sizeof us, "%06ld", (long)tv.tv_usec);
                ct_sb_puts(&f, us);
                i++;
                continue;
            }
            ct_sb_put(&f, fmt->s + i, 2);
            i++;
            continue;
        }
        ct_sb_putc(&f, fmt->s[i]);
    }
    ct_sb_putc(&f, ' '); /* so that an empty result is distinguishable */
    if (f.over) { ct_sb_free(&f); return ct_fail(c, off, ZS_ERANGE, "strftime format too long"); }
    char buf[8192];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    size_t k = strftime(buf, sizeof buf, f.p, &tm); /* the format is the template's, by design */
#pragma GCC diagnostic pop
    ct_sb_free(&f);
    if (k == 0) return ct_fail(c, off, ZS_ERANGE, "strftime result too long");
    return ct_mkstr(c, off, buf, k - 1, out);
}

static int f_range(ct_ctx *c, size_t off, ct_val *args, size_t nargs, ct_val *out) {
    int64_t v[3] = {0, 0, 1};
    if (nargs < 1 || nargs > 3) return ct_fail(c, off, ZS_EINVAL, "range expected 1 to 3 arguments");
    for (size_t i = 0; i < nargs; i++) {
        if (args[i].t != CT_INT && args[i].t != CT_BOOL)
            return ct_fail(c, off, ZS_EINVAL, "'%s' object cannot be interpreted as an integer", ct_type_name(args[i]));
        v[nargs == 1 ? 1 : i] = args[i].t == CT_INT ? args[i].u.i : args[i].u.b;
    }
    int64_t start = v[0], stop = v[1], step = v[2];
    if (step == 0) return ct_fail(c, off, ZS_EINVAL, "range() arg 3 must not be zero");
    double cnt_d = 0;
    if (step > 0 && start < stop) cnt_d = ceil(((double)stop - (double)start) / (double)step);
    if (step < 0 && start > stop) cnt_d = ceil(((double)start - (double)stop) / -(double)step);
    if (cnt_d > 100000) /* jinja2's sandbox MAX_RANGE */
        return ct_fail(c, off, ZS_ERANGE, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    size_t cnt = (size_t)cnt_d;
    ct_list *l;
    int r = mk_list(c, off, cnt, CT_LK_VIEW, &l);
    if (r) return r;
    l->vname = "range";
    for (size_t i = 0; i < cnt; i++) l->v[i] = ct_int(start + (int64_t)i * step);
    l->n = cnt;
    *out = list_val(l);
    return 0;
}

static int dict_view(ct_ctx *c, size_t off, ct_dict *d, int which, ct_val *out) {
    ct_list *l;
    int r = mk_list(c, off, d->n, CT_LK_VIEW, &l);
    if (r) return r;
    l->vname = which == 0 ? "dict_items" : which == 1 ? "dict_keys" : "dict_values";
    for (size_t i = 0; i < d->n; i++) {
        if (which == 0) {
            ct_list *pr;
            if ((r = mk_list(c, off, 2, CT_LK_TUPLE, &pr))) return r;
            pr->v[0] = d->k[i];
            pr->v[1] = d->v[i];
            pr->n = 2;
            l->v[i] = list_val(pr);
        } else {
            l->v[i] = which == 1 ? d->k[i] : d->v[i];
        }
    }
    l->n = d->n;
    *out = list_val(l);
    return 0;
}

static int str_method(ct_ctx *c, size_t off, ct_func *f, ct_val *args, size_t nargs, const char **kwn,
                      ct_val *kwv, size_t nkw, ct_val *out) {
    const ct_str *s = f->self.u.s;
    args_t a;
    int r;
    if (nkw && f->id != CT_FN_STR_SPLIT && f->id != CT_FN_STR_RSPLIT)
        return ct_fail(c, off, ZS_EINVAL, "str.%s() takes no keyword arguments", f->name);
#define PBIND(...) do { static const char *const P_[] = {__VA_ARGS__}; \
        if ((r = bind(c, off, f->name, P_, sizeof P_ / sizeof P_[0], args, nargs, kwn, kwv, nkw, &a))) return r; } while (0)
    switch (f->id) {
    case CT_FN_STR_STARTSWITH: case CT_FN_STR_ENDSWITH: {
        PBIND("prefix", "start", "end");
        if (a.set[1] || a.set[2])
            return ct_fail(c, off, ZS_EUNSUPPORTED, "str.%s() with start/end is not supported", f->name);
        if (!a.set[0]) return ct_fail(c, off, ZS_EINVAL, "str.%s() takes at least 1 argument", f->name);
        int suffix = f->id == CT_FN_STR_ENDSWITH, hit = 0;
        ct_val p = a.v[0];
        if (p.t == CT_STR) {
            hit = affix_match(s, p.u.s, suffix);
        } else if (p.t == CT_LIST && p.u.l->kind == CT_LK_TUPLE) {
            for (size_t i = 0; i < p.u.l->n; i++) {
                if ((r = need_str(c, off, p.u.l->v[i], f->name))) return r;
                if (affix_match(s, p.u.l->v[i].u.s, suffix)) hit = 1;
            }
        } else {
            return ct_fail(c, off, ZS_EINVAL, "%s first arg must be str or a tuple of str, not %s", f->name,
                           ct_type_name(p));
        }
        *out = ct_bool(hit);
        return 0;
    }
    case CT_FN_STR_SPLIT: case CT_FN_STR_RSPLIT: {
        PBIND("sep", "maxsplit");
        const ct_str *sep = NULL;
        if (a.set[0] && a.v[0].t != CT_NONE) {
            if ((r = need_str(c, off, a.v[0], f->name))) return r;
            sep = a.v[0].u.s;
        }
        int64_t maxs = -1;
        if (a.set[1]) {
            if (a.v[1].t != CT_INT) return ct_fail(c, off, ZS_EINVAL, "maxsplit must be an integer");
            maxs = a.v[1].u.i;
        }
        return do_split(c, off, s, sep, maxs, f->id == CT_FN_STR_RSPLIT, out);
    }
    case CT_FN_STR_STRIP: case CT_FN_STR_LSTRIP: case CT_FN_STR_RSTRIP: {
        PBIND("chars");
        const ct_str *chars = NULL;
        if (a.set[0] && a.v[0].t != CT_NONE) {
            if ((r = need_str(c, off, a.v[0], f->name))) return r;
            chars = a.v[0].u.s;
        }
        return do_strip(c, off, s, chars, f->id != CT_FN_STR_RSTRIP, f->id != CT_FN_STR_LSTRIP, out);
    }
    case CT_FN_STR_UPPER: case CT_FN_STR_LOWER: case CT_FN_STR_TITLE: case CT_FN_STR_CAPITALIZE:
        if (nargs) return ct_fail(c, off, ZS_EINVAL, "str.%s() takes no arguments", f->name);
        return do_case(c, off, s, f->id == CT_FN_STR_UPPER ? CASE_UPPER : f->id == CT_FN_STR_LOWER ? CASE_LOWER
                                  : f->id == CT_FN_STR_TITLE ? CASE_TITLE : CASE_CAPITALIZE, out);
    case CT_FN_STR_REPLACE: {
        PBIND("old", "new", "count");
        if (!a.set[1]) return ct_fail(c, off, ZS_EINVAL, "replace expected at least 2 arguments");
        if ((r = need_str(c, off, a.v[0], "replace")) || (r = need_str(c, off, a.v[1], "replace"))) return r;
        int64_t cnt = -1;
        if (a.set[2]) {
            if (a.v[2].t != CT_INT) return ct_fail(c, off, ZS_EINVAL, "replace count must be an integer");
            cnt = a.v[2].u.i;
        }
        return do_replace(c, off, s, a.v[0].u.s, a.v[1].u.s, cnt, out);
    }
    case CT_FN_STR_FIND: case CT_FN_STR_COUNT: {
        PBIND("sub", "start", "end");
        if (a.set[1] || a.set[2])
            return ct_fail(c, off, ZS_EUNSUPPORTED, "str.%s() with start/end is not supported", f->name);
        if ((r = need_str(c, off, a.v[0], f->name))) return r;
        const ct_str *sub = a.v[0].u.s;
        if (f->id == CT_FN_STR_FIND) {
            const char *h = sub->len ? memmem(s->s, s->len, sub->s, sub->len) : s->s;
            *out = ct_int(h ? (int64_t)ct_utf8_len(s->s, (size_t)(h - s->s)) : -1);
            return 0;
        }
        if (sub->len == 0) { *out = ct_int((int64_t)ct_utf8_len(s->s, s->len) + 1); return 0; }
        int64_t k = 0;
        for (size_t i = 0; i + sub->len <= s->len;) {
            const char *h = memmem(s->s + i, s->len - i, sub->s, sub->len);
            if (!h) break;
            k++;
            i = (size_t)(h - s->s) + sub->len;
        }
        *out = ct_int(k);
        return 0;
    }
    case CT_FN_STR_JOIN: {
        if (nargs != 1) return ct_fail(c, off, ZS_EINVAL, "str.join() takes exactly one argument");
        ct_val *items;
        size_t n;
        if ((r = iter_in(c, off, args[0], &items, &n))) return r;
        ct_sb b = {.max = c->lim.max_output_bytes};
        for (size_t i = 0; i < n && r == 0; i++) {
            if (items[i].t != CT_STR) {
                r = ct_fail(c, off, ZS_EINVAL, "sequence item %zu: expected str instance, %s found", i,
                            ct_type_name(items[i]));
                break;
            }
            if (i) ct_sb_put(&b, s->s, s->len);
            ct_sb_put(&b, items[i].u.s->s, items[i].u.s->len);
            if (b.over) r = ct_fail_sb(c, &b, off);
        }
        if (r == 0) r = ct_mkstr(c, off, b.p ? b.p : "", b.n, out);
        ct_sb_free(&b);
        return r;
    }
    case CT_FN_STR_REMOVEPREFIX: case CT_FN_STR_REMOVESUFFIX: {
        if (nargs != 1) return ct_fail(c, off, ZS_EINVAL, "str.%s() takes exactly one argument", f->name);
        if ((r = need_str(c, off, args[0], f->name))) return r;
        int suffix = f->id == CT_FN_STR_REMOVESUFFIX;
        const ct_str *x = args[0].u.s;
        if (x->len == 0 || !affix_match(s, x, suffix)) { *out = f->self; return 0; }
        return ct_mkstr(c, off, suffix ? s->s : s->s + x->len, s->len - x->len, out);
    }
    default:
        return ct_fail(c, off, ZS_EUNSUPPORTED, "str.%s() is not supported", f->name);
    }
#undef PBIND
}

int ct_call(ct_ctx *c, size_t off, ct_val fn, ct_val *args, size_t nargs, const char **kwn,
            ct_val *kwv, size_t nkw, ct_val *out) {
    if (fn.t == CT_UNDEF) {
        if (fn.u.uname) return ct_fail(c, off, ZS_EINVAL, "'%s' is undefined", fn.u.uname);
        return ct_fail(c, off, ZS_EINVAL, "undefined value is not callable");
    }
    if (fn.t != CT_FUNC) return ct_fail(c, off, ZS_EINVAL, "'%s' object is not callable", ct_type_name(fn));
    ct_func *f = fn.u.fn;
    int r;
    switch (f->id) {
    case CT_FN_RAISE: {
        ct_val m = ct_undef(NULL);
        if (nargs >= 1) m = args[0];
        else if (nkw >= 1) m = kwv[0];
        ct_sb b = {.max = 700};
        r = ct_to_str(c, m, &b, off);
        if (r == 0) r = ct_fail(c, off, ZS_EINVAL, "raise_exception: %s", b.p ? b.p : "");
        ct_sb_free(&b);
        return r;
    }
    case CT_FN_STRFTIME:
        if (nargs != 1 || nkw) return ct_fail(c, off, ZS_EINVAL, "strftime_now() takes exactly one argument");
        if ((r = need_str(c, off, args[0], "strftime_now"))) return r;
        return f_strftime(c, off, args[0].u.s, out);
    case CT_FN_NAMESPACE: case CT_FN_DICT: {
        if (nargs > 1 || (nargs == 1 && args[0].t != CT_DICT))
            return ct_fail(c, off, ZS_EUNSUPPORTED, "%s() with positional arguments other than one dict", f->name);
        ct_dict *d = ct_dict_new(&c->arena, 0);
        if (d == NULL) return ct_fail_mem(c, off);
        if (nargs == 1)
            for (size_t i = 0; i < args[0].u.d->n; i++)
                if (ct_dict_set(&c->arena, d, args[0].u.d->k[i], args[0].u.d->v[i])) return ct_fail_mem(c, off);
        for (size_t k = 0; k < nkw; k++) {
            ct_val key;
            if ((r = ct_mkstr(c, off, kwn[k], strlen(kwn[k]), &key))) return r;
            if (ct_dict_set(&c->arena, d, key, kwv[k])) return ct_fail_mem(c, off);
        }
        out->t = f->id == CT_FN_NAMESPACE ? CT_NS : CT_DICT;
        out->u.d = d;
        return 0;
    }
    case CT_FN_RANGE:
        if (nkw) return ct_fail(c, off, ZS_EINVAL, "range() takes no keyword arguments");
        return f_range(c, off, args, nargs, out);
    case CT_FN_DICT_GET: {
        if (nkw || nargs < 1 || nargs > 2) return ct_fail(c, off, ZS_EINVAL, "get expected 1 or 2 arguments");
        ct_val *v = NULL;
        if (args[0].t == CT_LIST && args[0].u.l->kind != CT_LK_TUPLE)
            return ct_fail(c, off, ZS_EINVAL, "unhashable type: '%s'", ct_type_name(args[0]));
        v = ct_dict_get(f->self.u.d, args[0]);
        *out = v ? *v : nargs == 2 ? args[1] : ct_none();
        return 0;
    }
    case CT_FN_DICT_ITEMS: case CT_FN_DICT_KEYS: case CT_FN_DICT_VALUES:
        if (nargs || nkw) return ct_fail(c, off, ZS_EINVAL, "%s() takes no arguments", f->name);
        return dict_view(c, off, f->self.u.d, f->id == CT_FN_DICT_ITEMS ? 0 : f->id == CT_FN_DICT_KEYS ? 1 : 2, out);
    case CT_FN_LOOP_CYCLE:
        if (nargs == 0) return ct_fail(c, off, ZS_EINVAL, "no items for cycling given");
        *out = args[f->self.u.loop->index0 % nargs];
        return 0;
    case CT_FN_UNSUPPORTED:
        return ct_fail(c, off, ZS_EUNSUPPORTED, "'%s' is not supported", f->name);
    default:
        if (f->self.t == CT_STR) return str_method(c, off, f, args, nargs, kwn, kwv, nkw, out);
        return ct_fail(c, off, ZS_EUNSUPPORTED, "'%s' is not supported", f->name);
    }
}
