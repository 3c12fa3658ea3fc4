/* Unit tests of the chat-template interpreter (src/engine/chat_template_*.c): rendering,
 * jinja2 whitespace rules, Python value formatting, errors with line/column, refusal of
 * unsupported constructs, loading tokenizer_config.json, and the render limits. The
 * byte-for-byte comparison with jinja2 lives in tests/py/test_chat_template.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zerostart/chat_template.h"
#include "zt.h"

static const char *USER_MSG = "[{\"role\":\"user\",\"content\":\"Hi\"}]";

/* Renders src with USER_MSG; returns the status, output in *out (caller frees). */
static int render_src(const char *src, const char *msgs, const char *extra, char **out, zs_err_t *err,
                      const zs_chat_template_limits_t *lim) {
    zs_chat_template_t *t = NULL;
    *out = NULL;
    zs_err_clear(err);
    int rc = zs_chat_template_from_source(src, strlen(src), "<s>", "</s>", &t, err);
    if (rc) return rc;
    if (lim) zs_chat_template_set_limits(t, lim);
    rc = zs_chat_template_render_json(t, msgs ? msgs : USER_MSG, 1, extra, out, NULL, err);
    zs_chat_template_free(t);
    return rc;
}

#define EXPECT_RENDER(src, want) do { \
    char *o_; zs_err_t e_ = {0}; \
    int rc_ = render_src((src), NULL, NULL, &o_, &e_, NULL); \
    ZT_CHECK_MSG(rc_ == 0, "%s -> %s", (src), e_.msg); \
    if (rc_ == 0) ZT_CHECK_MSG(strcmp(o_, (want)) == 0, "%s -> '%s', want '%s'", (src), o_, (want)); \
    free(o_); } while (0)

#define EXPECT_FAIL(src, code, needle) do { \
    char *o_; zs_err_t e_ = {0}; \
    int rc_ = render_src((src), NULL, NULL, &o_, &e_, NULL); \
    ZT_CHECK_MSG(rc_ == (code), "%s -> rc %d (%s), want %s", (src), rc_, e_.msg, zs_status_name(code)); \
    ZT_CHECK(o_ == NULL); \
    ZT_CHECK_STR_CONTAINS(e_.msg, (needle)); \
    free(o_); } while (0)

static void test_basic_render(void) {
    EXPECT_RENDER("{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m['content'] }}{% endfor %}"
                  "{% if add_generation_prompt %}|gen{% endif %}{{ eos_token }}",
                  "<s>user: Hi|gen</s>");
    EXPECT_RENDER("{{ tools }}|{{ documents is none }}|{{ missing }}|{{ messages|length }}", "None|True||1");
}

static void test_whitespace_rules(void) {
    EXPECT_RENDER("  {% if true %}\n  x\n  {% endif %}\n  y {# c #}\n  {#- c2 #}z", "  x\n  y z");
    EXPECT_RENDER("a\n{%- if true +%}\n  b  {%+ if true %}c{% endif %}{% endif %}", "a\n  b  c");
    EXPECT_RENDER("x {% if true %}y{% endif %}\n  {{ 'z' }}\n", "x y  z");
    EXPECT_RENDER("{%- for x in [1,2] -%}\n  {{ x }} \n{%- endfor %}  end", "12  end");
    EXPECT_RENDER("l1\r\nl2\rl3\n\n", "l1\nl2\nl3\n");
    EXPECT_RENDER("{% raw %}{{ raw }}{% endraw %}\n{{ 1 }}", "{{ raw }}1");
}

static void test_python_formatting(void) {
    EXPECT_RENDER("{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ 3 / 2 }} {{ 4 / 2 }}",
                  "0.30000000000000004 1e+16 1000000000000000.0 1e-05 0.0001 1.5 2.0");
    EXPECT_RENDER("{{ [1, 'a', none, true, {'k': \"it's\"}, (1,)] }}", "[1, 'a', None, True, {'k': \"it's\"}, (1,)]");
    EXPECT_RENDER("{{ -7 // 2 }} {{ -7 % 3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** 62 }}",
                  "-4 2 3.0 0.5 4611686018427387904");
    EXPECT_RENDER("{{ {'a': [1, 2.5, none], 'b': 'é\\u0001\"'} | tojson }}",
                  "{\"a\": [1, 2.5, null], \"b\": \"é\\u0001\\\"\"}");
    EXPECT_RENDER("{{ {'a': [1]} | tojson(indent=2) }}", "{\n  \"a\": [\n    1\n  ]\n}");
}

static void test_string_methods_and_slices(void) {
    EXPECT_RENDER("{% set c = '<think>\\nr\\n</think>\\n\\nanswer' %}"
                  "{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}|"
                  "{{ c.split('</think>')[-1].lstrip('\\n') }}",
                  "r|answer");
    EXPECT_RENDER("{{ 'héllo'[1:3] }} {{ 'abc'[::-1] }} {{ [1,2,3][-2:] }} {{ 'héllo'|length }}", "él cba [2, 3] 5");
    EXPECT_RENDER("{{ ' a  b '.split() }} {{ 'a b c'.rsplit(None, 1) }}", "['a', 'b'] ['a b', 'c']");
}

static void test_scoping_and_namespace(void) {
    EXPECT_RENDER("{% set x = 'o' %}{% for i in [1, 2] %}{% if i == 1 %}{% set x = 'a' %}{% endif %}"
                  "[{{ x }}]{% endfor %}{{ x }}",
                  "[a][o]o");
    EXPECT_RENDER("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
                  "6");
    EXPECT_RENDER("{% for i in range(9) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}"
                  "{% endif %}{{ i }}{{ loop.last }}{% else %}none{% endfor %}",
                  "0False2False");
}

static void test_raise_exception(void) {
    EXPECT_FAIL("line one\n{{ raise_exception('Roles must alternate!') }}", ZS_EINVAL, "Roles must alternate!");
    EXPECT_FAIL("line one\n{{ raise_exception('x') }}", ZS_EINVAL, "line 2 col");
}

static void test_unsupported_constructs(void) {
    EXPECT_FAIL("ok\n{% macro m() %}{% endmacro %}", ZS_EUNSUPPORTED, "line 2 col 4");
    EXPECT_FAIL("{{ messages | wordcount }}", ZS_EUNSUPPORTED, "filter 'wordcount'");
    EXPECT_FAIL("{{ messages is escaped }}", ZS_EUNSUPPORTED, "test 'escaped'");
    EXPECT_FAIL("{{ 'a'.zfill(3) }}", ZS_EUNSUPPORTED, "zfill");
    EXPECT_FAIL("{{ lipsum() }}", ZS_EUNSUPPORTED, "lipsum");
    EXPECT_FAIL("{{ 'U+2066: \\u2066' ~ [messages[0].content ~ '\\u0378'] }}", ZS_EUNSUPPORTED, "repr");
    EXPECT_FAIL("{{ 'é'|upper }}", ZS_EUNSUPPORTED, "non-ASCII");
}

static void test_runtime_errors(void) {
    EXPECT_FAIL("{{ nope + 'x' }}", ZS_EINVAL, "'nope' is undefined");
    EXPECT_FAIL("{{ nope.attr }}", ZS_EINVAL, "'nope' is undefined");
    EXPECT_FAIL("{{ 'x' + 1 }}", ZS_EINVAL, "unsupported operand");
    EXPECT_FAIL("{{ 1 // 0 }}", ZS_EINVAL, "division by zero");
    EXPECT_FAIL("{% set x = 1 %}{% set x.y = 2 %}", ZS_EINVAL, "non-namespace");
}

static void test_syntax_errors(void) {
    EXPECT_FAIL("{% if %}", ZS_EFORMAT, "line 1 col");
    EXPECT_FAIL("a\nb\n{{ 'open }}", ZS_EFORMAT, "line 3 col 4");
    EXPECT_FAIL("{% if true %}never closed", ZS_EFORMAT, "endif");
    EXPECT_FAIL("{# comment", ZS_EFORMAT, "comment");
    EXPECT_FAIL("{% bogus %}", ZS_EFORMAT, "unknown tag 'bogus'");
    EXPECT_FAIL("{{ (1 }}", ZS_EFORMAT, "line 1");
    EXPECT_FAIL("{% break %}", ZS_EFORMAT, "outside of a loop");
}

static void test_limits(void) {
    char *o;
    zs_err_t e = {0};
    zs_chat_template_limits_t small = {.max_output_bytes = 1000, .max_memory_bytes = 1 << 20, .max_steps = 100000};
    ZT_CHECK(render_src("{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", NULL, NULL, &o, &e, &small) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(e.msg, "limit");
    ZT_CHECK(o == NULL);
    zs_chat_template_limits_t steps = {.max_steps = 100000};
    ZT_CHECK(render_src("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", NULL, NULL,
                        &o, &e, &steps) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(e.msg, "step limit");
    ZT_CHECK(render_src("{% set ns = namespace(s='x') %}{% for i in range(90000) %}{% set ns.s = ns.s ~ 'y' %}{% endfor %}",
                        NULL, NULL, &o, &e, &small) == ZS_ERANGE);
    ZT_CHECK(render_src("{{ 'ab' * 100000000000 }}", NULL, NULL, &o, &e, &small) == ZS_ERANGE);
    ZT_CHECK(render_src("{{ range(100001) | length }}", NULL, NULL, &o, &e, NULL) == ZS_ERANGE);
    /* values nested deeper than the printers allow */
    ZT_CHECK(render_src("{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% set ns.v = [ns.v] %}{% endfor %}"
                        "{{ ns.v }}", NULL, NULL, &o, &e, NULL) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(e.msg, "nesting");
    free(o);
}

static void test_deep_nesting_refused(void) {
    size_t n = 20000;
    char *src = malloc(4 * n + 16);
    ZT_REQUIRE(src != NULL);
    size_t k = 0;
    k += (size_t)sprintf(src + k, "{{ ");
    for (size_t i = 0; i < n; i++) src[k++] = '(';
    src[k++] = '1';
    for (size_t i = 0; i < n; i++) src[k++] = ')';
    k += (size_t)sprintf(src + k, " }}");
    char *o;
    zs_err_t e = {0};
    ZT_CHECK(render_src(src, NULL, NULL, &o, &e, NULL) != 0);
    /* a long flat chain builds a deep left-leaning tree: refused, not a stack overflow */
    k = (size_t)sprintf(src, "{{ 1");
    for (size_t i = 0; i < n / 2; i++) k += (size_t)sprintf(src + k, "+1");
    sprintf(src + k, " }}");
    ZT_CHECK(render_src(src, NULL, NULL, &o, &e, NULL) == ZS_ERANGE);
    ZT_CHECK_STR_CONTAINS(e.msg, "nested too deeply");
    free(src);
}

static void test_load_json_forms(void) {
    zs_err_t e = {0};
    zs_chat_template_t *t = NULL;
    const char *cfg = "{\"bos_token\": {\"__type\": \"AddedToken\", \"content\": \"<B>\"}, \"eos_token\": null,"
                      " \"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
                      " {\"name\": \"default\", \"template\": \"D{{ bos_token }}{{ eos_token is defined }}\"}]}";
    ZT_REQUIRE(zs_chat_template_load_json(cfg, strlen(cfg), NULL, &t, &e) == 0);
    ZT_CHECK(strcmp(zs_chat_template_bos_token(t), "<B>") == 0);
    ZT_CHECK(zs_chat_template_eos_token(t) == NULL);
    char *o = NULL;
    ZT_CHECK(zs_chat_template_render_json(t, "[]", 0, NULL, &o, NULL, &e) == 0);
    if (o) ZT_CHECK(strcmp(o, "D<B>False") == 0);
    free(o);
    zs_chat_template_free(t);
    ZT_REQUIRE(zs_chat_template_load_json(cfg, strlen(cfg), "tool_use", &t, &e) == 0);
    ZT_CHECK(strcmp(zs_chat_template_source(t), "T") == 0);
    zs_chat_template_free(t);
    ZT_CHECK(zs_chat_template_load_json(cfg, strlen(cfg), "nope", &t, &e) == ZS_ENOENT);
    ZT_CHECK(t == NULL);
    zs_err_clear(&e);
    ZT_CHECK(zs_chat_template_load_json("{\"eos_token\": \"x\"}", 18, NULL, &t, &e) == ZS_ENOENT);
    zs_err_clear(&e);
    ZT_CHECK(zs_chat_template_load_json("{not json", 9, NULL, &t, &e) == ZS_EFORMAT);
    zs_err_clear(&e);
    ZT_CHECK(zs_chat_template_load_json("{\"chat_template\": 5}", 20, NULL, &t, &e) == ZS_EFORMAT);
    zs_err_clear(&e);
    ZT_CHECK(zs_chat_template_from_source("\xff", 1, NULL, NULL, &t, &e) == ZS_EINVAL);
}

static void test_load_file_fixture(void) {
    zs_err_t e = {0};
    zs_chat_template_t *t = NULL;
    int rc = zs_chat_template_load_file("tests/data/chat_templates/qwen2.5.json", NULL, &t, &e);
    ZT_CHECK_MSG(rc == 0, "%s (run from the repository root)", e.msg);
    if (rc) return;
    json_t *msgs = json_pack("[{s:s,s:s}]", "role", "user", "content", "Hi");
    json_t *extra = json_pack("{s:[{s:s}]}", "tools", "name", "f");
    char *o = NULL;
    size_t len = 0;
    ZT_CHECK(zs_chat_template_render(t, msgs, 1, NULL, &o, &len, &e) == 0);
    if (o) {
        ZT_CHECK(strcmp(o, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                           "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") == 0);
        ZT_CHECK(len == strlen(o));
    }
    free(o);
    o = NULL;
    ZT_CHECK(zs_chat_template_render(t, msgs, 0, extra, &o, NULL, &e) == 0);
    if (o) ZT_CHECK_STR_CONTAINS(o, "<tools>\n{\"name\": \"f\"}\n</tools>");
    free(o);
    o = NULL;
    ZT_CHECK(zs_chat_template_render(t, extra, 0, NULL, &o, NULL, &e) == ZS_EINVAL); /* not an array */
    json_decref(msgs);
    json_decref(extra);
    zs_chat_template_free(t);
    zs_err_clear(&e);
    ZT_CHECK(zs_chat_template_load_file("tests/data/chat_templates/does-not-exist.json", NULL, &t, &e) == ZS_ENOENT);
    ZT_CHECK_STR_CONTAINS(e.msg, "does-not-exist.json");
}

int main(void) {
    ZT_RUN(test_basic_render);
    ZT_RUN(test_whitespace_rules);
    ZT_RUN(test_python_formatting);
    ZT_RUN(test_string_methods_and_slices);
    ZT_RUN(test_scoping_and_namespace);
    ZT_RUN(test_raise_exception);
    ZT_RUN(test_unsupported_constructs);
    ZT_RUN(test_runtime_errors);
    ZT_RUN(test_syntax_errors);
    ZT_RUN(test_limits);
    ZT_RUN(test_deep_nesting_refused);
    ZT_RUN(test_load_json_forms);
    ZT_RUN(test_load_file_fixture);
    return ZT_DONE();
}
