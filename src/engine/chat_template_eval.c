/* Chat-template evaluator: executes the AST against render variables with jinja2's scoping
 * (one fresh scope per for-loop iteration, `if` adds none), Undefined semantics, sandboxed
 * attribute/item lookup, Python operator semantics, and the render limits (steps, memory,
 * output size). */
#include "engine/chat_template_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ct_frame {
    ct_frame *parent;
    const char **names;
    ct_val *vals;
    size_t n, cap;
};

enum { EX_OK = 0, EX_BREAK = 1, EX_CONTINUE = 2 };
int ct_eval_expr(ct_ctx *c, const ct_node *n, ct_val *out);
#define MAX_ARGS 16

int ct_step(ct_ctx *c, size_t off) {
    if (++c->steps > c->lim.max_steps)
        return ct_fail(c, off, ZS_ERANGE, "evaluation step limit (%llu) exceeded",
                       (unsigned long long)c->lim.max_steps);
    return 0;
}

static int undefined_error(ct_ctx *c, ct_val v, size_t off) {
    if (v.u.uname) return ct_fail(c, off, ZS_EINVAL, "'%s' is undefined", v.u.uname);
    return ct_fail(c, off, ZS_EINVAL, "undefined value used");
}

/* ---- scopes -------------------------------------------------------------------------- */
static int frame_set(ct_ctx *c, ct_frame *f, const char *name, ct_val v, size_t off) {
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) { f->vals[i] = v; return 0; }
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 8;
        const char **nn = ct_alloc(&c->arena, nc * sizeof *nn);
        ct_val *nv = ct_alloc(&c->arena, nc * sizeof *nv);
        if (nn == NULL || nv == NULL) return ct_fail_mem(c, off);
        if (f->n) {
            memcpy(nn, f->names, f->n * sizeof *nn);
            memcpy(nv, f->vals, f->n * sizeof *nv);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = nc;
    }
    f->names[f->n] = name;
    f->vals[f->n] = v;
    f->n++;
    return 0;
}

static int lookup(ct_ctx *c, const char *name, size_t off, ct_val *out) {
    for (ct_frame *f = c->frame; f; f = f->parent)
        for (size_t i = f->n; i > 0; i--)
            if (strcmp(f->names[i - 1], name) == 0) { *out = f->vals[i - 1]; return 0; }
    ct_val *v = ct_dict_gets(c->vars, name);
    if (v) { *out = *v; return 0; }
    int g = ct_global(name, out, &c->arena);
    if (g < 0) return ct_fail_mem(c, off);
    if (g == 0) *out = ct_undef(name);
    return 0;
}

/* ---- iteration ------------------------------------------------------------------------- */
static int str_chars(ct_ctx *c, const ct_str *s, size_t off, ct_val **items, size_t *n) {
    size_t cnt = ct_utf8_len(s->s, s->len);
    ct_val *v = cnt ? ct_alloc(&c->arena, cnt * sizeof *v) : NULL;
    if (cnt && v == NULL) return ct_fail_mem(c, off);
    size_t k = 0;
    for (size_t i = 0; i < s->len && k < cnt;) {
        uint32_t cp;
        size_t l = ct_utf8_decode(s->s + i, s->len - i, &cp);
        int r = ct_mkstr(c, off, s->s + i, l, &v[k++]);
        if (r) return r;
        i += l;
    }
    *items = v;
    *n = k;
    return 0;
}

int ct_iter_items(ct_ctx *c, ct_val v, size_t off, ct_val **items, size_t *n) {
    switch (v.t) {
    case CT_UNDEF: *items = NULL; *n = 0; return 0;
    case CT_LIST:
        if (v.u.l->kind == CT_LK_GEN) {
            *items = v.u.l->v + v.u.l->pos;
            *n = v.u.l->n - v.u.l->pos;
            v.u.l->pos = v.u.l->n;
        } else {
            *items = v.u.l->v;
            *n = v.u.l->n;
        }
        return 0;
    case CT_DICT: *items = v.u.d->k; *n = v.u.d->n; return 0;
    case CT_STR: return str_chars(c, v.u.s, off, items, n);
    default:
        return ct_fail(c, off, ZS_EINVAL, "'%s' object is not iterable", ct_type_name(v));
    }
}

/* ---- attribute and item access ---------------------------------------------------------- */
static int loop_attr(ct_ctx *c, ct_loop *l, const char *name, size_t off, ct_val *out) {
    int64_t i0 = (int64_t)l->index0, len = (int64_t)l->length;
    int consume_all = 0;
    if (!strcmp(name, "index0")) *out = ct_int(i0);
    else if (!strcmp(name, "index")) *out = ct_int(i0 + 1);
    else if (!strcmp(name, "revindex")) { *out = ct_int(len - i0); consume_all = 1; }
    else if (!strcmp(name, "revindex0")) { *out = ct_int(len - i0 - 1); consume_all = 1; }
    else if (!strcmp(name, "first")) *out = ct_bool(i0 == 0);
    else if (!strcmp(name, "last")) { *out = ct_bool(i0 == len - 1); consume_all = 1; }
    else if (!strcmp(name, "length")) { *out = ct_int(len); consume_all = 1; }
    else if (!strcmp(name, "depth")) *out = ct_int(1);
    else if (!strcmp(name, "depth0")) *out = ct_int(0);
    else if (!strcmp(name, "previtem")) *out = i0 > 0 ? l->items[i0 - 1] : ct_undef("previtem");
    else if (!strcmp(name, "nextitem")) {
        *out = i0 + 1 < len ? l->items[i0 + 1] : ct_undef("nextitem");
        if (l->gen && l->gen->pos < l->gen_base + (size_t)i0 + 2)
            l->gen->pos = l->gen_base + (size_t)i0 + 2 > l->gen->n ? l->gen->n : l->gen_base + (size_t)i0 + 2;
    } else if (!strcmp(name, "cycle")) {
        ct_func *f = ct_alloc(&c->arena, sizeof *f);
        if (f == NULL) return ct_fail_mem(c, off);
        f->id = CT_FN_LOOP_CYCLE;
        f->name = "cycle";
        f->self.t = CT_LOOP;
        f->self.u.loop = l;
        out->t = CT_FUNC;
        out->u.fn = f;
    } else if (!strcmp(name, "changed")) {
        return ct_fail(c, off, ZS_EUNSUPPORTED, "loop.changed is not supported");
    } else {
        *out = ct_undef(name);
    }
    if (consume_all && l->gen) l->gen->pos = l->gen->n;
    return 0;
}

static const char *const NUM_ATTRS[] = {"real", "imag", "numerator", "denominator", "conjugate",
    "bit_length", "bit_count", "to_bytes", "from_bytes", "as_integer_ratio", "is_integer", "hex",
    "fromhex", NULL};

int ct_getattr(ct_ctx *c, ct_val obj, const char *name, size_t off, ct_val *out) {
    if (obj.t == CT_UNDEF) return undefined_error(c, obj, off);
    if (name[0] == '_' && name[1] == '_')
        return ct_fail(c, off, ZS_EUNSUPPORTED, "access to attribute '%s' is not supported", name);
    switch (obj.t) {
    case CT_LOOP: return loop_attr(c, obj.u.loop, name, off, out);
    case CT_NS: {
        ct_val *v = ct_dict_gets(obj.u.d, name);
        *out = v ? *v : ct_undef(name);
        return 0;
    }
    case CT_DICT: case CT_STR: case CT_LIST: {
        int m = ct_method(&c->arena, obj, name, out);
        if (m < 0) return ct_fail_mem(c, off);
        if (m) return 0;
        if (obj.t == CT_DICT) {
            ct_val *v = ct_dict_gets(obj.u.d, name);
            *out = v ? *v : ct_undef(name);
            return 0;
        }
        if (obj.t == CT_LIST && (obj.u.l->kind == CT_LK_VIEW || obj.u.l->kind == CT_LK_GEN))
            return ct_fail(c, off, ZS_EUNSUPPORTED, "attribute '%s' of a %s object is not supported",
                           name, ct_type_name(obj));
        *out = ct_undef(name);
        return 0;
    }
    case CT_INT: case CT_FLOAT: case CT_BOOL:
        for (int i = 0; NUM_ATTRS[i]; i++)
            if (!strcmp(name, NUM_ATTRS[i]))
                return ct_fail(c, off, ZS_EUNSUPPORTED, "attribute '%s' of a number is not supported", name);
        *out = ct_undef(name);
        return 0;
    default:
        *out = ct_undef(name);
        return 0;
    }
}

static int as_index(ct_val k, int64_t *i) {
    if (k.t == CT_INT) { *i = k.u.i; return 1; }
    if (k.t == CT_BOOL) { *i = k.u.b; return 1; }
    return 0;
}

/* byte offsets of code points: offs[i] for i in [0, cnt], malloc'd */
static size_t *cp_offsets(const ct_str *s, size_t *cnt) {
    size_t n = ct_utf8_len(s->s, s->len);
    size_t *o = malloc((n + 1) * sizeof *o);
    if (o == NULL) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->s[i] & 0xC0) != 0x80) o[k++] = i;
    o[n] = s->len;
    *cnt = n;
    return o;
}

int ct_getitem(ct_ctx *c, ct_val obj, ct_val key, size_t off, ct_val *out) {
    if (obj.t == CT_UNDEF) return undefined_error(c, obj, off);
    int64_t idx;
    switch (obj.t) {
    case CT_DICT: {
        ct_val *v = (key.t == CT_LIST && key.u.l->kind != CT_LK_TUPLE) ? NULL : ct_dict_get(obj.u.d, key);
        if (v) { *out = *v; return 0; }
        break;
    }
    case CT_LIST:
        if (obj.u.l->kind == CT_LK_GEN || obj.u.l->kind == CT_LK_VIEW) {
            if (key.t == CT_STR)
                return ct_fail(c, off, ZS_EUNSUPPORTED, "subscript of a %s object is not supported",
                               ct_type_name(obj));
            *out = ct_undef(NULL);
            return 0;
        }
        if (as_index(key, &idx)) {
            int64_t n = (int64_t)obj.u.l->n;
            if (idx < 0) idx += n;
            if (idx >= 0 && idx < n) { *out = obj.u.l->v[idx]; return 0; }
            *out = ct_undef(NULL);
            return 0;
        }
        break;
    case CT_STR:
        if (as_index(key, &idx)) {
            size_t cnt;
            size_t *o = cp_offsets(obj.u.s, &cnt);
            if (o == NULL) return ct_fail(c, off, ZS_ENOMEM, "out of memory");
            if (idx < 0) idx += (int64_t)cnt;
            int r = 0;
            if (idx >= 0 && idx < (int64_t)cnt) r = ct_mkstr(c, off, obj.u.s->s + o[idx], o[idx + 1] - o[idx], out);
            else *out = ct_undef(NULL);
            free(o);
            return r;
        }
        break;
    default:
        break;
    }
    if (key.t == CT_STR) return ct_getattr(c, obj, key.u.s->s, off, out);
    *out = ct_undef(NULL);
    return 0;
}

static int slice_value(ct_ctx *c, ct_val obj, const ct_node *sl, ct_val *out) {
    ct_val parts[3];
    const ct_node *pn[3] = {sl->a, sl->b, sl->c};
    for (int i = 0; i < 3; i++) {
        parts[i] = ct_none();
        if (pn[i]) {
            int r = ct_eval_expr(c, pn[i], &parts[i]);
            if (r) return r;
        }
    }
    if (obj.t == CT_UNDEF) return undefined_error(c, obj, sl->off);
    int64_t v[3] = {0, 0, 1};
    int has[3];
    for (int i = 0; i < 3; i++) {
        if (parts[i].t == CT_UNDEF)
            return ct_fail(c, sl->off, ZS_EINVAL, "slice indices must be integers or None");
        has[i] = parts[i].t != CT_NONE;
        if (has[i] && !as_index(parts[i], &v[i])) { *out = ct_undef(NULL); return 0; }
    }
    int64_t step = has[2] ? v[2] : 1;
    if (step == 0) return ct_fail(c, sl->off, ZS_EINVAL, "slice step cannot be zero");
    if (step < -INT64_MAX) step = -INT64_MAX;
    int is_str = obj.t == CT_STR;
    if (!(is_str || (obj.t == CT_LIST && (obj.u.l->kind == CT_LK_LIST || obj.u.l->kind == CT_LK_TUPLE)))) {
        *out = ct_undef(NULL);
        return 0;
    }
    size_t cnt = 0, *offs = NULL;
    if (is_str) {
        offs = cp_offsets(obj.u.s, &cnt);
        if (offs == NULL) return ct_fail(c, sl->off, ZS_ENOMEM, "out of memory");
    } else {
        cnt = obj.u.l->n;
    }
    int64_t L = (int64_t)cnt, start = 0, stop = 0;
    for (int k = 0; k < 2; k++) {
        int64_t x;
        if (has[k]) {
            x = v[k];
            if (x < 0) {
                x += L;
                if (x < 0) x = step < 0 ? -1 : 0;
            } else if (x >= L) {
                x = step < 0 ? L - 1 : L;
            }
        } else {
            x = k == 0 ? (step < 0 ? L - 1 : 0) : (step < 0 ? -1 : L);
        }
        if (k == 0) start = x; else stop = x;
    }
    int64_t m = 0;
    if (step > 0 && start < stop) m = (stop - start - 1) / step + 1;
    if (step < 0 && stop < start) m = (start - stop - 1) / (-step) + 1;
    int r = 0;
    if (is_str) {
        ct_sb b = {.max = c->lim.max_output_bytes};
        for (int64_t i = 0; i < m; i++) {
            int64_t j = start + i * step;
            ct_sb_put(&b, obj.u.s->s + offs[j], offs[j + 1] - offs[j]);
        }
        r = b.over ? ct_fail_sb(c, &b, sl->off) : ct_mkstr(c, sl->off, b.p ? b.p : "", b.n, out);
        ct_sb_free(&b);
        free(offs);
        return r;
    }
    ct_list *l = ct_list_new(&c->arena, (size_t)m, obj.u.l->kind);
    if (l == NULL) return ct_fail_mem(c, sl->off);
    for (int64_t i = 0; i < m; i++) l->v[i] = obj.u.l->v[start + i * step];
    l->n = (size_t)m;
    out->t = CT_LIST;
    out->u.l = l;
    return 0;
}

/* ---- operators ---------------------------------------------------------------------------- */
static int64_t ival(ct_val v) { return v.t == CT_INT ? v.u.i : v.u.b; }
static double fval(ct_val v) { return v.t == CT_FLOAT ? v.u.f : (double)ival(v); }

static int overflow(ct_ctx *c, size_t off) {
    return ct_fail(c, off, ZS_EUNSUPPORTED, "integer overflow (Python would use a big integer)");
}

/* CPython's float divmod */
static void py_fdivmod(double vx, double wx, double *fdiv, double *fmodp) {
    double mod = fmod(vx, wx), div = (vx - mod) / wx, floordiv;
    if (mod) {
        if ((wx < 0) != (mod < 0)) { mod += wx; div -= 1.0; }
    } else {
        mod = copysign(0.0, wx);
    }
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    *fdiv = floordiv;
    *fmodp = mod;
}

static int repeat(ct_ctx *c, ct_val seq, int64_t times, size_t off, ct_val *out) {
    if (times < 0) times = 0;
    if (seq.t == CT_STR) {
        size_t len = seq.u.s->len;
        if (len && (uint64_t)times > c->lim.max_output_bytes / len)
            return ct_fail(c, off, ZS_ERANGE, "string size limit (%zu bytes) exceeded", c->lim.max_output_bytes);
        size_t tot = len * (size_t)times;
        ct_str *s = ct_alloc(&c->arena, sizeof(ct_str) + tot + 1);
        if (s == NULL) return ct_fail_mem(c, off);
        for (int64_t i = 0; i < times; i++) memcpy(s->s + (size_t)i * len, seq.u.s->s, len);
        s->len = tot;
        s->s[tot] = '\0';
        out->t = CT_STR;
        out->u.s = s;
        return 0;
    }
    ct_list *src = seq.u.l;
    if (src->n && (uint64_t)times > (c->lim.max_output_bytes / sizeof(ct_val)) / src->n)
        return ct_fail(c, off, ZS_ERANGE, "list size limit exceeded");
    size_t tot = src->n * (size_t)times;
    ct_list *l = ct_list_new(&c->arena, tot, src->kind);
    if (l == NULL) return ct_fail_mem(c, off);
    for (int64_t i = 0; i < times; i++)
        if (src->n) memcpy(l->v + (size_t)i * src->n, src->v, src->n * sizeof(ct_val));
    l->n = tot;
    out->t = CT_LIST;
    out->u.l = l;
    return 0;
}

static const char *op_name(int op) {
    switch (op) {
    case OP_ADD: return "+";
    case OP_SUB: return "-";
    case OP_MUL: return "*";
    case OP_DIV: return "/";
    case OP_FLOORDIV: return "//";
    case OP_MOD: return "%";
    case OP_POW: return "**";
    case OP_LT: return "<";
    case OP_LTEQ: return "<=";
    case OP_GT: return ">";
    case OP_GTEQ: return ">=";
    default: return "?";
    }
}

int ct_binop(ct_ctx *c, int op, ct_val l, ct_val r, size_t off, ct_val *out) {
    if (l.t == CT_UNDEF) return undefined_error(c, l, off);
    if (r.t == CT_UNDEF) return undefined_error(c, r, off);
    if (ct_is_num(l) && ct_is_num(r)) {
        int fl = l.t == CT_FLOAT || r.t == CT_FLOAT;
        int64_t a = ival(l), b = ival(r), res;
        double x = fval(l), y = fval(r);
        switch (op) {
        case OP_ADD:
            if (fl) { *out = ct_float(x + y); return 0; }
            if (__builtin_add_overflow(a, b, &res)) return overflow(c, off);
            *out = ct_int(res);
            return 0;
        case OP_SUB:
            if (fl) { *out = ct_float(x - y); return 0; }
            if (__builtin_sub_overflow(a, b, &res)) return overflow(c, off);
            *out = ct_int(res);
            return 0;
        case OP_MUL:
            if (fl) { *out = ct_float(x * y); return 0; }
            if (__builtin_mul_overflow(a, b, &res)) return overflow(c, off);
            *out = ct_int(res);
            return 0;
        case OP_DIV:
            if (y == 0.0) return ct_fail(c, off, ZS_EINVAL, "division by zero");
            if (!fl && (a > (1LL << 53) || a < -(1LL << 53) || b > (1LL << 53) || b < -(1LL << 53)))
                return ct_fail(c, off, ZS_EUNSUPPORTED, "true division of integers beyond 2**53");
            *out = ct_float(x / y);
            return 0;
        case OP_FLOORDIV: case OP_MOD:
            if (fl ? y == 0.0 : b == 0) return ct_fail(c, off, ZS_EINVAL, "division by zero");
            if (fl) {
                double d, m;
                py_fdivmod(x, y, &d, &m);
                *out = ct_float(op == OP_FLOORDIV ? d : m);
                return 0;
            }
            if (a == INT64_MIN && b == -1) return overflow(c, off);
            {
                int64_t q = a / b, m = a % b;
                if (m != 0 && ((m < 0) != (b < 0))) { q -= 1; m += b; }
                *out = ct_int(op == OP_FLOORDIV ? q : m);
            }
            return 0;
        case OP_POW:
            if (fl || b < 0) {
                if (x == 0.0 && y < 0) return ct_fail(c, off, ZS_EINVAL, "zero to a negative power");
                if (x < 0 && y != floor(y))
                    return ct_fail(c, off, ZS_EUNSUPPORTED, "complex result of '**'");
                *out = ct_float(pow(x, y));
                if (isinf(out->u.f) && isfinite(x) && isfinite(y))
                    return ct_fail(c, off, ZS_EINVAL, "float power overflow: numerical result out of range");
                return 0;
            }
            if (a == 0 || a == 1) res = (a == 0 && b > 0) ? 0 : 1;
            else if (a == -1) res = (b % 2) ? -1 : 1;
            else { /* |a| >= 2 overflows within 63 multiplications */
                res = 1;
                for (int64_t i = 0; i < b; i++)
                    if (__builtin_mul_overflow(res, a, &res)) return overflow(c, off);
            }
            *out = ct_int(res);
            return 0;
        default: break;
        }
    }
    if (op == OP_ADD) {
        if (l.t == CT_STR && r.t == CT_STR) {
            size_t n = l.u.s->len + r.u.s->len;
            if (n > c->lim.max_output_bytes)
                return ct_fail(c, off, ZS_ERANGE, "string size limit (%zu bytes) exceeded", c->lim.max_output_bytes);
            ct_str *s = ct_alloc(&c->arena, sizeof(ct_str) + n + 1);
            if (s == NULL) return ct_fail_mem(c, off);
            memcpy(s->s, l.u.s->s, l.u.s->len);
            memcpy(s->s + l.u.s->len, r.u.s->s, r.u.s->len);
            s->len = n;
            s->s[n] = '\0';
            out->t = CT_STR;
            out->u.s = s;
            return 0;
        }
        if (l.t == CT_LIST && r.t == CT_LIST && l.u.l->kind == r.u.l->kind &&
            (l.u.l->kind == CT_LK_LIST || l.u.l->kind == CT_LK_TUPLE)) {
            ct_list *x = ct_list_new(&c->arena, l.u.l->n + r.u.l->n, l.u.l->kind);
            if (x == NULL) return ct_fail_mem(c, off);
            if (l.u.l->n) memcpy(x->v, l.u.l->v, l.u.l->n * sizeof(ct_val));
            if (r.u.l->n) memcpy(x->v + l.u.l->n, r.u.l->v, r.u.l->n * sizeof(ct_val));
            x->n = l.u.l->n + r.u.l->n;
            out->t = CT_LIST;
            out->u.l = x;
            return 0;
        }
    }
    if (op == OP_MUL) {
        int lseq = l.t == CT_STR || (l.t == CT_LIST && (l.u.l->kind == CT_LK_LIST || l.u.l->kind == CT_LK_TUPLE));
        int rseq = r.t == CT_STR || (r.t == CT_LIST && (r.u.l->kind == CT_LK_LIST || r.u.l->kind == CT_LK_TUPLE));
        if (lseq && (r.t == CT_INT || r.t == CT_BOOL)) return repeat(c, l, ival(r), off, out);
        if (rseq && (l.t == CT_INT || l.t == CT_BOOL)) return repeat(c, r, ival(l), off, out);
    }
    if (op == OP_MOD && l.t == CT_STR)
        return ct_fail(c, off, ZS_EUNSUPPORTED, "printf-style string formatting ('%%') is not supported");
    return ct_fail(c, off, ZS_EINVAL, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op),
                   ct_type_name(l), ct_type_name(r));
}

static int contains(ct_ctx *c, ct_val item, ct_val cont, size_t off, int *res) {
    switch (cont.t) {
    case CT_UNDEF: *res = 0; return 0;
    case CT_STR:
        if (item.t == CT_UNDEF) return undefined_error(c, item, off);
        if (item.t != CT_STR)
            return ct_fail(c, off, ZS_EINVAL, "'in <string>' requires string as left operand, not %s",
                           ct_type_name(item));
        *res = item.u.s->len == 0 ||
               memmem(cont.u.s->s, cont.u.s->len, item.u.s->s, item.u.s->len) != NULL;
        return 0;
    case CT_LIST: {
        ct_list *l = cont.u.l;
        size_t start = l->kind == CT_LK_GEN ? l->pos : 0;
        *res = 0;
        for (size_t i = start; i < l->n; i++)
            if (ct_eq(item, l->v[i], 0)) {
                *res = 1;
                if (l->kind == CT_LK_GEN) l->pos = i + 1;
                return 0;
            }
        if (l->kind == CT_LK_GEN) l->pos = l->n;
        return 0;
    }
    case CT_DICT:
        if (item.t == CT_LIST && item.u.l->kind != CT_LK_TUPLE)
            return ct_fail(c, off, ZS_EINVAL, "unhashable type: '%s'", ct_type_name(item));
        if (item.t == CT_DICT || item.t == CT_NS)
            return ct_fail(c, off, ZS_EINVAL, "unhashable type: '%s'", ct_type_name(item));
        *res = ct_dict_get(cont.u.d, item) != NULL;
        return 0;
    default:
        return ct_fail(c, off, ZS_EINVAL, "argument of type '%s' is not iterable", ct_type_name(cont));
    }
}

int ct_compare(ct_ctx *c, int op, ct_val l, ct_val r, size_t off, int *result) {
    switch (op) {
    case OP_EQ: *result = ct_eq(l, r, 0); return 0;
    case OP_NE: *result = !ct_eq(l, r, 0); return 0;
    case OP_IN: case OP_NOTIN: {
        int rc = contains(c, l, r, off, result);
        if (rc == 0 && op == OP_NOTIN) *result = !*result;
        return rc;
    }
    default: break;
    }
    if (l.t == CT_UNDEF) return undefined_error(c, l, off);
    if (r.t == CT_UNDEF) return undefined_error(c, r, off);
    int cmp;
    if (ct_is_num(l) && ct_is_num(r)) {
        if (l.t != CT_FLOAT && r.t != CT_FLOAT) {
            int64_t a = ival(l), b = ival(r);
            cmp = a < b ? -1 : a > b;
        } else {
            double a = fval(l), b = fval(r);
            if (a != a || b != b) { *result = 0; return 0; }
            cmp = a < b ? -1 : a > b;
        }
    } else if (l.t == CT_STR && r.t == CT_STR) {
        size_t m = l.u.s->len < r.u.s->len ? l.u.s->len : r.u.s->len;
        cmp = memcmp(l.u.s->s, r.u.s->s, m);
        if (cmp == 0) cmp = l.u.s->len < r.u.s->len ? -1 : l.u.s->len > r.u.s->len;
    } else if (l.t == CT_LIST && r.t == CT_LIST) {
        return ct_fail(c, off, ZS_EUNSUPPORTED, "ordering comparison of sequences is not supported");
    } else {
        return ct_fail(c, off, ZS_EINVAL, "'%s' not supported between instances of '%s' and '%s'",
                       op_name(op), ct_type_name(l), ct_type_name(r));
    }
    switch (op) {
    case OP_LT: *result = cmp < 0; break;
    case OP_LTEQ: *result = cmp <= 0; break;
    case OP_GT: *result = cmp > 0; break;
    default: *result = cmp >= 0; break;
    }
    return 0;
}

/* ---- expressions -------------------------------------------------------------------------- */
int ct_eval_expr(ct_ctx *c, const ct_node *n, ct_val *out);

static int eval_args(ct_ctx *c, const ct_node *n, ct_val *args, ct_val *kwv) {
    if (n->n > MAX_ARGS || n->n2 > MAX_ARGS)
        return ct_fail(c, n->off, ZS_EUNSUPPORTED, "more than %d arguments", MAX_ARGS);
    for (size_t i = 0; i < n->n; i++) {
        int r = ct_eval_expr(c, n->list[i], &args[i]);
        if (r) return r;
    }
    for (size_t i = 0; i < n->n2; i++) {
        int r = ct_eval_expr(c, n->list2[i], &kwv[i]);
        if (r) return r;
    }
    return 0;
}

static int build_seq(ct_ctx *c, const ct_node *n, int kind, ct_val *out) {
    ct_list *l = ct_list_new(&c->arena, n->n, kind);
    if (l == NULL) return ct_fail_mem(c, n->off);
    for (size_t i = 0; i < n->n; i++) {
        int r = ct_eval_expr(c, n->list[i], &l->v[i]);
        if (r) return r;
    }
    l->n = n->n;
    out->t = CT_LIST;
    out->u.l = l;
    return 0;
}

int ct_eval_expr(ct_ctx *c, const ct_node *n, ct_val *out) {
    int r = ct_step(c, n->off);
    if (r) return r;
    ct_val a, b;
    switch (n->kind) {
    case N_CONST: *out = n->val; return 0;
    case N_NAME: return lookup(c, n->name, n->off, out);
    case N_GETATTR:
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        return ct_getattr(c, a, n->name, n->off, out);
    case N_GETITEM:
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if (n->b->kind == N_SLICE) return slice_value(c, a, n->b, out);
        if ((r = ct_eval_expr(c, n->b, &b))) return r;
        return ct_getitem(c, a, b, n->off, out);
    case N_CALL: {
        ct_val args[MAX_ARGS], kwv[MAX_ARGS];
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if ((r = eval_args(c, n, args, kwv))) return r;
        return ct_call(c, n->off, a, args, n->n, n->names, kwv, n->n2, out);
    }
    case N_FILTER: {
        ct_val args[MAX_ARGS], kwv[MAX_ARGS];
        if (n->a == NULL) a = c->hole; /* {% set x | filter %}: the block's text */
        else if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if ((r = eval_args(c, n, args, kwv))) return r;
        return ct_apply_filter(c, n, a, args, n->n, n->names, kwv, n->n2, out);
    }
    case N_TEST: {
        ct_val args[MAX_ARGS], kwv[MAX_ARGS];
        int res = 0;
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if ((r = eval_args(c, n, args, kwv))) return r;
        if (n->n2) return ct_fail(c, n->off, ZS_EUNSUPPORTED, "keyword arguments to tests are not supported");
        if ((r = ct_apply_test(c, n, a, args, n->n, &res))) return r;
        *out = ct_bool(n->op ? !res : res);
        return 0;
    }
    case N_BINOP:
        if ((r = ct_eval_expr(c, n->a, &a)) || (r = ct_eval_expr(c, n->b, &b))) return r;
        return ct_binop(c, n->op, a, b, n->off, out);
    case N_NEG: case N_POS:
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if (a.t == CT_UNDEF) return undefined_error(c, a, n->off);
        if (!ct_is_num(a))
            return ct_fail(c, n->off, ZS_EINVAL, "bad operand type for unary %s: '%s'",
                           n->kind == N_NEG ? "-" : "+", ct_type_name(a));
        if (n->kind == N_POS) *out = a.t == CT_BOOL ? ct_int(a.u.b) : a;
        else if (a.t == CT_FLOAT) *out = ct_float(-a.u.f);
        else if (ival(a) == INT64_MIN) return overflow(c, n->off);
        else *out = ct_int(-ival(a));
        return 0;
    case N_NOT:
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        *out = ct_bool(!ct_truthy(a));
        return 0;
    case N_AND: case N_OR:
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if ((n->kind == N_AND) != ct_truthy(a)) { *out = a; return 0; }
        return ct_eval_expr(c, n->b, out);
    case N_COMPARE: {
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        int res = 1;
        for (size_t i = 0; i < n->n && res; i++) {
            if ((r = ct_eval_expr(c, n->list[i], &b))) return r;
            if ((r = ct_compare(c, n->ops[i], a, b, n->list[i]->off, &res))) return r;
            a = b;
        }
        *out = ct_bool(res);
        return 0;
    }
    case N_COND:
        if ((r = ct_eval_expr(c, n->a, &a))) return r;
        if (ct_truthy(a)) return ct_eval_expr(c, n->b, out);
        if (n->c) return ct_eval_expr(c, n->c, out);
        *out = ct_undef(NULL);
        return 0;
    case N_LIST: return build_seq(c, n, CT_LK_LIST, out);
    case N_TUPLE: return build_seq(c, n, CT_LK_TUPLE, out);
    case N_DICT: {
        ct_dict *d = ct_dict_new(&c->arena, n->n);
        if (d == NULL) return ct_fail_mem(c, n->off);
        for (size_t i = 0; i < n->n; i++) {
            if ((r = ct_eval_expr(c, n->list[i], &a)) || (r = ct_eval_expr(c, n->list2[i], &b))) return r;
            int s = ct_dict_set(&c->arena, d, a, b);
            if (s == -1) return ct_fail_mem(c, n->off);
            if (s == -2) return ct_fail(c, n->list[i]->off, ZS_EINVAL, "unhashable type: '%s'", ct_type_name(a));
        }
        out->t = CT_DICT;
        out->u.d = d;
        return 0;
    }
    case N_CONCAT: {
        ct_sb sb = {.max = c->lim.max_output_bytes};
        for (size_t i = 0; i < n->n && r == 0; i++) {
            r = ct_eval_expr(c, n->list[i], &a);
            if (r == 0) r = ct_to_str(c, a, &sb, n->off);
        }
        if (r == 0) r = ct_mkstr(c, n->off, sb.p ? sb.p : "", sb.n, out);
        ct_sb_free(&sb);
        return r;
    }
    default:
        return ct_fail(c, n->off, ZS_EUNSUPPORTED, "unsupported expression");
    }
}

/* ---- statements ------------------------------------------------------------------------------ */
static int exec_body(ct_ctx *c, ct_node *const *list, size_t n);

static int bind_targets(ct_ctx *c, ct_frame *f, const char *const *names, size_t nn, ct_val v, size_t off) {
    if (nn == 1) return frame_set(c, f, names[0], v, off);
    ct_val *items;
    size_t cnt;
    if (v.t == CT_LIST && v.u.l->kind == CT_LK_GEN)
        return ct_fail(c, off, ZS_EUNSUPPORTED, "unpacking a generator is not supported");
    if (v.t == CT_UNDEF) return undefined_error(c, v, off);
    int r = ct_iter_items(c, v, off, &items, &cnt);
    if (r) return r;
    if (cnt != nn)
        return ct_fail(c, off, ZS_EINVAL, "%s values to unpack (expected %zu, got %zu)",
                       cnt > nn ? "too many" : "not enough", nn, cnt);
    for (size_t i = 0; i < nn; i++)
        if ((r = frame_set(c, f, names[i], items[i], off))) return r;
    return 0;
}

static int exec_for(ct_ctx *c, const ct_node *n) {
    ct_val it;
    int r = ct_eval_expr(c, n->a, &it);
    if (r) return r;
    ct_val *items;
    size_t cnt, base = 0;
    ct_list *gen = NULL;
    if (it.t == CT_LIST && it.u.l->kind == CT_LK_GEN && n->b == NULL) {
        gen = it.u.l;
        base = gen->pos;
        items = gen->v + base;
        cnt = gen->n - base;
    } else if ((r = ct_iter_items(c, it, n->a->off, &items, &cnt))) {
        return r;
    }
    ct_frame fr = {.parent = c->frame};
    if (n->b) { /* for x in xs if cond: filter first, as jinja2 does */
        ct_val *kept = cnt ? ct_alloc(&c->arena, cnt * sizeof *kept) : NULL;
        if (cnt && kept == NULL) return ct_fail_mem(c, n->off);
        size_t k = 0;
        c->frame = &fr;
        for (size_t i = 0; i < cnt && r == 0; i++) {
            ct_val cond;
            fr.n = 0;
            r = bind_targets(c, &fr, n->names, n->nnames, items[i], n->off);
            if (r == 0) r = ct_eval_expr(c, n->b, &cond);
            if (r == 0 && ct_truthy(cond)) kept[k++] = items[i];
        }
        c->frame = fr.parent;
        if (r) return r;
        items = kept;
        cnt = k;
    }
    ct_loop *lp = ct_alloc(&c->arena, sizeof *lp);
    if (lp == NULL) return ct_fail_mem(c, n->off);
    lp->length = cnt;
    lp->items = items;
    lp->gen = gen;
    lp->gen_base = base;
    ct_val lv = {.t = CT_LOOP};
    lv.u.loop = lp;
    c->frame = &fr;
    for (size_t i = 0; i < cnt; i++) {
        if ((r = ct_step(c, n->off))) break;
        lp->index0 = i;
        if (gen && gen->pos < base + i + 1) gen->pos = base + i + 1;
        fr.n = 0;
        if ((r = bind_targets(c, &fr, n->names, n->nnames, items[i], n->off))) break;
        if ((r = frame_set(c, &fr, "loop", lv, n->off))) break;
        r = exec_body(c, n->list, n->n);
        if (r == EX_BREAK) { r = 0; break; }
        if (r == EX_CONTINUE) r = 0;
        if (r) break;
    }
    if (r == 0 && cnt == 0 && n->n2) {
        fr.n = 0;
        r = exec_body(c, n->list2, n->n2);
    }
    c->frame = fr.parent;
    return r;
}

static int exec_stmt(ct_ctx *c, const ct_node *n) {
    int r = ct_step(c, n->off);
    if (r) return r;
    ct_val v;
    switch (n->kind) {
    case S_DATA:
        if (ct_sb_put(&c->out, n->val.u.s->s, n->val.u.s->len)) return ct_fail_sb(c, &c->out, n->off);
        return 0;
    case S_OUT:
        if ((r = ct_eval_expr(c, n->a, &v))) return r;
        return ct_to_str(c, v, &c->out, n->off);
    case S_IF:
        for (const ct_node *x = n; x; x = x->c) {
            if ((r = ct_eval_expr(c, x->a, &v))) return r;
            if (ct_truthy(v)) return exec_body(c, x->list, x->n);
            if (x->c == NULL) return exec_body(c, x->list2, x->n2);
        }
        return 0;
    case S_FOR: return exec_for(c, n);
    case S_SET:
        if ((r = ct_eval_expr(c, n->a, &v))) return r;
        return bind_targets(c, c->frame, n->names, n->nnames, v, n->off);
    case S_SET_ATTR: {
        ct_val ns;
        if ((r = lookup(c, n->name, n->off, &ns))) return r;
        if (ns.t != CT_NS)
            return ct_fail(c, n->off, ZS_EINVAL, "cannot assign attribute on non-namespace object");
        if ((r = ct_eval_expr(c, n->a, &v))) return r;
        ct_val k;
        if ((r = ct_mkstr(c, n->off, n->attr, strlen(n->attr), &k))) return r;
        if (ct_dict_set(&c->arena, ns.u.d, k, v)) return ct_fail_mem(c, n->off);
        return 0;
    }
    case S_SET_BLOCK: {
        ct_sb saved = c->out;
        ct_sb body = {.max = c->lim.max_output_bytes};
        ct_frame inner = {.parent = c->frame}; /* the block body has its own scope */
        c->out = body;
        c->frame = &inner;
        r = exec_body(c, n->list, n->n);
        c->frame = inner.parent;
        body = c->out;
        c->out = saved;
        if (r == 0) r = ct_mkstr(c, n->off, body.p ? body.p : "", body.n, &v);
        ct_sb_free(&body);
        if (r) return r;
        if (n->b) {
            c->hole = v;
            if ((r = ct_eval_expr(c, n->b, &v))) return r;
        }
        return frame_set(c, c->frame, n->name, v, n->off);
    }
    case S_BREAK: return EX_BREAK;
    case S_CONTINUE: return EX_CONTINUE;
    case S_BODY: { /* {% generation %}: a call block, so its own scope */
        ct_frame inner = {.parent = c->frame};
        c->frame = &inner;
        r = exec_body(c, n->list, n->n);
        c->frame = inner.parent;
        return r;
    }
    default:
        return ct_fail(c, n->off, ZS_EUNSUPPORTED, "unsupported statement");
    }
}

static int exec_body(ct_ctx *c, ct_node *const *list, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int r = exec_stmt(c, list[i]);
        if (r) return r;
    }
    return 0;
}

/* ---- entry ----------------------------------------------------------------------------------- */
int ct_render(const zs_chat_template_t *t, const json_t *vars, char **out, size_t *out_len,
              zs_err_t *err) {
    ct_ctx c;
    memset(&c, 0, sizeof c);
    c.lim = t->lim;
    if (c.lim.max_output_bytes == 0) c.lim.max_output_bytes = 8u << 20;
    if (c.lim.max_memory_bytes == 0) c.lim.max_memory_bytes = 256u << 20;
    if (c.lim.max_steps == 0) c.lim.max_steps = 20000000;
    ct_arena_init(&c.arena, c.lim.max_memory_bytes);
    c.out.max = c.lim.max_output_bytes;
    c.err = err;
    c.src = t->src;
    ct_val vv;
    int r = ct_from_json(&c, vars, &vv, 0);
    if (r == 0 && vv.t != CT_DICT) r = ct_fail(&c, 0, ZS_EINVAL, "render variables must be a JSON object");
    if (r == 0) {
        c.vars = vv.u.d;
        ct_frame top = {0};
        c.frame = &top;
        r = exec_body(&c, t->root->list, t->root->n);
        c.frame = NULL;
    }
    ct_arena_free(&c.arena);
    if (r != 0) {
        ct_sb_free(&c.out);
        if (r > 0 || err->code == ZS_OK) zs_err_set(err, ZS_EFORMAT, "chat template: break/continue outside a loop");
        return err->code;
    }
    if (c.out.p == NULL && ct_sb_put(&c.out, "", 0)) {
        ct_sb_free(&c.out);
        return zs_err_set(err, ZS_ENOMEM, "chat template: out of memory");
    }
    *out = c.out.p;
    if (out_len) *out_len = c.out.n;
    return 0;
}
