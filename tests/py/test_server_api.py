"""`zerostart serve` API behaviour with the official `openai` client and raw HTTP: models,
completions and chat completions (streaming and not, with the same greedy text), usage
counts against the reference tokenizer and chat template, stop strings, max_tokens, seeds,
token-id prompts, SSE framing (raw socket and curl), /health, /metrics and prefix caching.
The server is the release binary on a free loopback port."""
import json
import shutil
import subprocess

import openai
import pytest

from server_util import Server, dechunk, make_model_dir, raw_http, render_chat

PROMPTS = ["Hello world", "The quick brown fox", "def encode(self, text):", "In 2024 the server"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("serve_api"))


@pytest.fixture(scope="module")
def server(zerostart, model):
    srv = Server(zerostart, model[0], "--name", "tiny", "--threads", "2")
    yield srv
    assert srv.stop() == 0, srv.log()[-3000:]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_models(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    st, _, body = server.get("/v1/models/nope")
    assert st == 404 and json.loads(body)["error"]["code"] == "model_not_found"


def stream_completion(client, **kw):
    chunks = list(client.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return text, finish, chunks


def test_completion_stream_equals_non_stream(client, model):
    tok = model[1]
    for p in PROMPTS:
        r = client.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0)
        assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "tiny"
        c = r.choices[0]
        assert c.finish_reason in ("stop", "length")
        assert r.usage.prompt_tokens == len(tok.encode(p).ids)
        assert 1 <= r.usage.completion_tokens <= 12
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        if c.finish_reason == "length":
            assert r.usage.completion_tokens == 12
        text, finish, chunks = stream_completion(client, model="tiny", prompt=p, max_tokens=12,
                                                 temperature=0,
                                                 stream_options={"include_usage": True})
        assert text == c.text
        assert finish == [c.finish_reason]
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
        assert chunks[-1].usage.prompt_tokens == r.usage.prompt_tokens
        assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_stream_equals_non_stream(client, model):
    tok = model[1]
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello, how are you today?"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=10, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    m = r.choices[0].message
    assert m.role == "assistant" and isinstance(m.content, str)
    # the chat template was applied exactly like jinja2 + the reference tokenizer do
    assert r.usage.prompt_tokens == len(tok.encode(render_chat(msgs)).ids)
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=10,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == m.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    # content given as an array of text parts renders the same prompt
    parts = [{"role": "system", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
             msgs[1]]
    r2 = client.chat.completions.create(model="tiny", messages=parts, max_tokens=10, temperature=0)
    assert r2.choices[0].message.content == m.content
    assert r2.usage.prompt_tokens == r.usage.prompt_tokens


def test_max_completion_tokens_and_length(client):
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                       max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens <= 3
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == 3


def test_ignore_eos(client):
    # Sampled at a high temperature, some plain requests end on an end-of-sequence token; with
    # ignore_eos every one runs to max_tokens.
    for seed in range(8):
        r = client.completions.create(model="tiny", prompt="Hello", max_tokens=40, temperature=1.5, seed=seed,
                                      extra_body={"ignore_eos": True})
        assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 40
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=4, extra_body={"ignore_eos": "yes"})
    assert "ignore_eos" in str(e.value)


def test_stop_strings(client):
    found = 0
    for p in PROMPTS:
        full = client.completions.create(model="tiny", prompt=p, max_tokens=24, temperature=0)
        t = full.choices[0].text
        if len(t) < 6:
            continue
        stop = t[3:5]
        cut = t[:t.index(stop)]
        r = client.completions.create(model="tiny", prompt=p, max_tokens=24, temperature=0,
                                      stop=[stop, "\x01never"])
        assert r.choices[0].text == cut
        assert r.choices[0].finish_reason == "stop"
        text, finish, _ = stream_completion(client, model="tiny", prompt=p, max_tokens=24,
                                            temperature=0, stop=stop)
        assert text == cut and finish == ["stop"]
        found += 1
    assert found >= 2


def test_seed_and_sampling(client):
    kw = dict(model="tiny", prompt="Hello world", max_tokens=16, temperature=1.0)
    a = client.completions.create(seed=42, **kw).choices[0].text
    b = client.completions.create(seed=42, **kw).choices[0].text
    assert a == b
    outs = {client.completions.create(seed=s, **kw).choices[0].text for s in range(6)}
    assert len(outs) > 1
    r = client.completions.create(seed=1, top_p=0.9, extra_body={"min_p": 0.05, "top_k": 5,
                                  "repetition_penalty": 1.1}, presence_penalty=0.5,
                                  frequency_penalty=0.5, **kw)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_token_id_prompt(client, model):
    tok = model[1]
    ids = tok.encode("The quick brown fox").ids
    a = client.completions.create(model="tiny", prompt=ids, max_tokens=8, temperature=0)
    b = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=8, temperature=0)
    assert a.choices[0].text == b.choices[0].text
    assert a.usage.prompt_tokens == len(ids)


def test_sse_framing_raw_socket(server):
    body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 5, "temperature": 0,
                       "stream": True}).encode()
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    resp = raw_http(server.port, req)
    head, _, rest = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-type: text/event-stream" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    payload = dechunk(rest)
    events = payload.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for ev in events[:-2]:
        assert ev.startswith(b"data: {") and b"\n" not in ev
        j = json.loads(ev[6:])
        assert j["object"] == "text_completion"
    assert json.loads(events[-3][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_sse_with_curl(server):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": 4, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    out = subprocess.run([curl, "-sN", "--max-time", "60", "-H", "Content-Type: application/json",
                          "-d", body, server.url + "/v1/chat/completions"],
                         capture_output=True, check=True).stdout
    events = [e for e in out.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    usage = json.loads(events[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1


def test_health_and_metrics(server, client):
    st, _, body = server.get("/health")
    assert st == 200 and json.loads(body)["status"] == "ok"
    client.completions.create(model="tiny", prompt="Hello", max_tokens=2, temperature=0)
    m = server.metrics()
    for key in ("zerostart_time_to_first_token_seconds_count",
                "zerostart_inter_token_latency_seconds_count", "zerostart_prompt_tokens_total",
                "zerostart_completion_tokens_total", "zerostart_prefix_cache_hits_total",
                'zerostart_queue_length{model="tiny"}', 'zerostart_kv_blocks_in_use{model="tiny"}',
                'zerostart_kv_blocks_total{model="tiny"}', 'zerostart_requests_total{code="200"}'):
        assert key in m, key
    assert m['zerostart_requests_total{code="200"}'] >= 1
    assert m["zerostart_time_to_first_token_seconds_count"] >= 1
    st, _, _ = server.post("/v1/completions", {"model": "tiny", "prompt": "x", "n": 3})
    assert st == 400
    assert server.metrics()['zerostart_requests_total{code="400"}'] >= 1


def test_prefix_cache_reuse(server, client):
    system = ("You are a helpful assistant. Answer briefly and politely. " * 4).strip()
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Hello there"}]
    before = server.metrics()
    first = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
    mid = server.metrics()
    second = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
    other = client.chat.completions.create(
        model="tiny", messages=[msgs[0], {"role": "user", "content": "Something else"}],
        max_tokens=8, temperature=0)
    after = server.metrics()
    assert second.choices[0].message.content == first.choices[0].message.content
    hits = after["zerostart_prefix_cache_hit_tokens_total"] - mid["zerostart_prefix_cache_hit_tokens_total"]
    # the second and third requests reuse at least the blocks covering the system prompt
    assert hits >= 2 * 16 * (first.usage.prompt_tokens // 16 - 2), (before, after)
    assert after["zerostart_prefix_cache_hits_total"] - mid["zerostart_prefix_cache_hits_total"] >= 2
    assert other.usage.prompt_tokens > 0
    # the gauges are refreshed right after the step that answered: poll, do not race it
    server.wait_metric('zerostart_kv_blocks_in_use{model="tiny"}', lambda v: v == 0, timeout=30)
