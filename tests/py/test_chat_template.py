"""Chat templates: the C interpreter (build/asan/tests/test_chat_driver) must render every
fixture in tests/data/chat_templates/ byte-identically to jinja2 set up exactly as Hugging Face
transformers' apply_chat_template sets it up, or fail where jinja2 fails. Constructs the C side
does not implement must fail with EUNSUPPORTED and a line/column, never render differently."""
import datetime
import json
import subprocess
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.nodes
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "build" / "asan" / "tests" / "test_chat_driver"
FIXTURES = ROOT / "tests" / "data" / "chat_templates"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))
TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]

pytestmark = pytest.mark.skipif(not DRIVER.exists(), reason=f"{DRIVER} not built")


# ---- reference: jinja2 configured as transformers does ---------------------------------------
class AssistantTracker(jinja2.ext.Extension):
    """transformers' {% generation %} tag; renders its body unchanged."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def hf_environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _token(v):
    return v.get("content") if isinstance(v, dict) else v


def hf_render(config, messages, add_generation_prompt=False, extra=None):
    """Returns ("ok", text) or ("error", message), like apply_chat_template(tokenize=False)."""
    tpl = config["chat_template"]
    if isinstance(tpl, list):
        tpl = {t["name"]: t["template"] for t in tpl}["default"]
    special = {k: _token(config[k]) for k in TOKEN_KEYS if config.get(k) is not None}
    if config.get("additional_special_tokens"):
        special["additional_special_tokens"] = [_token(t) for t in config["additional_special_tokens"]]
    kwargs = {**special, **(extra or {})}
    tools = kwargs.pop("tools", None)
    documents = kwargs.pop("documents", None)
    try:
        compiled = hf_environment().from_string(tpl)
        return "ok", compiled.render(messages=messages, tools=tools, documents=documents,
                                     add_generation_prompt=add_generation_prompt, **kwargs)
    except Exception as e:  # jinja2 and Python errors alike: the C side must fail too
        return "error", f"{type(e).__name__}: {e}"


def c_render(tmp_path, config, messages, add_generation_prompt=False, extra=None):
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    msgs = tmp_path / "messages.json"
    msgs.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    args = [str(DRIVER), "render", str(cfg), str(msgs), "1" if add_generation_prompt else "0"]
    if extra is not None:
        ex = tmp_path / "extra.json"
        ex.write_text(json.dumps(extra, ensure_ascii=False), encoding="utf-8")
        args.append(str(ex))
    p = subprocess.run(args, capture_output=True, timeout=120)
    if p.returncode == 0:
        return "ok", p.stdout.decode("utf-8")
    assert p.returncode == 2, f"driver crashed (rc={p.returncode}): {p.stderr.decode(errors='replace')}"
    return "error", p.stderr.decode("utf-8", errors="replace")


def load_fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def assert_same(tmp_path, config, messages, add_generation_prompt=False, extra=None):
    want = hf_render(config, messages, add_generation_prompt, extra)
    got = c_render(tmp_path, config, messages, add_generation_prompt, extra)
    if want[0] == "ok":
        assert got[0] == "ok", f"jinja2 rendered, C failed: {got[1]}"
        assert got[1] == want[1]
    else:
        assert got[0] == "error", f"jinja2 failed ({want[1]}), C rendered {got[1]!r}"
        assert "EUNSUPPORTED" not in got[1], f"jinja2 error {want[1]!r} but C says {got[1]}"
    return want, got


# ---- conversations -----------------------------------------------------------------------------
SYS = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYS, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [SYS, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}],
    "multi_turn_nosys": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
                         {"role": "user", "content": "three"}, {"role": "assistant", "content": "four"}],
    "whitespace": [{"role": "system", "content": "  spaced system \n"},
                   {"role": "user", "content": "\n\n  lots of space \t\n"},
                   {"role": "assistant", "content": "  answer  "}, {"role": "user", "content": " again "}],
    "unicode": [SYS, {"role": "user", "content": "héllo wörld — 世界 🙂 \u2028 quote' \"dq\" back\\slash {{ not jinja }}"},
                {"role": "assistant", "content": "Привет! ¿Qué tal? 日本語"}, {"role": "user", "content": "ok"}],
    "parts": [{"role": "user", "content": [{"type": "text", "text": "Describe this."}]}],
    "parts_multi": [SYS, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    "non_alternating": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    "empty_content": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""},
                      {"role": "user", "content": "x"}],
    "thinking": [{"role": "user", "content": "2+2?"},
                 {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
                 {"role": "user", "content": "3+3?"}],
}
FIXED_DATE = {"date_string": "26 Jul 2024"}


@pytest.mark.parametrize("add_gen", [False, True], ids=["nogen", "gen"])
@pytest.mark.parametrize("conv", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_matches_transformers(tmp_path, name, conv, add_gen):
    assert_same(tmp_path, load_fixture(name), CONVERSATIONS[conv], add_gen, FIXED_DATE)


def test_fixtures_present():
    for name in ["llama2", "llama3", "llama3.1", "llama3.2", "mistral-v0.1", "mistral-v0.2", "mistral-v0.3",
                 "qwen2", "qwen2.5", "qwen3"]:
        assert name in FIXTURE_NAMES


# ---- tools -------------------------------------------------------------------------------------
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather — in °C",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"},
                                                    "days": {"type": "integer", "minimum": 1}},
                   "required": ["city"]}}}
TOOL_CONV = [
    SYS, {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "abcdef123", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
    {"role": "tool", "tool_call_id": "abcdef123", "content": "{\"temp\": 21.5}"},
    {"role": "assistant", "content": "It is 21.5 °C in Paris."},
    {"role": "user", "content": "Thanks"},
]


@pytest.mark.parametrize("add_gen", [False, True], ids=["nogen", "gen"])
@pytest.mark.parametrize("name", ["llama3.1", "llama3.2", "mistral-v0.3", "qwen2.5", "qwen3"])
def test_tools_match_transformers(tmp_path, name, add_gen):
    want, _ = assert_same(tmp_path, load_fixture(name), TOOL_CONV, add_gen, {**FIXED_DATE, "tools": [WEATHER_TOOL]})
    assert want[0] == "ok", want[1]
    assert "get_weather" in want[1]


def test_llama31_builtin_tools_and_tools_in_system(tmp_path):
    conv = [SYS, {"role": "user", "content": "search it"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "brave_search", "arguments": {"query": "x y"}}}]},
            {"role": "ipython", "content": {"result": [1, 2.5, None, True]}}]
    extra = {**FIXED_DATE, "builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"],
             "tools": [WEATHER_TOOL], "tools_in_user_message": False}
    want, _ = assert_same(tmp_path, load_fixture("llama3.1"), conv, True, extra)
    assert want[0] == "ok" and "<|python_tag|>brave_search.call(" in want[1]


def test_qwen3_enable_thinking_false(tmp_path):
    want, _ = assert_same(tmp_path, load_fixture("qwen3"), CONVERSATIONS["thinking"], True, {"enable_thinking": False})
    assert want[1].endswith("<think>\n\n</think>\n\n")


def test_qwen3_reasoning_content_and_string_arguments(tmp_path):
    conv = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_content": "\nthought\n",
             "tool_calls": [{"function": {"name": "f", "arguments": "{\"k\": 1}"}}]},
            {"role": "tool", "content": "<tool_response>r</tool_response>"},
            {"role": "tool", "content": "r2"}]
    assert_same(tmp_path, load_fixture("qwen3"), conv, True)


def test_llama32_strftime_now_date(tmp_path):
    config = load_fixture("llama3.2")
    for _ in range(3):  # retried only if the date changes between the two renders
        before = datetime.datetime.now().strftime("%d %b %Y")
        got = c_render(tmp_path, config, CONVERSATIONS["user"], True)
        want = hf_render(config, CONVERSATIONS["user"], True)
        if before == datetime.datetime.now().strftime("%d %b %Y"):
            break
    assert got == want
    assert f"Today Date: {before}" in got[1]


def test_list_form_chat_template_uses_default(tmp_path):
    config = load_fixture("qwen2")
    config["chat_template"] = [{"name": "tool_use", "template": "TOOLS {{ messages|length }}"},
                               {"name": "default", "template": config["chat_template"]}]
    want, got = assert_same(tmp_path, config, CONVERSATIONS["system_user"], True)
    assert got[0] == "ok" and not got[1].startswith("TOOLS")


def test_chat_template_jinja_file_next_to_config(tmp_path):
    config = load_fixture("llama3")
    tpl = config.pop("chat_template")
    (tmp_path / "chat_template.jinja").write_text(tpl, encoding="utf-8")
    cfg = tmp_path / "tokenizer_config.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    msgs = tmp_path / "m.json"
    msgs.write_text(json.dumps(CONVERSATIONS["multi_turn"]), encoding="utf-8")
    p = subprocess.run([str(DRIVER), "render", str(cfg), str(msgs), "1"], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == hf_render({**config, "chat_template": tpl}, CONVERSATIONS["multi_turn"], True)[1]


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mistral-v0.1", "mistral-v0.2", "mistral-v0.3", "llama2"])
def test_non_alternating_roles_raise(tmp_path, name):
    want, got = assert_same(tmp_path, load_fixture(name), CONVERSATIONS["non_alternating"], False)
    assert want[0] == "error"
    assert "EINVAL" in got[1] and "raise_exception" in got[1]
    assert "roles must alternate" in got[1]


def test_mistral_tool_call_id_check_raises(tmp_path):
    conv = [dict(m) for m in TOOL_CONV]
    conv[2] = {**conv[2], "tool_calls": [{**conv[2]["tool_calls"][0], "id": "short"}]}
    want, got = assert_same(tmp_path, load_fixture("mistral-v0.3"), conv, False, {"tools": [WEATHER_TOOL]})
    assert want[0] == "error" and "length 9" in got[1]


UNSUPPORTED = [
    ("{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}", "macro", 1, 4),
    ("hello\n  {{ messages | wordcount }}", "wordcount", 2, 17),
    ("{% include 'other.jinja' %}", "include", 1, 4),
    ("{{ '%s' % 'x' }}", "formatting", 1, 9),
    ("{% for m in messages recursive %}{% endfor %}", "recursive", 1, 22),
    ("{{ messages[0].content.center(9) }}", "center", 1, 30),
]


@pytest.mark.parametrize("tpl,word,line,col", UNSUPPORTED)
def test_unsupported_syntax_is_refused_with_location(tmp_path, tpl, word, line, col):
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": tpl}
    status, msg = c_render(tmp_path, config, CONVERSATIONS["user"], False)
    assert status == "error"
    assert "EUNSUPPORTED" in msg and word in msg
    assert f"line {line} col {col}" in msg


@pytest.mark.parametrize("tpl", ["{% if %}", "{{ 'unterminated }}", "{% for x in %}{% endfor %}",
                                 "{% endif %}", "{{ a b }}", "{% for k, in [[1]] %}{% endfor %}", "{% if true %}no end", "{# open comment"])
def test_syntax_errors_fail_like_jinja2(tmp_path, tpl):
    config = {"chat_template": tpl}
    assert hf_render(config, CONVERSATIONS["user"])[0] == "error"
    status, msg = c_render(tmp_path, config, CONVERSATIONS["user"])
    assert status == "error" and "EFORMAT" in msg and "line 1" in msg, msg


def test_hostile_loops_are_bounded(tmp_path):
    config = {"chat_template": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"}
    status, msg = c_render(tmp_path, config, CONVERSATIONS["user"])
    assert status == "error" and "ERANGE" in msg


# ---- expression / whitespace semantics against jinja2 ----------------------------------------------
SNIPPETS = [
    "  {% if true %}\n  x\n  {% endif %}\n  y {# c #}\n  {#- c2 #}z",
    "a\n{%- if true +%}\n  b  {%+ if true %}c{% endif %}{% endif %}",
    "x {% if true %}y{% endif %}\n  {{ 'z' }}\n",
    "{% for x in [1,2,3] %}\n  {{ x }}\n{% endfor %}\n",
    "{%- for x in [1,2,3] -%}\n  {{ x }} \n{%- endfor %}  end",
    "{% raw %}{{ not rendered }}{% endraw %}\n{{ 'after' }}",
    "line1\r\nline2\rline3\n",
    "{{ 1 < 2 < 3 }} {{ not 1 == 2 }} {{ -2 ** 2 }} {{ 2 + 3 * 4 }} {{ 'a' ~ 1 ~ none }}",
    "{{ -1 ** 3 }} {{ (-1) ** 4 }} {{ 0 ** 0 }} {{ 0 ** 5 }} {{ 1 ** 99 }} {{ (-2) ** 3 }} {{ 2 ** -1 }} {{ -1 ** 3 / 3 % 3 }}",
    "{{ 3 / 2 }} {{ 4 / 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }}",
    "{{ 0.1 + 0.2 }} {{ 1e100 }} {{ 1.0e-5 }} {{ 123456789012345678.0 }} {{ 1.5e3 }} {{ 0x1F }} {{ 1_000 }}",
    "{{ [1, 'a', None, True, {'k': \"it's\"}, 1.5, (1,), ()] }} {{ {'a': [1, {'b': none}]} }}",
    "{{ messages[::-1] | map(attribute='role') | join(',') }} {{ 'abcdef'[1:5:2] }} {{ 'abc'[-1] }} {{ [1,2,3][5] }}",
    "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(None, 1) }} {{ 'a-b-c'.rsplit('-', 1) }}",
    "{{ 'xxaxx'.strip('x') }}|{{ '  y '.lstrip() }}|{{ ' y  '.rstrip() }}|{{ 'abc'.startswith(('x', 'a')) }}",
    "{{ 'Hello World'.upper() }} {{ 'ABC'.lower() }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }}",
    "{{ 'a-b-a'.replace('a', 'X') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'abcabc'.find('c') }} {{ 'abab'.count('ab') }}",
    "{{ u }}|{{ u is defined }}|{{ u|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ u|length }}",
    "{% set ns = namespace(a=1, l=[]) %}{% for i in range(3) %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}",
    "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
    "{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }}{{ loop.index }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{% endfor %}",
    "{% for x in [] %}no{% else %}empty{% endfor %}{% for x in 'ab' if x != 'a' %}{{ x }}{{ loop.length }}{% endfor %}",
    "{% for k, v in {'b': 1, 'a': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for k in {'z': 1} %}{{ k }}{% endfor %}",
    "{{ {'b': 1, 'a': [1, 2]} | tojson }} {{ {'b': 1, 'a': [1, 2]} | tojson(indent=2) }} {{ 'é\\n\"' | tojson }}",
    "{{ {'b': 1, 'a': {}} | tojson(sort_keys=true) }} {{ [] | tojson(indent=4) }} {{ 'é' | tojson(ensure_ascii=true) }}",
    "{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ 'abc' | first }} {{ [] | first }}|{{ 'abc' | reverse }} {{ [1, 2] | reverse | list }}",
    "{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | join }} {{ [1, none] | select | list }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} {{ messages | rejectattr('role', 'in', ['user']) | list }}",
    "{{ 1 if false }}|{{ none }}|{{ true }}|{{ 1 if 0 else 2 if 0 else 3 }}|{{ x or 'fallback' }}|{{ 0 and 1 }}",
    "{{ 'a' in 'cat' }} {{ 'z' not in ['a'] }} {{ 'k' in {'k': 1} }} {{ 1 in [1.0] }} {{ 'a' in u }}",
    "{{ 5 is number }} {{ true is number }} {{ true is integer }} {{ none is none }} {{ {} is mapping }} {{ '' is sequence }}",
    "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'x' is string }} {{ 1 is eq 1 }} {{ u is undefined }} {{ true is true }}",
    "{{ 'abc' | length }} {{ 'héllo' | length }} {{ {'a': 1} | length }} {{ [1] | count }} {{ 'héllo'[1] }} {{ 'héllo'[1:3] }}",
    "{% set x %}  block {{ 1 }} {% endset %}[{{ x }}]{% set y | trim %}  t  {% endset %}[{{ y }}]",
    "{{ 'x' ~ [1, 'y'] ~ {'k': none} }} {{ [1] + [2] }} {{ (1, 2) + (3,) }} {{ 'a' + 'b' }} {{ 1 + 2.5 }}",
    "{{ messages[0].role }} {{ messages[0]['content'] }} {{ messages.0.role }} {{ messages[0].missing }}|{{ messages[0].get('role') }}",
    "{{ messages[0].content.x is defined }} {{ messages[0].items is defined }} {{ (messages | first).role }} {{ range(3) | list }}",
    "{{ dict(a=1, b='x') }} {{ namespace(a=1) }} {{ range(0, 10, 3) | join('-') }} {{ range(5, 0, -2) | list }}",
    "{%- set messages = messages[1:] %}{{ messages | length }}{% if messages %}yes{% endif %}",
    "{% for m in messages %}{% set content = m.content %}{% endfor %}[{{ content }}]",
    "{% set x = 'o' %}{% for i in [1, 2] %}{% if i == 1 %}{% set x = 'a' %}{% endif %}[{{ x }}]{% endfor %}{{ x }}",
    "{{ '\\x41\\u00e9\\n\\t\\\\\\'\\q' }} {{ \"a\" 'b' }} {{ '\\101' }}",
    "{%+ if true %}   keep{% endif %}\n   {%- if true %}x{% endif %}",
    "{{ 'a' if 'b' }}{{ [1,2][-1] }}{{ -(3) }}{{ +4 }}{{ not none }}",
    "{{ messages | map('string') | list | length }} {{ ['a','b'] | map('upper') | join }} {{ [{'a': 1}] | map(attribute='b', default=0) | list }}",
    "{{ 'abc' | replace('b', 'X') }} {{ 'a b' | capitalize }} {{ '  pad  ' | trim }}|{{ 'xxhixx' | trim('x') }} {{ none | string }}",
    "{{ [1, 2] == [1, 2] }} {{ (1,) == [1] }} {{ {'a': 1} == {'a': 1} }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ 2 >= 2.0 }}",
    "{% generation %}gen {{ 1 }}{% endgeneration %}",
    "{{ 'text' }}\n\n",
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jinja2 on the '\\q' escape
@pytest.mark.parametrize("idx", range(len(SNIPPETS)))
def test_snippets_match_jinja2(tmp_path, idx):
    config = {"chat_template": SNIPPETS[idx], "bos_token": "<s>"}
    want, got = assert_same(tmp_path, config, CONVERSATIONS["multi_turn"], True)
    assert want[0] == "ok", want[1]


ERROR_SNIPPETS = [
    "{{ u + 'x' }}", "{{ u.x }}", "{{ 'x' + 1 }}", "{{ 1 / 0 }}", "{{ none | length }}", "{{ 'a' in none }}",
    "{{ u['k'] }}", "{% set x = 1 %}{% set x.y = 2 %}", "{{ raise_exception('boom ' ~ 1) }}", "{{ 5 | items | list }}",
    "{{ [1, 2] | select('odd') | last }}", "{{ x() }}", "{{ 'a' < 1 }}", "{{ range(200000) | length }}",
    "{% for a, b in [[1, 2, 3]] %}{% endfor %}",
]


@pytest.mark.parametrize("idx", range(len(ERROR_SNIPPETS)))
def test_error_snippets_fail_like_jinja2(tmp_path, idx):
    config = {"chat_template": ERROR_SNIPPETS[idx]}
    want, got = assert_same(tmp_path, config, CONVERSATIONS["user"], False)
    assert want[0] == "error" and got[0] == "error"
