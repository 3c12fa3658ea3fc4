/* Internal interfaces of the chat-template interpreter, shared by src/engine/chat_template_*.c:
 * arena, string builder, runtime values, AST, and the entry points of the lexer/parser,
 * evaluator and builtins. Not a public header. */
#ifndef ZS_CHAT_TEMPLATE_INTERNAL_H
#define ZS_CHAT_TEMPLATE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "zerostart/chat_template.h"
#include "common/utf8.h"
#include "zerostart/err.h"

#define CT_MAX_NEST 128        /* parser nesting (expressions and blocks) */
#define CT_MAX_VALUE_DEPTH 256 /* nesting of values walked by repr/tojson/== */

/* ---- arena: every value and AST node lives in one; freed all at once ---------------- */
typedef struct ct_chunk ct_chunk;
typedef struct ct_arena {
    ct_chunk *head;
    size_t used;   /* bytes handed out (including chunk slack) */
    size_t cap;    /* limit on used */
    int over;      /* 1 when a request failed because of cap, 2 when malloc failed */
} ct_arena;

void ct_arena_init(ct_arena *a, size_t cap);
void *ct_alloc(ct_arena *a, size_t n); /* zeroed, max-aligned; NULL on failure */
void ct_arena_free(ct_arena *a);

/* ---- growable byte buffer (malloc), bounded by max ----------------------------------- */
typedef struct ct_sb {
    char *p;
    size_t n, cap, max;
    int over; /* 1: would exceed max, 2: malloc failed */
} ct_sb;

int ct_sb_put(ct_sb *b, const char *s, size_t n); /* 0 or -1 (see over) */
int ct_sb_puts(ct_sb *b, const char *s);
int ct_sb_putc(ct_sb *b, char c);
void ct_sb_free(ct_sb *b);

/* ---- values --------------------------------------------------------------------------- */
enum ct_type {
    CT_UNDEF = 0, CT_NONE, CT_BOOL, CT_INT, CT_FLOAT, CT_STR, CT_LIST, CT_DICT,
    CT_NS,   /* namespace(): a mutable dict with attribute syntax */
    CT_FUNC, /* global function or bound method */
    CT_LOOP, /* the `loop` variable of a for loop */
};
enum ct_list_kind { CT_LK_LIST = 0, CT_LK_TUPLE, CT_LK_VIEW, CT_LK_GEN };

typedef struct ct_str { size_t len; char s[]; } ct_str; /* UTF-8, NUL-terminated */
struct ct_val;
typedef struct ct_list {
    size_t n, cap;
    struct ct_val *v;
    int kind;           /* ct_list_kind; VIEW = dict_keys/values/items, GEN = generator */
    size_t pos;         /* GEN: items already consumed */
    const char *vname;  /* VIEW: "dict_items" ... for messages */
} ct_list;
typedef struct ct_dict { size_t n, cap; struct ct_val *k, *v; } ct_dict;
typedef struct ct_func ct_func;
typedef struct ct_loop ct_loop;

typedef struct ct_val {
    int t;
    union {
        int b;
        int64_t i;
        double f;
        ct_str *s;
        ct_list *l;
        ct_dict *d;      /* CT_DICT and CT_NS */
        ct_func *fn;
        ct_loop *loop;
        const char *uname; /* CT_UNDEF: what was missing (may be NULL) */
    } u;
} ct_val;

struct ct_func {
    int id;            /* CT_FN_* */
    const char *name;  /* method/global name, for messages */
    ct_val self;       /* bound object for methods */
};
struct ct_loop {
    size_t index0, length;
    ct_val *items;
    ct_list *gen;      /* iterated generator, consumed as the loop advances */
    size_t gen_base;
};

enum ct_func_id {
    CT_FN_RAISE = 1, CT_FN_STRFTIME, CT_FN_NAMESPACE, CT_FN_RANGE, CT_FN_DICT,
    CT_FN_UNSUPPORTED, /* exists in Python/jinja2 but not implemented here */
    CT_FN_STR_STARTSWITH, CT_FN_STR_ENDSWITH, CT_FN_STR_SPLIT, CT_FN_STR_RSPLIT,
    CT_FN_STR_STRIP, CT_FN_STR_LSTRIP, CT_FN_STR_RSTRIP, CT_FN_STR_UPPER, CT_FN_STR_LOWER,
    CT_FN_STR_REPLACE, CT_FN_STR_FIND, CT_FN_STR_COUNT, CT_FN_STR_JOIN, CT_FN_STR_TITLE,
    CT_FN_STR_CAPITALIZE, CT_FN_STR_REMOVEPREFIX, CT_FN_STR_REMOVESUFFIX,
    CT_FN_DICT_GET, CT_FN_DICT_ITEMS, CT_FN_DICT_KEYS, CT_FN_DICT_VALUES,
    CT_FN_LOOP_CYCLE,
};

/* ---- AST ------------------------------------------------------------------------------- */
enum ct_node_kind {
    /* expressions */
    N_CONST = 1, N_NAME, N_GETATTR, N_GETITEM, N_SLICE, N_CALL, N_FILTER, N_TEST,
    N_BINOP, N_NEG, N_POS, N_NOT, N_AND, N_OR, N_COMPARE, N_COND, N_LIST, N_TUPLE, N_DICT,
    N_CONCAT,
    /* statements */
    S_DATA, S_OUT, S_IF, S_FOR, S_SET, S_SET_ATTR, S_SET_BLOCK, S_BREAK, S_CONTINUE,
    S_BODY,
};
enum ct_op {
    OP_NONE = 0, OP_ADD, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
    OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE, OP_EQ, OP_NE,
    OP_GT, OP_GTEQ, OP_LT, OP_LTEQ, OP_ASSIGN, OP_DOT, OP_COLON, OP_PIPE, OP_COMMA,
    OP_SEMICOLON,
    OP_IN, OP_NOTIN, /* compare operators spelled with names */
};

typedef struct ct_node ct_node;
struct ct_node {
    int kind;
    int op;            /* N_BINOP op; N_TEST: 1 = negated; S_FOR: unused */
    int fid;           /* N_FILTER / N_TEST: builtin id */
    int h;             /* height of the expression tree (bounded by the parser) */
    size_t off;        /* byte offset in the (normalized) source */
    const char *name;  /* N_NAME, N_GETATTR attr, N_FILTER/N_TEST name, S_SET* target */
    const char *attr;  /* S_SET_ATTR attribute */
    ct_val val;        /* N_CONST; S_DATA text */
    ct_node *a, *b, *c; /* S_IF: a = test, c = next elif; N_SLICE: start/stop/step */
    ct_node **list; size_t n;       /* args / items / body / compare operands */
    ct_node **list2; size_t n2;     /* kwarg values / else body / dict values */
    const char **names; size_t nnames; /* kwarg names / for or set targets */
    int *ops;          /* N_COMPARE: operator per operand */
};

/* ---- templates -------------------------------------------------------------------------- */
struct zs_chat_template {
    char *src;          /* normalized source (newlines \n, one trailing newline dropped) */
    size_t src_len;
    char *orig;         /* source as given */
    ct_arena arena;     /* AST */
    ct_node *root;      /* S_BODY */
    json_t *tokens;     /* object: bos_token, eos_token, ... -> string / list */
    zs_chat_template_limits_t lim;
};

/* Records "chat template line L col C: <msg>" in err and returns code. */
int ct_err_at(zs_err_t *err, const char *src, size_t off, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Lexes and parses t->src into t->root (nodes in t->arena). */
int ct_parse(zs_chat_template_t *t, zs_err_t *err);

/* ---- evaluation -------------------------------------------------------------------------- */
typedef struct ct_frame ct_frame;
typedef struct ct_ctx {
    ct_arena arena;
    ct_sb out;
    zs_err_t *err;
    const char *src;
    zs_chat_template_limits_t lim;
    uint64_t steps;
    int depth;
    ct_frame *frame;
    ct_dict *vars;      /* render variables (messages, tokens, extra vars) */
    ct_val hole;        /* input of the innermost filter of {% set x | f %} */
} ct_ctx;

/* Renders t with the variables of `vars` (a JSON object). */
int ct_render(const zs_chat_template_t *t, const json_t *vars, char **out, size_t *out_len,
              zs_err_t *err);

/* Error helpers bound to a context; each returns the code. */
int ct_fail(ct_ctx *c, size_t off, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int ct_fail_mem(ct_ctx *c, size_t off);   /* arena exhausted: ENOMEM or ERANGE */
int ct_fail_sb(ct_ctx *c, const ct_sb *b, size_t off);

/* Value constructors and helpers (chat_template_value.c). */
ct_val ct_undef(const char *name);
ct_val ct_none(void);
ct_val ct_bool(int b);
ct_val ct_int(int64_t i);
ct_val ct_float(double f);
ct_str *ct_str_new(ct_arena *a, const char *s, size_t n);
int ct_mkstr(ct_ctx *c, size_t off, const char *s, size_t n, ct_val *out);
ct_list *ct_list_new(ct_arena *a, size_t cap, int kind);
int ct_list_push(ct_arena *a, ct_list *l, ct_val v);
ct_dict *ct_dict_new(ct_arena *a, size_t cap);
int ct_dict_set(ct_arena *a, ct_dict *d, ct_val k, ct_val v); /* 0, -1 nomem, -2 unhashable */
ct_val *ct_dict_get(ct_dict *d, ct_val k);
ct_val *ct_dict_gets(ct_dict *d, const char *key);
const char *ct_type_name(ct_val v);
int ct_truthy(ct_val v);
int ct_is_num(ct_val v);   /* bool, int or float */
int ct_eq(ct_val a, ct_val b, int depth);  /* 1 equal, 0 not equal */
/* str(v) / repr(v) appended to b; errors set on c. */
int ct_to_str(ct_ctx *c, ct_val v, ct_sb *b, size_t off);
int ct_repr(ct_ctx *c, ct_val v, ct_sb *b, size_t off, int depth);
int ct_format_float(double f, char *buf, size_t n); /* Python repr of a float */
/* transformers' tojson: json.dumps(v, ensure_ascii, indent, separators, sort_keys). */
typedef struct ct_json_opts {
    int ensure_ascii, sort_keys;
    const char *indent; /* NULL: no indentation */
    const char *item_sep, *key_sep;
} ct_json_opts;
int ct_tojson(ct_ctx *c, ct_val v, const ct_json_opts *o, ct_sb *b, size_t off, int depth);
int ct_from_json(ct_ctx *c, const json_t *j, ct_val *out, int depth);
int ct_strval(ct_ctx *c, ct_val v, size_t off, ct_val *out); /* str(v) as CT_STR */

/* UTF-8 helpers. */
size_t ct_utf8_len(const char *s, size_t n);              /* code points */
size_t ct_utf8_decode(const char *s, size_t n, uint32_t *cp); /* bytes used, >= 1 */
int ct_py_space(uint32_t cp);                              /* Python str.isspace() */
int ct_utf8_valid(const char *s, size_t n);

/* Iteration: the items of an iterable (list copy for generators, keys for dicts,
 * characters for strings). Undefined gives no items. Consumes generators. */
int ct_iter_items(ct_ctx *c, ct_val v, size_t off, ct_val **items, size_t *n);

/* Attribute / item access with jinja2 sandbox semantics. */
int ct_getattr(ct_ctx *c, ct_val obj, const char *name, size_t off, ct_val *out);
int ct_getitem(ct_ctx *c, ct_val obj, ct_val key, size_t off, ct_val *out);

/* Builtins (chat_template_builtins.c). Lookup returns an id > 0, or 0 when the name is not
 * implemented (the parser then refuses the template). */
int ct_filter_id(const char *name);
int ct_test_id(const char *name);
int ct_apply_filter(ct_ctx *c, const ct_node *n, ct_val in, ct_val *args, size_t nargs,
                    const char **kwn, ct_val *kwv, size_t nkw, ct_val *out);
int ct_apply_test(ct_ctx *c, const ct_node *n, ct_val in, ct_val *args, size_t nargs,
                  int *result);
int ct_call(ct_ctx *c, size_t off, ct_val fn, ct_val *args, size_t nargs, const char **kwn,
            ct_val *kwv, size_t nkw, ct_val *out);
/* Global functions by name (raise_exception, strftime_now, namespace, range, dict). */
int ct_global(const char *name, ct_val *out, ct_arena *a);
/* Method lookup: fills *out with a bound method (or CT_FN_UNSUPPORTED) and returns 1 when
 * `name` is a Python attribute of that type; 0 when it is not; -1 on allocation failure. */
int ct_method(ct_arena *a, ct_val self, const char *name, ct_val *out);

/* Binary operators and comparisons (chat_template_eval.c). */
int ct_binop(ct_ctx *c, int op, ct_val l, ct_val r, size_t off, ct_val *out);
int ct_compare(ct_ctx *c, int op, ct_val l, ct_val r, size_t off, int *result);
int ct_step(ct_ctx *c, size_t off);

#endif
