/* Chat-template lexer and parser: turns Jinja source into the AST of
 * chat_template_internal.h with jinja2's exact whitespace rules (trim_blocks, lstrip_blocks,
 * `-`/`+` markers, one trailing newline dropped) and jinja2's operator precedence. Unknown
 * syntax is a ZS_EFORMAT error, known-but-unimplemented syntax (macros, includes, unlisted
 * filters/tests, ...) a ZS_EUNSUPPORTED one, both with line and column. */
#include "engine/chat_template_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_DATA, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
    int type, op;
    size_t off;
    const char *s; /* T_DATA: into src; T_NAME/T_STR: arena copy */
    size_t len;
    int64_t i;
    double f;
} tok;

typedef struct P {
    zs_chat_template_t *t;
    ct_arena *a;
    const char *src;
    size_t n;
    tok *toks;
    size_t nt, cap, pos;
    zs_err_t *err;
    int depth, loops;
} P;

static int fail(P *p, size_t off, int code, const char *what, const char *unused) {
    (void)unused;
    return ct_err_at(p->err, p->src, off, code, "%s", what);
}

static int oom(P *p, size_t off) {
    if (p->a->over == 2) return ct_err_at(p->err, p->src, off, ZS_ENOMEM, "out of memory");
    return ct_err_at(p->err, p->src, off, ZS_ERANGE, "template too large");
}

/* ================================ lexer ================================ */
static int push_tok(P *p, tok t) {
    if (p->nt == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 256;
        tok *nv = realloc(p->toks, nc * sizeof *nv);
        if (nv == NULL) return ct_err_at(p->err, p->src, t.off, ZS_ENOMEM, "out of memory");
        p->toks = nv;
        p->cap = nc;
    }
    p->toks[p->nt++] = t;
    return 0;
}

static size_t space_len(const char *s, size_t n) { /* one Python whitespace char, or 0 */
    uint32_t cp;
    size_t k = ct_utf8_decode(s, n, &cp);
    return (n && ct_py_space(cp)) ? k : 0;
}

static size_t skip_ws(const char *s, size_t pos, size_t n) {
    size_t k;
    while (pos < n && (k = space_len(s + pos, n - pos)) > 0) pos += k;
    return pos;
}

/* Length of text after stripping trailing Python whitespace. */
static size_t rstrip_len(const char *s, size_t n) {
    size_t last = 0, i = 0;
    while (i < n) {
        size_t k = space_len(s + i, n - i);
        if (k) { i += k; continue; }
        uint32_t cp;
        i += ct_utf8_decode(s + i, n - i, &cp);
        last = i;
    }
    return last;
}

/* Emits the data before a tag, applying `-` stripping or lstrip_blocks. */
static int emit_data(P *p, size_t start, size_t end, int sign, int is_var, int line_starting) {
    size_t len = end - start;
    const char *s = p->src + start;
    if (sign == '-') {
        len = rstrip_len(s, len);
    } else if (sign != '+' && !is_var) {
        size_t l_pos = 0;
        for (size_t i = len; i > 0; i--)
            if (s[i - 1] == '\n') { l_pos = i; break; }
        if (l_pos > 0 || line_starting) {
            if (l_pos < len && skip_ws(s, l_pos, len) == len) len = l_pos;
        }
    }
    if (len == 0) return 0;
    tok t = {.type = T_DATA, .off = start, .s = s, .len = len};
    return push_tok(p, t);
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decodes a string literal body with Python's unicode-escape rules. */
static int lex_string(P *p, size_t pos, size_t *endp) {
    const char *s = p->src;
    char q = s[pos];
    size_t i = pos + 1;
    while (i < p->n && s[i] != q) {
        if (s[i] == '\\' && i + 1 < p->n) i += 2;
        else i++;
    }
    if (i >= p->n) return fail(p, pos, ZS_EFORMAT, "unterminated string literal", NULL);
    size_t body = pos + 1, blen = i - body;
    char *out = ct_alloc(p->a, blen + 1);
    if (out == NULL) return oom(p, pos);
    size_t o = 0;
    for (size_t k = body; k < i;) {
        if (s[k] != '\\') { out[o++] = s[k++]; continue; }
        char e = s[k + 1];
        k += 2;
        uint32_t cp = 0;
        int ndig = 0;
        switch (e) {
        case '\n': continue;
        case '\\': out[o++] = '\\'; continue;
        case '\'': out[o++] = '\''; continue;
        case '"': out[o++] = '"'; continue;
        case 'a': out[o++] = '\a'; continue;
        case 'b': out[o++] = '\b'; continue;
        case 'f': out[o++] = '\f'; continue;
        case 'n': out[o++] = '\n'; continue;
        case 'r': out[o++] = '\r'; continue;
        case 't': out[o++] = '\t'; continue;
        case 'v': out[o++] = '\v'; continue;
        case 'x': ndig = 2; break;
        case 'u': ndig = 4; break;
        case 'U': ndig = 8; break;
        case 'N':
            return fail(p, k - 2, ZS_EUNSUPPORTED, "\\N{...} escapes are not supported", NULL);
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && k < i && s[k] >= '0' && s[k] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(s[k++] - '0');
                break;
            }
            /* unknown escape: kept as is */
            out[o++] = '\\';
            k--;
            continue;
        }
        for (int d = 0; d < ndig; d++) {
            int h = k < i ? hexval(s[k]) : -1;
            if (h < 0) return fail(p, k, ZS_EFORMAT, "truncated \\x/\\u/\\U escape in string", NULL);
            cp = cp * 16 + (uint32_t)h;
            k++;
        }
        if (cp > 0x10FFFF) return fail(p, k, ZS_EFORMAT, "illegal Unicode character in string", NULL);
        if (cp >= 0xD800 && cp <= 0xDFFF)
            return fail(p, k, ZS_EUNSUPPORTED, "surrogate code points in strings are not supported", NULL);
        char enc[4];
        size_t el = zs_utf8_encode(cp, enc);
        /* an escape never produces more bytes than its own spelling */
        memcpy(out + o, enc, el);
        o += el;
    }
    out[o] = '\0';
    tok t = {.type = T_STR, .off = pos, .s = out, .len = o};
    *endp = i + 1;
    return push_tok(p, t);
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }
static int is_name_start(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_'; }
static int is_name_char(char ch) { return is_name_start(ch) || is_digit(ch); }

/* digits with single underscores between them, as in jinja2's regexes */
static size_t digits_us(const char *s, size_t pos, size_t n, int (*ok)(char)) {
    size_t i = pos;
    if (i >= n || !ok(s[i])) return pos;
    i++;
    while (i < n) {
        if (ok(s[i])) i++;
        else if (s[i] == '_' && i + 1 < n && ok(s[i + 1])) i += 2;
        else break;
    }
    return i;
}
static int ok_dec(char ch) { return is_digit(ch); }
static int ok_bin(char ch) { return ch == '0' || ch == '1'; }
static int ok_oct(char ch) { return ch >= '0' && ch <= '7'; }
static int ok_hex(char ch) { return hexval(ch) >= 0; }

static int lex_number(P *p, size_t pos, size_t *endp) {
    const char *s = p->src;
    size_t n = p->n;
    /* float: (\d+_)*\d+ ((\.(\d+_)*\d+)? e[+-]?(\d+_)*\d+ | \.(\d+_)*\d+), not after '.' */
    if (pos == 0 || s[pos - 1] != '.') {
        size_t i = digits_us(s, pos, n, ok_dec);
        size_t j = i;
        int frac = 0, ex = 0;
        if (j < n && s[j] == '.' && j + 1 < n && is_digit(s[j + 1])) {
            j = digits_us(s, j + 1, n, ok_dec);
            frac = 1;
        }
        if (j < n && (s[j] == 'e' || s[j] == 'E')) {
            size_t k = j + 1;
            if (k < n && (s[k] == '+' || s[k] == '-')) k++;
            size_t e2 = digits_us(s, k, n, ok_dec);
            if (e2 > k) { j = e2; ex = 1; }
        }
        if (frac || ex) {
            char buf[128];
            size_t bl = 0;
            for (size_t k = pos; k < j && bl < sizeof buf - 1; k++)
                if (s[k] != '_') buf[bl++] = s[k];
            buf[bl] = '\0';
            tok t = {.type = T_FLOAT, .off = pos, .f = strtod(buf, NULL)};
            *endp = j;
            return push_tok(p, t);
        }
    }
    int base = 10;
    size_t i = pos, start;
    if (s[pos] == '0' && pos + 1 < n && (s[pos + 1] == 'b' || s[pos + 1] == 'B' || s[pos + 1] == 'o' ||
                                         s[pos + 1] == 'O' || s[pos + 1] == 'x' || s[pos + 1] == 'X')) {
        char b = (char)(s[pos + 1] | 0x20);
        int (*ok)(char) = b == 'b' ? ok_bin : b == 'o' ? ok_oct : ok_hex;
        base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
        /* 0x(_?[\da-f])+ */
        size_t k = pos + 2;
        if (k < n && s[k] == '_') k++;
        size_t e2 = digits_us(s, k, n, ok);
        if (e2 == k) { i = pos + 1; base = 10; start = pos; }
        else { i = e2; start = pos + 2; }
    } else if (s[pos] == '0') {
        i = pos + 1;
        while (i < n && (s[i] == '0' || (s[i] == '_' && i + 1 < n && s[i + 1] == '0')))
            i += s[i] == '_' ? 2 : 1;
        start = pos;
    } else {
        i = digits_us(s, pos, n, ok_dec);
        start = pos;
    }
    int64_t v = 0;
    for (size_t k = start; k < i; k++) {
        if (s[k] == '_') continue;
        int d = hexval(s[k]);
        if (v > (INT64_MAX - d) / base)
            return fail(p, pos, ZS_EUNSUPPORTED, "integer literal does not fit in 64 bits", NULL);
        v = v * base + d;
    }
    tok t = {.type = T_INT, .off = pos, .i = v};
    *endp = i;
    return push_tok(p, t);
}

static const struct { const char *s; int op; } OPS[] = {
    {"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GTEQ},
    {"<=", OP_LTEQ}, {"+", OP_ADD}, {"-", OP_SUB}, {"/", OP_DIV}, {"*", OP_MUL},
    {"%", OP_MOD}, {"~", OP_TILDE}, {"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN},
    {")", OP_RPAREN}, {"{", OP_LBRACE}, {"}", OP_RBRACE}, {">", OP_GT}, {"<", OP_LT},
    {"=", OP_ASSIGN}, {".", OP_DOT}, {":", OP_COLON}, {"|", OP_PIPE}, {",", OP_COMMA},
    {";", OP_SEMICOLON},
};

/* Lexes the inside of {{ }} or {% %} starting at pos; returns the position after the end
 * tag in *endp and whether that end consumed a trailing newline in *line_starting. */
static int lex_tag(P *p, size_t pos, int is_var, size_t *endp, int *line_starting) {
    const char *s = p->src;
    size_t n = p->n;
    char stack[CT_MAX_NEST];
    int sp = 0;
    size_t open = pos;
    for (;;) {
        if (pos >= n)
            return fail(p, open, ZS_EFORMAT, is_var ? "unexpected end of template, expected '}}'"
                                                    : "unexpected end of template, expected '%}'", NULL);
        if (sp == 0) {
            size_t e = 0;
            int trim = 0, ws = 0;
            if (is_var) {
                if (s[pos] == '-' && pos + 2 < n + 0 && s[pos + 1] == '}' && s[pos + 2] == '}') { e = pos + 3; ws = 1; }
                else if (s[pos] == '}' && pos + 1 < n && s[pos + 1] == '}') e = pos + 2;
            } else {
                if (s[pos] == '+' && pos + 2 < n && s[pos + 1] == '%' && s[pos + 2] == '}') e = pos + 3;
                else if (s[pos] == '-' && pos + 2 < n && s[pos + 1] == '%' && s[pos + 2] == '}') { e = pos + 3; ws = 1; }
                else if (s[pos] == '%' && pos + 1 < n && s[pos + 1] == '}') { e = pos + 2; trim = 1; }
            }
            if (e) {
                tok t = {.type = is_var ? T_VEND : T_BEND, .off = pos};
                if (push_tok(p, t)) return -1;
                if (ws) e = skip_ws(s, e, n);
                else if (trim && e < n && s[e] == '\n') e++;
                *line_starting = e > 0 && s[e - 1] == '\n';
                *endp = e;
                return 0;
            }
        }
        size_t k = space_len(s + pos, n - pos);
        if (k) { pos += k; continue; }
        char ch = s[pos];
        if (is_digit(ch)) {
            if (lex_number(p, pos, &pos)) return -1;
            continue;
        }
        if (is_name_start(ch)) {
            size_t e = pos;
            while (e < n && is_name_char(s[e])) e++;
            if (e < n && (unsigned char)s[e] >= 0x80)
                return fail(p, pos, ZS_EUNSUPPORTED, "non-ASCII identifiers are not supported", NULL);
            char *nm = ct_alloc(p->a, e - pos + 1);
            if (nm == NULL) return oom(p, pos);
            memcpy(nm, s + pos, e - pos);
            tok t = {.type = T_NAME, .off = pos, .s = nm, .len = e - pos};
            if (push_tok(p, t)) return -1;
            pos = e;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            if (lex_string(p, pos, &pos)) return -1;
            continue;
        }
        int found = 0;
        for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++) {
            size_t ol = strlen(OPS[o].s);
            if (pos + ol <= n && memcmp(s + pos, OPS[o].s, ol) == 0) {
                int op = OPS[o].op;
                if (op == OP_LBRACE || op == OP_LPAREN || op == OP_LBRACKET) {
                    if (sp >= CT_MAX_NEST) return fail(p, pos, ZS_ERANGE, "brackets nested too deeply", NULL);
                    stack[sp++] = op == OP_LBRACE ? '}' : op == OP_LPAREN ? ')' : ']';
                } else if (op == OP_RBRACE || op == OP_RPAREN || op == OP_RBRACKET) {
                    if (sp == 0 || stack[sp - 1] != s[pos])
                        return ct_err_at(p->err, p->src, pos, ZS_EFORMAT, "unexpected '%c'", s[pos]);
                    sp--;
                }
                tok t = {.type = T_OP, .op = op, .off = pos};
                if (push_tok(p, t)) return -1;
                pos += ol;
                found = 1;
                break;
            }
        }
        if (!found) {
            if ((unsigned char)ch >= 0x80)
                return fail(p, pos, ZS_EUNSUPPORTED, "non-ASCII character in a tag is not supported", NULL);
            return ct_err_at(p->err, p->src, pos, ZS_EFORMAT, "unexpected char '%c'", ch);
        }
    }
}

/* Matches `{%[-+]? raw %}` at pos (jinja2's raw_begin); returns its end or 0. */
static size_t match_raw(const char *s, size_t pos, size_t n, const char *word, int *sign) {
    size_t i = pos + 2;
    *sign = 0;
    if (i < n && (s[i] == '-' || s[i] == '+')) *sign = s[i++];
    i = skip_ws(s, i, n);
    size_t wl = strlen(word);
    if (i + wl > n || memcmp(s + i, word, wl) != 0) return 0;
    i = skip_ws(s, i + wl, n);
    return i;
}

static int lex(P *p) {
    const char *s = p->src;
    size_t n = p->n, pos = 0;
    int line_starting = 1;
    while (pos < n) {
        size_t t = pos;
        while (t + 1 < n && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#'))) t++;
        if (t + 1 >= n) {
            tok d = {.type = T_DATA, .off = pos, .s = s + pos, .len = n - pos};
            return push_tok(p, d);
        }
        char kind = s[t + 1];
        int sign = 0;
        size_t q = t + 2;
        if (q < n && (s[q] == '-' || s[q] == '+')) sign = s[q++];
        if (kind == '%') { /* {% raw %} */
            int rs;
            size_t r = match_raw(s, t, n, "raw", &rs);
            size_t rend = 0;
            if (r) {
                if (r + 2 < n + 0 && s[r] == '-' && s[r + 1] == '%' && s[r + 2] == '}') rend = skip_ws(s, r + 3, n);
                else if (r + 1 < n && s[r] == '%' && s[r + 1] == '}') rend = r + 2;
            }
            if (rend) {
                if (emit_data(p, pos, t, sign, 0, line_starting)) return -1;
                if (rend >= n) break; /* like jinja2: nothing after "{% raw %}" ends the template */
                int ls = s[rend - 1] == '\n';
                size_t k = rend, found = 0, cend = 0;
                int esign = 0;
                for (; k + 1 < n; k++) {
                    if (s[k] != '{' || s[k + 1] != '%') continue;
                    size_t r2 = match_raw(s, k, n, "endraw", &esign);
                    if (!r2) continue;
                    if (r2 + 2 < n && s[r2] == '+' && s[r2 + 1] == '%' && s[r2 + 2] == '}') cend = r2 + 3;
                    else if (r2 + 2 < n && s[r2] == '-' && s[r2 + 1] == '%' && s[r2 + 2] == '}') cend = skip_ws(s, r2 + 3, n);
                    else if (r2 + 1 < n && s[r2] == '%' && s[r2 + 1] == '}') {
                        cend = r2 + 2;
                        if (cend < n && s[cend] == '\n') cend++;
                    }
                    if (cend) { found = 1; break; }
                }
                if (!found) return fail(p, t, ZS_EFORMAT, "missing end of raw directive", NULL);
                if (emit_data(p, rend, k, esign, 0, ls)) return -1;
                line_starting = s[cend - 1] == '\n';
                pos = cend;
                continue;
            }
        }
        if (emit_data(p, pos, t, sign, kind == '{', line_starting)) return -1;
        if (kind == '#') {
            size_t k = q, e = 0;
            if (q >= n) break; /* jinja2's lexer stops silently on a bare "{#" at the very end */
            for (; k + 1 < n; k++) {
                if (s[k] == '+' && k + 2 < n && s[k + 1] == '#' && s[k + 2] == '}') { e = k + 3; break; }
                if (s[k] == '-' && k + 2 < n && s[k + 1] == '#' && s[k + 2] == '}') { e = skip_ws(s, k + 3, n); break; }
                if (s[k] == '#' && s[k + 1] == '}') {
                    e = k + 2;
                    if (e < n && s[e] == '\n') e++;
                    break;
                }
            }
            if (!e) return fail(p, t, ZS_EFORMAT, "missing end of comment tag", NULL);
            line_starting = s[e - 1] == '\n';
            pos = e;
            continue;
        }
        tok b = {.type = kind == '{' ? T_VBEGIN : T_BBEGIN, .off = t};
        if (push_tok(p, b)) return -1;
        if (lex_tag(p, q, kind == '{', &pos, &line_starting)) return -1;
    }
    return 0;
}

/* ================================ parser ================================ */
typedef struct nvec { ct_node **v; size_t n, cap; } nvec;
typedef struct svec { const char **v; size_t n, cap; } svec;

static int grow(P *p, void **v, size_t *cap, size_t n, size_t el, size_t off) {
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    void *nv = ct_alloc(p->a, nc * el);
    if (nv == NULL) return oom(p, off);
    if (n) memcpy(nv, *v, n * el);
    *v = nv;
    *cap = nc;
    return 0;
}
static int npush(P *p, nvec *v, ct_node *x, size_t off) {
    if (grow(p, (void **)&v->v, &v->cap, v->n, sizeof(ct_node *), off)) return -1;
    v->v[v->n++] = x;
    return 0;
}
static int spush(P *p, svec *v, const char *x, size_t off) {
    if (grow(p, (void **)&v->v, &v->cap, v->n, sizeof(char *), off)) return -1;
    v->v[v->n++] = x;
    return 0;
}

static tok *cur(P *p) { return &p->toks[p->pos]; }
static tok *peek(P *p) { return &p->toks[p->pos + 1 < p->nt ? p->pos + 1 : p->pos]; }
static void adv(P *p) { if (p->pos + 1 < p->nt) p->pos++; }
static int is_op(P *p, int op) { return cur(p)->type == T_OP && cur(p)->op == op; }
static int is_name(P *p, const char *nm) { return cur(p)->type == T_NAME && strcmp(cur(p)->s, nm) == 0; }

static const char *tok_desc(tok *t) {
    switch (t->type) {
    case T_DATA: return "template data";
    case T_VBEGIN: return "'{{'";
    case T_VEND: return "end of print statement";
    case T_BBEGIN: return "'{%'";
    case T_BEND: return "end of statement block";
    case T_NAME: return t->s;
    case T_STR: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    case T_EOF: return "end of template";
    default: break;
    }
    for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++)
        if (OPS[o].op == t->op) return OPS[o].s;
    return "operator";
}

static int unexpected(P *p, const char *expected) {
    return ct_err_at(p->err, p->src, cur(p)->off, ZS_EFORMAT, "expected %s, got '%s'", expected,
                     tok_desc(cur(p)));
}

static int expect_op(P *p, int op, const char *what) {
    if (!is_op(p, op)) return unexpected(p, what);
    adv(p);
    return 0;
}

static ct_node *mk(P *p, int kind, size_t off) {
    ct_node *n = ct_alloc(p->a, sizeof *n);
    if (n == NULL) { oom(p, off); return NULL; }
    n->kind = kind;
    n->off = off;
    n->h = 1;
    return n;
}

#define MAX_HEIGHT (CT_MAX_NEST * 4)
/* Computes the height of n from its children and refuses over-deep trees, so that the
 * recursive evaluator's stack use stays bounded. */
static ct_node *fin(P *p, ct_node *n) {
    if (n == NULL) return NULL;
    int h = 0;
    ct_node *kids[3] = {n->a, n->b, n->c};
    for (int i = 0; i < 3; i++) if (kids[i] && kids[i]->h > h) h = kids[i]->h;
    for (size_t i = 0; i < n->n; i++) if (n->list[i] && n->list[i]->h > h) h = n->list[i]->h;
    for (size_t i = 0; i < n->n2; i++) if (n->list2[i] && n->list2[i]->h > h) h = n->list2[i]->h;
    n->h = h + 1;
    if (n->h > MAX_HEIGHT) {
        ct_err_at(p->err, p->src, n->off, ZS_ERANGE, "expression nested too deeply");
        return NULL;
    }
    return n;
}

static int enter(P *p) {
    if (++p->depth > CT_MAX_NEST)
        return ct_err_at(p->err, p->src, cur(p)->off, ZS_ERANGE, "template nested too deeply");
    return 0;
}
static void leave(P *p) { p->depth--; }

static ct_node *parse_expression(P *p, int with_condexpr);
static ct_node *parse_tuple(P *p, int simplified, int with_condexpr, const char *extra_end,
                            int explicit_parens);
static ct_node *parse_unary(P *p, int with_filter);
static ct_node *parse_primary(P *p);
static ct_node *parse_postfix(P *p, ct_node *n);
static ct_node *parse_filter_expr(P *p, ct_node *n);
static ct_node *parse_filter(P *p, ct_node *n, int start_inline);

/* (args, kwargs) of a call; current token is '(' */
static int parse_call_args(P *p, ct_node *n) {
    size_t off = cur(p)->off;
    if (expect_op(p, OP_LPAREN, "'('")) return -1;
    nvec args = {0}, kwv = {0};
    svec kwn = {0};
    int need_comma = 0;
    while (!is_op(p, OP_RPAREN)) {
        if (need_comma) {
            if (expect_op(p, OP_COMMA, "','")) return -1;
            if (is_op(p, OP_RPAREN)) break;
        }
        if (is_op(p, OP_MUL) || is_op(p, OP_POW))
            return fail(p, cur(p)->off, ZS_EUNSUPPORTED, "*args / **kwargs in calls are not supported", NULL);
        if (cur(p)->type == T_NAME && peek(p)->type == T_OP && peek(p)->op == OP_ASSIGN) {
            const char *key = cur(p)->s;
            adv(p);
            adv(p);
            ct_node *v = parse_expression(p, 1);
            if (v == NULL || spush(p, &kwn, key, off) || npush(p, &kwv, v, off)) return -1;
        } else {
            if (kwn.n) return fail(p, cur(p)->off, ZS_EFORMAT, "invalid syntax for function call expression", NULL);
            ct_node *v = parse_expression(p, 1);
            if (v == NULL || npush(p, &args, v, off)) return -1;
        }
        need_comma = 1;
    }
    if (expect_op(p, OP_RPAREN, "')'")) return -1;
    n->list = args.v;
    n->n = args.n;
    n->names = kwn.v;
    n->nnames = kwn.n;
    n->list2 = kwv.v;
    n->n2 = kwv.n;
    return 0;
}

static ct_node *parse_list(P *p) {
    ct_node *n = mk(p, N_LIST, cur(p)->off);
    if (n == NULL || expect_op(p, OP_LBRACKET, "'['")) return NULL;
    nvec items = {0};
    while (!is_op(p, OP_RBRACKET)) {
        if (items.n && expect_op(p, OP_COMMA, "','")) return NULL;
        if (is_op(p, OP_RBRACKET)) break;
        ct_node *e = parse_expression(p, 1);
        if (e == NULL || npush(p, &items, e, n->off)) return NULL;
    }
    if (expect_op(p, OP_RBRACKET, "']'")) return NULL;
    n->list = items.v;
    n->n = items.n;
    return fin(p, n);
}

static ct_node *parse_dict(P *p) {
    ct_node *n = mk(p, N_DICT, cur(p)->off);
    if (n == NULL || expect_op(p, OP_LBRACE, "'{'")) return NULL;
    nvec ks = {0}, vs = {0};
    while (!is_op(p, OP_RBRACE)) {
        if (ks.n && expect_op(p, OP_COMMA, "','")) return NULL;
        if (is_op(p, OP_RBRACE)) break;
        ct_node *k = parse_expression(p, 1);
        if (k == NULL || expect_op(p, OP_COLON, "':'")) return NULL;
        ct_node *v = parse_expression(p, 1);
        if (v == NULL || npush(p, &ks, k, n->off) || npush(p, &vs, v, n->off)) return NULL;
    }
    if (expect_op(p, OP_RBRACE, "'}'")) return NULL;
    n->list = ks.v;
    n->n = ks.n;
    n->list2 = vs.v;
    n->n2 = vs.n;
    return fin(p, n);
}

static ct_node *parse_primary(P *p) {
    tok *t = cur(p);
    ct_node *n = NULL;
    if (enter(p)) return NULL;
    if (t->type == T_NAME) {
        n = mk(p, N_CONST, t->off);
        if (n == NULL) goto out;
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) n->val = ct_bool(1);
        else if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) n->val = ct_bool(0);
        else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) n->val = ct_none();
        else { n->kind = N_NAME; n->name = t->s; }
        adv(p);
    } else if (t->type == T_STR) {
        size_t total = 0, k = p->pos;
        while (k < p->nt && p->toks[k].type == T_STR) total += p->toks[k++].len;
        n = mk(p, N_CONST, t->off);
        if (n == NULL) goto out;
        ct_str *s = ct_alloc(p->a, sizeof(ct_str) + total + 1);
        if (s == NULL) { oom(p, t->off); n = NULL; goto out; }
        while (cur(p)->type == T_STR) {
            if (cur(p)->len) memcpy(s->s + s->len, cur(p)->s, cur(p)->len);
            s->len += cur(p)->len;
            adv(p);
        }
        s->s[s->len] = '\0';
        n->val.t = CT_STR;
        n->val.u.s = s;
    } else if (t->type == T_INT || t->type == T_FLOAT) {
        n = mk(p, N_CONST, t->off);
        if (n == NULL) goto out;
        n->val = t->type == T_INT ? ct_int(t->i) : ct_float(t->f);
        adv(p);
    } else if (is_op(p, OP_LPAREN)) {
        adv(p);
        n = parse_tuple(p, 0, 1, NULL, 1);
        if (n && expect_op(p, OP_RPAREN, "')'")) n = NULL;
    } else if (is_op(p, OP_LBRACKET)) {
        n = parse_list(p);
    } else if (is_op(p, OP_LBRACE)) {
        n = parse_dict(p);
    } else {
        ct_err_at(p->err, p->src, t->off, ZS_EFORMAT, "unexpected '%s'", tok_desc(t));
    }
out:
    leave(p);
    return n;
}

/* subscript inside [ ]: expression or slice */
static ct_node *parse_subscribed(P *p) {
    size_t off = cur(p)->off;
    ct_node *args[3] = {NULL, NULL, NULL};
    if (is_op(p, OP_COLON)) {
        adv(p);
    } else {
        ct_node *e = parse_expression(p, 1);
        if (e == NULL) return NULL;
        if (!is_op(p, OP_COLON)) return e;
        adv(p);
        args[0] = e;
    }
    if (!is_op(p, OP_COLON) && !is_op(p, OP_RBRACKET) && !is_op(p, OP_COMMA)) {
        if ((args[1] = parse_expression(p, 1)) == NULL) return NULL;
    }
    if (is_op(p, OP_COLON)) {
        adv(p);
        if (!is_op(p, OP_RBRACKET) && !is_op(p, OP_COMMA))
            if ((args[2] = parse_expression(p, 1)) == NULL) return NULL;
    }
    ct_node *n = mk(p, N_SLICE, off);
    if (n == NULL) return NULL;
    n->a = args[0];
    n->b = args[1];
    n->c = args[2];
    return fin(p, n);
}

static ct_node *parse_subscript(P *p, ct_node *node) {
    tok *t = cur(p);
    size_t off = t->off;
    if (is_op(p, OP_DOT)) {
        adv(p);
        tok *a = cur(p);
        if (a->type == T_NAME) {
            ct_node *n = mk(p, N_GETATTR, off);
            if (n == NULL) return NULL;
            n->a = node;
            n->name = a->s;
            adv(p);
            return fin(p, n);
        }
        if (a->type != T_INT) { unexpected(p, "name or number"); return NULL; }
        ct_node *k = mk(p, N_CONST, a->off), *n = mk(p, N_GETITEM, off);
        if (k == NULL || n == NULL) return NULL;
        k->val = ct_int(a->i);
        adv(p);
        n->a = node;
        n->b = k;
        return fin(p, n);
    }
    adv(p); /* '[' */
    nvec args = {0};
    while (!is_op(p, OP_RBRACKET)) {
        if (args.n && expect_op(p, OP_COMMA, "','")) return NULL;
        ct_node *e = parse_subscribed(p);
        if (e == NULL || npush(p, &args, e, off)) return NULL;
    }
    if (expect_op(p, OP_RBRACKET, "']'")) return NULL;
    if (args.n == 0) { ct_err_at(p->err, p->src, off, ZS_EFORMAT, "empty subscript"); return NULL; }
    ct_node *n = mk(p, N_GETITEM, off);
    if (n == NULL) return NULL;
    n->a = node;
    if (args.n == 1) {
        n->b = args.v[0];
    } else {
        for (size_t i = 0; i < args.n; i++)
            if (args.v[i]->kind == N_SLICE) {
                fail(p, off, ZS_EUNSUPPORTED, "multi-dimensional slicing is not supported", NULL);
                return NULL;
            }
        ct_node *tp = mk(p, N_TUPLE, off);
        if (tp == NULL) return NULL;
        tp->list = args.v;
        tp->n = args.n;
        if ((n->b = fin(p, tp)) == NULL) return NULL;
    }
    return fin(p, n);
}

static ct_node *parse_postfix(P *p, ct_node *n) {
    while (n) {
        if (is_op(p, OP_DOT) || is_op(p, OP_LBRACKET)) {
            n = parse_subscript(p, n);
        } else if (is_op(p, OP_LPAREN)) {
            ct_node *c = mk(p, N_CALL, cur(p)->off);
            if (c == NULL) return NULL;
            c->a = n;
            if (parse_call_args(p, c)) return NULL;
            n = fin(p, c);
        } else {
            break;
        }
    }
    return n;
}

static ct_node *parse_filter(P *p, ct_node *n, int start_inline) {
    while (n && (is_op(p, OP_PIPE) || start_inline)) {
        if (!start_inline) adv(p);
        start_inline = 0;
        tok *t = cur(p);
        if (t->type != T_NAME) { unexpected(p, "filter name"); return NULL; }
        adv(p);
        if (is_op(p, OP_DOT)) {
            fail(p, t->off, ZS_EUNSUPPORTED, "dotted filter names are not supported", NULL);
            return NULL;
        }
        int id = ct_filter_id(t->s);
        if (id == 0) {
            ct_err_at(p->err, p->src, t->off, ZS_EUNSUPPORTED, "filter '%s' is not supported", t->s);
            return NULL;
        }
        ct_node *f = mk(p, N_FILTER, t->off);
        if (f == NULL) return NULL;
        f->a = n;
        f->name = t->s;
        f->fid = id;
        if (is_op(p, OP_LPAREN) && parse_call_args(p, f)) return NULL;
        n = fin(p, f);
    }
    return n;
}

static ct_node *parse_test(P *p, ct_node *n) {
    size_t off = cur(p)->off;
    adv(p); /* is */
    int neg = 0;
    if (is_name(p, "not")) { adv(p); neg = 1; }
    tok *t = cur(p);
    if (t->type != T_NAME) { unexpected(p, "test name"); return NULL; }
    adv(p);
    if (is_op(p, OP_DOT)) {
        fail(p, t->off, ZS_EUNSUPPORTED, "dotted test names are not supported", NULL);
        return NULL;
    }
    int id = ct_test_id(t->s);
    if (id == 0) {
        ct_err_at(p->err, p->src, t->off, ZS_EUNSUPPORTED, "test '%s' is not supported", t->s);
        return NULL;
    }
    ct_node *x = mk(p, N_TEST, off);
    if (x == NULL) return NULL;
    x->a = n;
    x->name = t->s;
    x->fid = id;
    x->op = neg;
    tok *c = cur(p);
    if (is_op(p, OP_LPAREN)) {
        if (parse_call_args(p, x)) return NULL;
    } else if ((c->type == T_NAME || c->type == T_STR || c->type == T_INT || c->type == T_FLOAT ||
                is_op(p, OP_LPAREN) || is_op(p, OP_LBRACKET) || is_op(p, OP_LBRACE)) &&
               !is_name(p, "else") && !is_name(p, "or") && !is_name(p, "and")) {
        if (is_name(p, "is")) {
            fail(p, c->off, ZS_EFORMAT, "You cannot chain multiple tests with is", NULL);
            return NULL;
        }
        ct_node *arg = parse_postfix(p, parse_primary(p));
        if (arg == NULL) return NULL;
        x->list = ct_alloc(p->a, sizeof(ct_node *));
        if (x->list == NULL) { oom(p, off); return NULL; }
        x->list[0] = arg;
        x->n = 1;
    }
    return fin(p, x);
}

static ct_node *parse_filter_expr(P *p, ct_node *n) {
    while (n) {
        if (is_op(p, OP_PIPE)) {
            n = parse_filter(p, n, 0);
        } else if (is_name(p, "is")) {
            n = parse_test(p, n);
        } else if (is_op(p, OP_LPAREN)) {
            ct_node *c = mk(p, N_CALL, cur(p)->off);
            if (c == NULL) return NULL;
            c->a = n;
            if (parse_call_args(p, c)) return NULL;
            n = fin(p, c);
        } else {
            break;
        }
    }
    return n;
}

static ct_node *parse_unary(P *p, int with_filter) {
    ct_node *n;
    if (is_op(p, OP_SUB) || is_op(p, OP_ADD)) {
        int neg = is_op(p, OP_SUB);
        size_t off = cur(p)->off;
        adv(p);
        if (enter(p)) return NULL;
        ct_node *x = parse_unary(p, 0);
        leave(p);
        if (x == NULL) return NULL;
        n = mk(p, neg ? N_NEG : N_POS, off);
        if (n == NULL) return NULL;
        n->a = x;
        n = fin(p, n);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    return n;
}

static ct_node *binop(P *p, int op, ct_node *l, ct_node *r, size_t off) {
    if (l == NULL || r == NULL) return NULL;
    ct_node *n = mk(p, N_BINOP, off);
    if (n == NULL) return NULL;
    n->op = op;
    n->a = l;
    n->b = r;
    return fin(p, n);
}

static ct_node *parse_pow(P *p) {
    ct_node *l = parse_unary(p, 1);
    while (l && is_op(p, OP_POW)) {
        size_t off = cur(p)->off;
        adv(p);
        l = binop(p, OP_POW, l, parse_unary(p, 1), off);
    }
    return l;
}

static ct_node *parse_math2(P *p) {
    ct_node *l = parse_pow(p);
    while (l && (is_op(p, OP_MUL) || is_op(p, OP_DIV) || is_op(p, OP_FLOORDIV) || is_op(p, OP_MOD))) {
        int op = cur(p)->op;
        size_t off = cur(p)->off;
        adv(p);
        l = binop(p, op, l, parse_pow(p), off);
    }
    return l;
}

static ct_node *parse_concat(P *p) {
    size_t off = cur(p)->off;
    ct_node *first = parse_math2(p);
    if (first == NULL || !is_op(p, OP_TILDE)) return first;
    nvec items = {0};
    if (npush(p, &items, first, off)) return NULL;
    while (is_op(p, OP_TILDE)) {
        adv(p);
        ct_node *e = parse_math2(p);
        if (e == NULL || npush(p, &items, e, off)) return NULL;
    }
    ct_node *n = mk(p, N_CONCAT, off);
    if (n == NULL) return NULL;
    n->list = items.v;
    n->n = items.n;
    return fin(p, n);
}

static ct_node *parse_math1(P *p) {
    ct_node *l = parse_concat(p);
    while (l && (is_op(p, OP_ADD) || is_op(p, OP_SUB))) {
        int op = cur(p)->op;
        size_t off = cur(p)->off;
        adv(p);
        l = binop(p, op, l, parse_concat(p), off);
    }
    return l;
}

static ct_node *parse_compare(P *p) {
    size_t off = cur(p)->off;
    ct_node *e = parse_math1(p);
    if (e == NULL) return NULL;
    nvec ops = {0};
    int *opv = NULL;
    size_t opcap = 0;
    for (;;) {
        int op;
        if (cur(p)->type == T_OP && (cur(p)->op == OP_EQ || cur(p)->op == OP_NE || cur(p)->op == OP_LT ||
                                     cur(p)->op == OP_LTEQ || cur(p)->op == OP_GT || cur(p)->op == OP_GTEQ)) {
            op = cur(p)->op;
            adv(p);
        } else if (is_name(p, "in")) {
            op = OP_IN;
            adv(p);
        } else if (is_name(p, "not") && peek(p)->type == T_NAME && strcmp(peek(p)->s, "in") == 0) {
            op = OP_NOTIN;
            adv(p);
            adv(p);
        } else {
            break;
        }
        ct_node *r = parse_math1(p);
        if (r == NULL) return NULL;
        if (ops.n == opcap) {
            size_t nc = opcap ? opcap * 2 : 4;
            int *nv = ct_alloc(p->a, nc * sizeof(int));
            if (nv == NULL) { oom(p, off); return NULL; }
            if (ops.n) memcpy(nv, opv, ops.n * sizeof(int));
            opv = nv;
            opcap = nc;
        }
        opv[ops.n] = op;
        if (npush(p, &ops, r, off)) return NULL;
    }
    if (ops.n == 0) return e;
    ct_node *n = mk(p, N_COMPARE, off);
    if (n == NULL) return NULL;
    n->a = e;
    n->list = ops.v;
    n->n = ops.n;
    n->ops = opv;
    return fin(p, n);
}

static ct_node *parse_not(P *p) {
    if (is_name(p, "not")) {
        size_t off = cur(p)->off;
        adv(p);
        if (enter(p)) return NULL;
        ct_node *x = parse_not(p);
        leave(p);
        if (x == NULL) return NULL;
        ct_node *n = mk(p, N_NOT, off);
        if (n == NULL) return NULL;
        n->a = x;
        return fin(p, n);
    }
    return parse_compare(p);
}

static ct_node *logic(P *p, int kind, ct_node *l, ct_node *r, size_t off) {
    if (l == NULL || r == NULL) return NULL;
    ct_node *n = mk(p, kind, off);
    if (n == NULL) return NULL;
    n->a = l;
    n->b = r;
    return fin(p, n);
}

static ct_node *parse_and(P *p) {
    ct_node *l = parse_not(p);
    while (l && is_name(p, "and")) {
        size_t off = cur(p)->off;
        adv(p);
        l = logic(p, N_AND, l, parse_not(p), off);
    }
    return l;
}

static ct_node *parse_or(P *p) {
    ct_node *l = parse_and(p);
    while (l && is_name(p, "or")) {
        size_t off = cur(p)->off;
        adv(p);
        l = logic(p, N_OR, l, parse_and(p), off);
    }
    return l;
}

static ct_node *parse_condexpr(P *p) {
    if (enter(p)) return NULL;
    ct_node *e1 = parse_or(p);
    while (e1 && is_name(p, "if")) {
        size_t off = cur(p)->off;
        adv(p);
        ct_node *e2 = parse_or(p), *e3 = NULL;
        if (e2 == NULL) { e1 = NULL; break; }
        if (is_name(p, "else")) {
            adv(p);
            if ((e3 = parse_condexpr(p)) == NULL) { e1 = NULL; break; }
        }
        ct_node *n = mk(p, N_COND, off);
        if (n == NULL) { e1 = NULL; break; }
        n->a = e2;
        n->b = e1;
        n->c = e3;
        e1 = fin(p, n);
    }
    leave(p);
    return e1;
}

static ct_node *parse_expression(P *p, int with_condexpr) {
    return with_condexpr ? parse_condexpr(p) : parse_or(p);
}

static int is_tuple_end(P *p, const char *extra_end) {
    tok *t = cur(p);
    if (t->type == T_VEND || t->type == T_BEND || t->type == T_EOF || is_op(p, OP_RPAREN)) return 1;
    return extra_end && is_name(p, extra_end);
}

static ct_node *parse_tuple(P *p, int simplified, int with_condexpr, const char *extra_end,
                            int explicit_parens) {
    size_t off = cur(p)->off;
    nvec args = {0};
    int is_tuple = 0;
    for (;;) {
        if (args.n && expect_op(p, OP_COMMA, "','")) return NULL;
        if (is_tuple_end(p, extra_end)) break;
        ct_node *e = simplified ? parse_primary(p) : parse_expression(p, with_condexpr);
        if (e == NULL || npush(p, &args, e, off)) return NULL;
        if (is_op(p, OP_COMMA)) is_tuple = 1;
        else break;
    }
    if (!is_tuple) {
        if (args.n) return args.v[0];
        if (!explicit_parens) { unexpected(p, "an expression"); return NULL; }
    }
    ct_node *n = mk(p, N_TUPLE, off);
    if (n == NULL) return NULL;
    n->list = args.v;
    n->n = args.n;
    return fin(p, n);
}

/* ---- statements ---- */
static int parse_body(P *p, const char *const *ends, nvec *body);

/* after the statement's own tokens: optional ':' then '%}' */
static int end_of_stmt(P *p) {
    if (is_op(p, OP_COLON)) adv(p);
    if (cur(p)->type != T_BEND) return unexpected(p, "end of statement block");
    adv(p);
    return 0;
}

/* Parses a body until one of ends; leaves the current token on that end name. */
static int parse_statements(P *p, const char *const *ends, nvec *body) {
    if (end_of_stmt(p)) return -1;
    if (enter(p)) return -1;
    int r = parse_body(p, ends, body);
    leave(p);
    if (r) return -1;
    if (cur(p)->type == T_EOF) {
        char want[128] = "";
        for (int i = 0; ends[i]; i++) {
            size_t l = strlen(want);
            snprintf(want + l, sizeof want - l, "%s'%s'", i ? " or " : "", ends[i]);
        }
        return ct_err_at(p->err, p->src, cur(p)->off, ZS_EFORMAT, "unexpected end of template, expected %s",
                         want);
    }
    return 0;
}

static ct_node *parse_if(P *p) {
    ct_node *head = NULL, *prev = NULL;
    for (;;) {
        ct_node *n = mk(p, S_IF, cur(p)->off);
        if (n == NULL) return NULL;
        adv(p); /* if / elif */
        if ((n->a = parse_tuple(p, 0, 0, NULL, 0)) == NULL) return NULL;
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        nvec body = {0};
        if (parse_statements(p, ends, &body)) return NULL;
        n->list = body.v;
        n->n = body.n;
        if (prev) prev->c = n; else head = n;
        prev = n;
        if (is_name(p, "elif")) continue;
        if (is_name(p, "else")) {
            adv(p);
            static const char *const e2[] = {"endif", NULL};
            nvec eb = {0};
            if (parse_statements(p, e2, &eb)) return NULL;
            n->list2 = eb.v;
            n->n2 = eb.n;
        }
        adv(p); /* endif */
        return head;
    }
}

static int parse_targets(P *p, svec *names) {
    int paren = 0;
    if (is_op(p, OP_LPAREN)) { paren = 1; adv(p); }
    for (;;) {
        if (cur(p)->type != T_NAME) return unexpected(p, "assignment target name");
        const char *nm = cur(p)->s;
        if (!strcmp(nm, "true") || !strcmp(nm, "false") || !strcmp(nm, "none") || !strcmp(nm, "True") ||
            !strcmp(nm, "False") || !strcmp(nm, "None"))
            return ct_err_at(p->err, p->src, cur(p)->off, ZS_EFORMAT, "can't assign to '%s'", nm);
        if (spush(p, names, nm, cur(p)->off)) return -1;
        adv(p);
        if (!is_op(p, OP_COMMA)) break;
        adv(p); /* jinja2 rejects a trailing comma here: another name must follow */
        if (paren && is_op(p, OP_RPAREN)) break;
    }
    if (paren && expect_op(p, OP_RPAREN, "')'")) return -1;
    return 0;
}

static ct_node *parse_for(P *p) {
    ct_node *n = mk(p, S_FOR, cur(p)->off);
    if (n == NULL) return NULL;
    adv(p);
    svec names = {0};
    if (parse_targets(p, &names)) return NULL;
    n->names = names.v;
    n->nnames = names.n;
    if (!is_name(p, "in")) { unexpected(p, "'in'"); return NULL; }
    adv(p);
    if ((n->a = parse_tuple(p, 0, 0, "recursive", 0)) == NULL) return NULL;
    if (is_name(p, "if")) {
        adv(p);
        if ((n->b = parse_expression(p, 1)) == NULL) return NULL;
    }
    if (is_name(p, "recursive")) {
        fail(p, cur(p)->off, ZS_EUNSUPPORTED, "recursive for loops are not supported", NULL);
        return NULL;
    }
    static const char *const ends[] = {"endfor", "else", NULL};
    nvec body = {0};
    p->loops++;
    int r = parse_statements(p, ends, &body);
    p->loops--;
    if (r) return NULL;
    n->list = body.v;
    n->n = body.n;
    if (is_name(p, "else")) {
        adv(p);
        static const char *const e2[] = {"endfor", NULL};
        nvec eb = {0};
        if (parse_statements(p, e2, &eb)) return NULL;
        n->list2 = eb.v;
        n->n2 = eb.n;
    }
    adv(p);
    return n;
}

static ct_node *parse_set(P *p) {
    size_t off = cur(p)->off;
    adv(p);
    if (cur(p)->type == T_NAME && peek(p)->type == T_OP && peek(p)->op == OP_DOT) {
        ct_node *n = mk(p, S_SET_ATTR, off);
        if (n == NULL) return NULL;
        n->name = cur(p)->s;
        adv(p);
        adv(p);
        if (cur(p)->type != T_NAME) { unexpected(p, "attribute name"); return NULL; }
        n->attr = cur(p)->s;
        adv(p);
        if (expect_op(p, OP_ASSIGN, "'='")) return NULL;
        if ((n->a = parse_tuple(p, 0, 1, NULL, 0)) == NULL) return NULL;
        return n;
    }
    svec names = {0};
    if (parse_targets(p, &names)) return NULL;
    if (is_op(p, OP_ASSIGN)) {
        adv(p);
        ct_node *n = mk(p, S_SET, off);
        if (n == NULL) return NULL;
        n->names = names.v;
        n->nnames = names.n;
        if ((n->a = parse_tuple(p, 0, 1, NULL, 0)) == NULL) return NULL;
        return n;
    }
    if (names.n != 1) { unexpected(p, "'='"); return NULL; }
    ct_node *n = mk(p, S_SET_BLOCK, off);
    if (n == NULL) return NULL;
    n->name = names.v[0];
    if (is_op(p, OP_PIPE)) {
        /* {% set x | filter %}: the innermost filter gets the body as input (a = NULL) */
        ct_node *hole = mk(p, N_CONST, off);
        if (hole == NULL) return NULL;
        hole->val = ct_undef(NULL);
        ct_node *f = parse_filter(p, hole, 0);
        if (f == NULL) return NULL;
        ct_node *in = f;
        while (in->a != hole) in = in->a;
        in->a = NULL;
        n->b = f;
    }
    static const char *const ends[] = {"endset", NULL};
    nvec body = {0};
    if (parse_statements(p, ends, &body)) return NULL;
    adv(p);
    n->list = body.v;
    n->n = body.n;
    return n;
}

static ct_node *parse_statement(P *p) {
    tok *t = cur(p);
    if (t->type != T_NAME) { unexpected(p, "statement name"); return NULL; }
    const char *nm = t->s;
    if (!strcmp(nm, "if")) return parse_if(p);
    if (!strcmp(nm, "for")) return parse_for(p);
    if (!strcmp(nm, "set")) return parse_set(p);
    if (!strcmp(nm, "break") || !strcmp(nm, "continue")) {
        if (p->loops == 0) {
            ct_err_at(p->err, p->src, t->off, ZS_EFORMAT, "'%s' outside of a loop", nm);
            return NULL;
        }
        ct_node *n = mk(p, nm[0] == 'b' ? S_BREAK : S_CONTINUE, t->off);
        adv(p);
        return n;
    }
    if (!strcmp(nm, "print")) {
        ct_node *n = mk(p, S_OUT, t->off);
        if (n == NULL) return NULL;
        adv(p);
        if ((n->a = parse_tuple(p, 0, 1, NULL, 0)) == NULL) return NULL;
        return n;
    }
    if (!strcmp(nm, "generation")) { /* transformers' AssistantTracker: renders its body */
        ct_node *n = mk(p, S_BODY, t->off);
        if (n == NULL) return NULL;
        adv(p);
        static const char *const ends[] = {"endgeneration", NULL};
        nvec body = {0};
        if (parse_statements(p, ends, &body)) return NULL;
        adv(p);
        n->list = body.v;
        n->n = body.n;
        return n;
    }
    static const char *const unsupported[] = {"macro", "call", "filter", "with", "include", "import",
                                              "from", "extends", "block", "autoescape", "do", NULL};
    for (int i = 0; unsupported[i]; i++)
        if (!strcmp(nm, unsupported[i])) {
            ct_err_at(p->err, p->src, t->off, ZS_EUNSUPPORTED, "'{%% %s %%}' is not supported", nm);
            return NULL;
        }
    ct_err_at(p->err, p->src, t->off, ZS_EFORMAT, "encountered unknown tag '%s'", nm);
    return NULL;
}

static int parse_body(P *p, const char *const *ends, nvec *body) {
    for (;;) {
        tok *t = cur(p);
        if (t->type == T_EOF) return 0;
        if (t->type == T_DATA) {
            ct_node *n = mk(p, S_DATA, t->off);
            if (n == NULL) return -1;
            ct_str *s = ct_str_new(p->a, t->s, t->len);
            if (s == NULL) return oom(p, t->off);
            n->val.t = CT_STR;
            n->val.u.s = s;
            if (npush(p, body, n, t->off)) return -1;
            adv(p);
        } else if (t->type == T_VBEGIN) {
            ct_node *n = mk(p, S_OUT, t->off);
            if (n == NULL) return -1;
            adv(p);
            if ((n->a = parse_tuple(p, 0, 1, NULL, 0)) == NULL) return -1;
            if (cur(p)->type != T_VEND) return unexpected(p, "end of print statement");
            adv(p);
            if (npush(p, body, n, t->off)) return -1;
        } else if (t->type == T_BBEGIN) {
            adv(p);
            if (ends && cur(p)->type == T_NAME)
                for (int i = 0; ends[i]; i++)
                    if (!strcmp(cur(p)->s, ends[i])) return 0;
            ct_node *n = parse_statement(p);
            if (n == NULL) return -1;
            if (cur(p)->type != T_BEND) return unexpected(p, "end of statement block");
            adv(p);
            if (npush(p, body, n, t->off)) return -1;
        } else {
            return unexpected(p, "template data or a tag");
        }
    }
}

int ct_parse(zs_chat_template_t *t, zs_err_t *err) {
    P p = {.t = t, .a = &t->arena, .src = t->src, .n = t->src_len, .err = err};
    int rc = lex(&p);
    if (rc == 0) {
        tok eof = {.type = T_EOF, .off = t->src_len};
        rc = push_tok(&p, eof);
    }
    if (rc == 0) {
        nvec body = {0};
        rc = parse_body(&p, NULL, &body);
        if (rc == 0 && cur(&p)->type != T_EOF) rc = unexpected(&p, "end of template");
        if (rc == 0) {
            t->root = mk(&p, S_BODY, 0);
            if (t->root == NULL) rc = -1;
            else {
                t->root->list = body.v;
                t->root->n = body.n;
            }
        }
    }
    free(p.toks);
    if (rc != 0) {
        if (err && err->code == ZS_OK) zs_err_set(err, ZS_EFORMAT, "chat template parse failed");
        return err ? err->code : ZS_EFORMAT;
    }
    return 0;
}
