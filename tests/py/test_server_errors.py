"""`zerostart serve` on bad input (AddressSanitizer + UBSan build): a corpus of malformed
requests — invalid JSON and UTF-8, huge numbers, wrong types, deep nesting, empty or missing
fields, unsupported options, unknown model, over-long prompts, oversized bodies, wrong
methods and paths — each answered with the right status and an OpenAI-style error body
naming the field, the server still serving after every one; and API-key checks. The server
must exit 0 with no sanitizer report."""
import json
import socket

import pytest

from server_util import Server, make_model_dir, raw_http

KEY = "sk-test-123"
AUTH = {"Authorization": "Bearer " + KEY}
C, CHAT = "/v1/completions", "/v1/chat/completions"
U = [{"role": "user", "content": "Hi"}]


def body(**kw):
    return json.dumps(kw).encode()


# (path, raw body, status, param the error must name (None: not checked))
CORPUS = [
    (C, b"", 400, None),
    (C, b"{", 400, None),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"x\",}", 400, None),
    (C, b"[1, 2, 3]", 400, None),
    (C, b"\"just a string\"", 400, None),
    (C, b"null", 400, None),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"\xff\xfe bad utf8\"}", 400, None),
    (CHAT, b"{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"\xc3\x28\"}]}", 400, None),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"a\\u0000b\"}", 400, None),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"x\", \"max_tokens\": 99999999999999999999999999}", 400, None),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"x\", \"temperature\": 1e999}", 400, None),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"x\", \"max_tokens\": 1e300}", 400, "max_tokens"),
    (C, b"{\"model\": \"tiny\", \"prompt\": \"x\", \"seed\": 1.5}", 400, "seed"),
    (C, b"[" * 100000 + b"]" * 100000, 400, None),
    (C, b"{\"a\":" * 50000 + b"1" + b"}" * 50000, 400, None),
    (C, body(prompt="x"), 400, "model"),
    (C, body(model=5, prompt="x"), 400, "model"),
    (C, body(model="tiny"), 400, "prompt"),
    (C, body(model="tiny", prompt=None), 400, "prompt"),
    (C, body(model="tiny", prompt=5), 400, "prompt"),
    (C, body(model="tiny", prompt={"a": 1}), 400, "prompt"),
    (C, body(model="tiny", prompt=[]), 400, "prompt"),
    (C, body(model="tiny", prompt=["a", "b"]), 400, "prompt"),
    (C, body(model="tiny", prompt=[1, -2]), 400, "prompt"),
    (C, body(model="tiny", prompt=[1, 100000]), 400, "prompt"),
    (C, body(model="tiny", prompt=[1, "a"]), 400, "prompt"),
    (C, body(model="tiny", prompt=""), 400, "prompt"),
    (C, body(model="tiny", prompt="x", max_tokens="5"), 400, "max_tokens"),
    (C, body(model="tiny", prompt="x", max_tokens=0), 400, "max_tokens"),
    (C, body(model="tiny", prompt="x", max_tokens=-3), 400, "max_tokens"),
    (C, body(model="tiny", prompt="x", max_tokens=100000), 400, "max_tokens"),
    (C, body(model="tiny", prompt="x", temperature="hot"), 400, "temperature"),
    (C, body(model="tiny", prompt="x", temperature=3), 400, "temperature"),
    (C, body(model="tiny", prompt="x", top_p=0), 400, "top_p"),
    (C, body(model="tiny", prompt="x", top_p=1.5), 400, "top_p"),
    (C, body(model="tiny", prompt="x", top_k=-5), 400, "top_k"),
    (C, body(model="tiny", prompt="x", min_p=2), 400, "min_p"),
    (C, body(model="tiny", prompt="x", presence_penalty=9), 400, "presence_penalty"),
    (C, body(model="tiny", prompt="x", frequency_penalty=[1]), 400, "frequency_penalty"),
    (C, body(model="tiny", prompt="x", repetition_penalty=0), 400, "repetition_penalty"),
    (C, body(model="tiny", prompt="x", stop=5), 400, "stop"),
    (C, body(model="tiny", prompt="x", stop=["a", 5]), 400, "stop"),
    (C, body(model="tiny", prompt="x", stop=["s"] * 40), 400, "stop"),
    (C, body(model="tiny", prompt="x", n=2), 400, "n"),
    (C, body(model="tiny", prompt="x", n="1"), 400, "n"),
    (C, body(model="tiny", prompt="x", stream="yes"), 400, "stream"),
    (C, body(model="tiny", prompt="x", stream_options={"include_usage": True}), 400, "stream_options"),
    (C, body(model="tiny", prompt="x", stream=True, stream_options=[]), 400, "stream_options"),
    (C, body(model="tiny", prompt="x", logprobs=2), 400, "logprobs"),
    (C, body(model="tiny", prompt="x", echo=True), 400, "echo"),
    (C, body(model="tiny", prompt="x", best_of=3), 400, "best_of"),
    (C, body(model="tiny", prompt="x", suffix="tail"), 400, "suffix"),
    (C, body(model="tiny", prompt="x", user=7), 400, "user"),
    (C, body(model="tiny", prompt="hello " * 600), 400, "prompt"),
    (C, body(model="nope", prompt="x"), 404, "model"),
    (CHAT, body(model="tiny"), 400, "messages"),
    (CHAT, body(model="tiny", messages=[]), 400, "messages"),
    (CHAT, body(model="tiny", messages="hi"), 400, "messages"),
    (CHAT, body(model="tiny", messages=[5]), 400, "messages[0]"),
    (CHAT, body(model="tiny", messages=[{"content": "x"}]), 400, "messages[0].role"),
    (CHAT, body(model="tiny", messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
    (CHAT, body(model="tiny", messages=[{"role": 1, "content": "x"}]), 400, "messages[0].role"),
    (CHAT, body(model="tiny", messages=[{"role": "user"}]), 400, "messages[0].content"),
    (CHAT, body(model="tiny", messages=[{"role": "user", "content": 7}]), 400, "messages[0].content"),
    (CHAT, body(model="tiny", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, "messages[0].content"),
    (CHAT, body(model="tiny", messages=[{"role": "user", "content": [{"type": "text"}]}]), 400, "messages[0].content"),
    (CHAT, body(model="tiny", messages=U, logprobs=True), 400, "logprobs"),
    (CHAT, body(model="tiny", messages=U, top_logprobs=2), 400, "top_logprobs"),
    (CHAT, body(model="tiny", messages=U, max_completion_tokens=0), 400, "max_completion_tokens"),
    (CHAT, body(model="tiny", messages=[{"role": "user", "content": "hello " * 600}]), 400, "messages"),
    (CHAT, body(model="nope", messages=U), 404, "model"),
]

# accepted: unknown fields are ignored, nulls mean "default", the odd-but-valid forms
ACCEPTED = [
    (C, body(model="tiny", prompt="x", max_tokens=2, frobnicate={"a": [1, 2]}, user="u1")),
    (C, body(model="tiny", prompt=["x"], max_tokens=2, temperature=None, stop=None, seed=None)),
    (C, body(model="tiny", prompt=[[5, 6, 7]], max_tokens=2, logprobs=None, n=1)),
    (C, body(model="tiny", prompt="x", max_tokens=2.0, seed=-5, top_k=-1)),
    (CHAT, body(model="tiny", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                                        {"role": "assistant", "content": None}, {"role": "user", "content": "v"}],
                max_tokens=2, logprobs=False, tools=[], response_format={"type": "text"})),
]


@pytest.fixture(scope="module")
def server(zerostart_asan, tmp_path_factory):
    d, _ = make_model_dir(tmp_path_factory.mktemp("serve_err"))
    srv = Server(zerostart_asan, d, "--name", "tiny", "--api-key", KEY, "--max-body", "1M",
                 "--threads", "2")
    yield srv
    rc = srv.stop()
    log = srv.log()
    assert rc == 0, log[-4000:]
    assert "AddressSanitizer" not in log and "runtime error" not in log, log[-4000:]


def check_error(st, raw, want_status, param):
    assert st == want_status, raw[:500]
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] in ("invalid_request_error", "server_error")
    if param is not None:
        assert err["param"] == param, err


@pytest.mark.parametrize("case", range(len(CORPUS)))
def test_malformed(server, case):
    path, raw, status, param = CORPUS[case]
    st, _, resp = server.post(path, raw, headers=AUTH)
    check_error(st, resp, status, param)
    st, _, _ = server.get("/health")
    assert st == 200


def test_context_limit_message(server):
    st, _, resp = server.post(C, body(model="tiny", prompt="hello " * 600), headers=AUTH)
    msg = json.loads(resp)["error"]["message"]
    assert st == 400 and "512" in msg and "context length" in msg


def test_accepted(server):
    for path, raw in ACCEPTED:
        st, _, resp = server.post(path, raw, headers=AUTH)
        assert st == 200, resp[:500]
        assert json.loads(resp)["choices"][0]["finish_reason"] in ("stop", "length")


def _read_response(sock):
    """Everything the server sends until it closes (a reset after the response ends it too)."""
    chunks = []
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_body_too_large(server):
    # Content-Length over the cap: refused from the headers alone, before any body is sent (a
    # client still uploading when the server closes would see a reset instead of the answer).
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (2 << 20))
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    try:
        s.sendall(head)
        resp = _read_response(s)
    finally:
        s.close()
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    body = resp.split(b"\r\n\r\n", 1)[1]
    assert b"error" in body
    # chunked upload without Content-Length: the cap applies while reading (the server reads the
    # whole upload, discarding past the cap, and answers once it ends)
    chunk = b"a" * 65536
    req = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           b"Authorization: Bearer " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    req += (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20 + b"0\r\n\r\n"
    resp = raw_http(server.port, req)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    assert server.get("/health")[0] == 200


def test_methods_and_paths(server):
    assert server.get("/nope")[0] == 404
    assert server.get("/v1/completions", headers=AUTH)[0] == 405
    st, _, resp = server.post("/v1/models", b"{}", headers=AUTH)
    check_error(st, resp, 405, None)
    st, _, resp = server.post("/health", b"{}")
    assert st == 405


def test_garbage_http(server):
    for junk in (b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                 b"POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\n\r\n"):
        try:
            raw_http(server.port, junk, timeout=30)
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
        assert server.get("/health")[0] == 200


def test_api_key(server):
    ok = body(model="tiny", prompt="x", max_tokens=2)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                    {"Authorization": "Basic " + KEY}, {"Authorization": "Bearer " + KEY + "x"}):
        st, h, resp = server.post(C, ok, headers=headers)
        check_error(st, resp, 401, None)
        assert h.get("WWW-Authenticate") == "Bearer"
    assert server.get("/v1/models")[0] == 401
    assert server.get("/v1/models", headers=AUTH)[0] == 200
    assert server.post(C, ok, headers=AUTH)[0] == 200
    assert server.post(C, ok, headers={"Authorization": "bearer " + KEY})[0] == 200
    # health and metrics stay open for probes and scrapers
    assert server.get("/health")[0] == 200
    assert server.get("/metrics")[0] == 200
    assert server.metrics()['zerostart_requests_total{code="401"}'] >= 5
