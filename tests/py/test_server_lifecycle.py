"""`zerostart serve` lifecycle: graceful SIGTERM with a stream in flight (no new connections,
the stream completes, exit 0), the shutdown deadline cancelling what is left, a bounded
queue answering 503 with Retry-After, and a JSON config file serving two models. A
scheduler step delay (--step-delay-ms) keeps requests running long enough to observe; the
tests wait on observable states (/metrics), never on timings."""
import json
import signal
import socket
import threading
import time

import pytest

from server_util import Server, serve_binary, dechunk, make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("serve_life"))[0]


def start_stream(port, max_tokens, prompt="Hello world"):
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    buf = b""
    while b"data: {" not in buf:
        b = s.recv(4096)
        assert b, "closed before the first event"
        buf += b
    return s, buf


def read_all(s, buf):
    """Reads to the end; returns the de-chunked SSE payload."""
    while True:
        b = s.recv(65536)
        if not b:
            break
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    return dechunk(rest)


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except (ConnectionRefusedError, OSError):
        return True


def test_graceful_shutdown_finishes_inflight(request, model_dir):
    zerostart = serve_binary(request)
    srv = Server(zerostart, model_dir, "--name", "tiny", "--step-delay-ms", "20")
    try:
        s, buf = start_stream(srv.port, 60)
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not refused(srv.port) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refused(srv.port), "still accepting connections after SIGTERM"
        out = read_all(s, buf)
        s.close()
        assert out.rstrip().endswith(b"data: [DONE]")
        events = [json.loads(e[6:]) for e in out.split(b"\n\n") if e.startswith(b"data: {")]
        fin = [e["choices"][0]["finish_reason"] for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
        usage = events[-1]["usage"]
        assert len(fin) == 1 and usage["completion_tokens"] >= 1
        if fin[0] == "length":
            assert usage["completion_tokens"] == 60
        assert srv.proc.wait(60) == 0
    finally:
        srv.stop()
    assert "exited cleanly (0 requests cancelled" in srv.log()


def test_shutdown_deadline_cancels(request, model_dir):
    zerostart = serve_binary(request)
    srv = Server(zerostart, model_dir, "--name", "tiny", "--step-delay-ms", "50",
                 "--shutdown-timeout", "1")
    try:
        s, buf = start_stream(srv.port, 400)
        srv.proc.send_signal(signal.SIGTERM)
        out = read_all(s, buf)
        s.close()
        assert srv.proc.wait(60) == 0
        assert b"shutting down" in out  # the error event
        assert out.rstrip().endswith(b"data: [DONE]")
    finally:
        srv.stop()
    assert "exited cleanly (1 requests cancelled" in srv.log()


def test_queue_full_503(request, model_dir):
    zerostart = serve_binary(request)
    with Server(zerostart, model_dir, "--name", "tiny", "--step-delay-ms", "20",
                "--max-batch", "1", "--max-queue", "1") as srv:
        a, _ = start_stream(srv.port, 300)               # occupies the only batch slot
        res = {}
        t = threading.Thread(target=lambda: res.setdefault(
            "b", srv.post("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2})))
        t.start()                                        # waits in the queue
        srv.wait_metric('zerostart_queue_length{model="tiny"}', lambda v: v == 1)
        st, h, resp = srv.post("/v1/completions", {"model": "tiny", "prompt": "y", "max_tokens": 2})
        assert st == 503 and h.get("Retry-After") == "1"
        assert json.loads(resp)["error"]["code"] == "overloaded"
        a.close()                                        # frees the slot: B runs
        t.join(120)
        assert res["b"][0] == 200
        srv.wait_metric('zerostart_kv_blocks_in_use{model="tiny"}', lambda v: v == 0)
        assert srv.stop() == 0


def test_config_file_two_models(request, model_dir, tmp_path):
    zerostart = serve_binary(request)
    cfg = tmp_path / "serve.json"
    cfg.write_text(json.dumps({"max_queue": 8, "models": [
        {"name": "a", "path": model_dir, "ctx": 256, "kv_mem": "8M"},
        {"name": "b", "path": model_dir, "device": "cpu"}]}))
    with Server(zerostart, None, "--config", str(cfg), log_path=str(tmp_path / "serve.log")) as srv:
        st, _, resp = srv.get("/v1/models")
        data = json.loads(resp)["data"]
        assert st == 200 and [(m["id"], m["max_model_len"]) for m in data] == [("a", 256), ("b", 512)]
        outs = []
        for name in ("a", "b"):
            st, _, resp = srv.post("/v1/completions", {"model": name, "prompt": "Hello", "max_tokens": 5,
                                                       "temperature": 0})
            assert st == 200
            outs.append(json.loads(resp)["choices"][0]["text"])
        assert outs[0] == outs[1]                        # same weights, same greedy text
        assert srv.stop() == 0


def test_bad_config_refused(request, model_dir, tmp_path):
    zerostart = serve_binary(request)
    import subprocess
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"models": [{"name": "a"}]}))
    p = subprocess.run([str(zerostart), "serve", "--config", str(cfg)], capture_output=True, timeout=60)
    assert p.returncode != 0 and b"path" in p.stderr
    p = subprocess.run([str(zerostart), "serve", model_dir, "--port", "99999"], capture_output=True, timeout=60)
    assert p.returncode == 2 and b"--port" in p.stderr
