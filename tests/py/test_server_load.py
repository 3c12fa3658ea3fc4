"""`zerostart serve` under load: 500 requests from 50 concurrent clients mixing chat and
completions, streaming and not, all complete and well-formed, with greedy outputs equal to
the result of the same request run alone and to `zerostart run` on the same prompt; then clients that disconnect mid-stream free
their sequences (KV blocks in use back to 0) while the server keeps serving."""
import concurrent.futures as cf
import json
import random
import socket
import subprocess
import threading

import openai
import pytest

from server_util import Server, serve_binary, make_model_dir

SYSTEM = "You are a helpful assistant. Answer briefly and politely."
PROMPTS = ["Hello world", "The quick brown fox jumps", "def encode(self, text: str)",
           "In 2024 the server handled", "naïve café résumé", "東京 😀 quotes",
           "It's what they'd say", "latency p50=12ms", "return [self.vocab[t]", "over the lazy dog"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("serve_load"))


def make_client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def run_one(client, kind, stream, prompt, max_tokens):
    if kind == "chat":
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        if stream:
            chunks = list(client.chat.completions.create(model="tiny", messages=msgs,
                          max_tokens=max_tokens, temperature=0, stream=True,
                          stream_options={"include_usage": True}))
            assert chunks[0].choices[0].delta.role == "assistant"
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            fins = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert len(fins) == 1 and chunks[-1].usage is not None
            return text, fins[0], chunks[-1].usage.completion_tokens
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=max_tokens,
                                           temperature=0)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens
    if stream:
        chunks = list(client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        fins = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(fins) == 1 and chunks[-1].usage is not None
        return text, fins[0], chunks[-1].usage.completion_tokens
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0)
    return r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens


def test_500_requests_50_clients(request, model):
    zerostart = serve_binary(request)
    with Server(zerostart, model[0], "--name", "tiny", "--threads", "2", "--max-batch", "32") as srv:
        cases = [(k, p, n) for k in ("chat", "completion") for p in PROMPTS for n in (4, 16)]
        solo_client = make_client(srv.url)
        # reference: each request alone on the idle server (a batch of one)
        ref = {c: run_one(solo_client, c[0], False, c[1], c[2]) for c in cases}
        # ... and equal to `zerostart run` on the same prompt (same tokenizer, template, stops)
        for (kind, prompt, n), (text, _, _) in ref.items():
            args = [str(zerostart), "run", str(model[0]), "-p", prompt, "--max-tokens", str(n), "--device", "cpu"]
            if kind == "chat":
                args += ["--chat", "--system", SYSTEM]
            r = subprocess.run(args, capture_output=True)
            assert r.returncode == 0, r.stderr.decode()
            assert r.stdout.decode("utf-8") == text + "\n", (kind, prompt, n)
        rng = random.Random(7)
        jobs = [(rng.choice(cases), rng.random() < 0.5) for _ in range(500)]
        clients = [make_client(srv.url) for _ in range(50)]
        lock = threading.Lock()
        errors = []

        def worker(i):
            cl = clients[i % 50]
            out = []
            for j in range(i, 500, 50):
                case, stream = jobs[j]
                try:
                    out.append((case, stream, run_one(cl, case[0], stream, case[1], case[2])))
                except Exception as e:  # noqa: BLE001 - collected and reported below
                    with lock:
                        errors.append(f"{case} stream={stream}: {e!r}")
            return out

        with cf.ThreadPoolExecutor(50) as ex:
            results = [r for f in [ex.submit(worker, i) for i in range(50)] for r in f.result()]
        assert errors == []
        assert len(results) == 500
        for case, stream, got in results:
            assert got == ref[case], (case, stream, got, ref[case])
        m = srv.metrics()
        assert m['zerostart_requests_total{code="200"}'] >= 500 + len(cases)
        assert m["zerostart_prefix_cache_hits_total"] > 0
        srv.wait_metric('zerostart_kv_blocks_in_use{model="tiny"}', lambda v: v == 0)
        assert srv.metrics()['zerostart_running_requests{model="tiny"}'] == 0
        assert not [k for k in m if k.startswith("zerostart_requests_total") and '"5' in k]
        assert srv.stop() == 0


def open_stream(port, prompt, max_tokens):
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    buf = b""
    while b"data: {" not in buf:
        b = s.recv(4096)
        assert b, "connection closed before the first event"
        buf += b
    return s


def test_disconnects_under_load(request, model):
    zerostart = serve_binary(request)
    # a step delay keeps the long streams running while their clients go away
    with Server(zerostart, model[0], "--name", "tiny", "--threads", "2",
                "--step-delay-ms", "5") as srv:
        client = make_client(srv.url)
        socks = [open_stream(srv.port, PROMPTS[i % len(PROMPTS)], 450) for i in range(12)]
        with cf.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(run_one, client, "completion", i % 2 == 0, PROMPTS[i % 10], 4)
                    for i in range(24)]
            for s in socks:
                s.close()
            done = [f.result() for f in futs]
        assert all(d[1] in ("stop", "length") for d in done)
        srv.wait_metric("zerostart_requests_cancelled_total", lambda v: v >= 12)
        srv.wait_metric('zerostart_kv_blocks_in_use{model="tiny"}', lambda v: v == 0)
        srv.wait_metric('zerostart_running_requests{model="tiny"}', lambda v: v == 0)
        # still serving, with the same greedy answer as before the disconnects
        a = run_one(client, "completion", False, PROMPTS[0], 6)
        b = run_one(client, "completion", True, PROMPTS[0], 6)
        assert a == b
        assert srv.stop() == 0
