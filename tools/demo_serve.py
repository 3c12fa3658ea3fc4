#!/usr/bin/env python3
"""Second half of `make demo`: start `zerostart serve` on the demo model with a hot model pool,
a one-second keep-alive and a KV store; stream a chat turn (a cold start: the weights came from
storage); wait until the model has scaled to zero; stream the conversation's next turn (a pool
start: the weights come back from the pinned pool, the first turn's KV from the KV store's host
tier); print both start-up timelines and the KV usage; stop the server with SIGTERM. Plain HTTP
and server-sent events, standard library only.

    python3 tools/demo_serve.py build/rel/zerostart build/demo-model
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return r.read().decode()


def chat(port, messages):
    """Streams one chat completion; returns (reply, seconds to the first token, usage)."""
    body = json.dumps({"model": "demo", "stream": True, "max_tokens": 32, "temperature": 0,
                       "stream_options": {"include_usage": True}, "messages": messages}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    t_req, t_first, usage, reply = time.monotonic(), None, None, ""
    with urllib.request.urlopen(req, timeout=120) as r:
        for raw in r:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for c in chunk.get("choices", []):
                text = c.get("delta", {}).get("content")
                if text:
                    t_first = t_first or time.monotonic()
                    reply += text
                    sys.stdout.write(text)
                    sys.stdout.flush()
    print("\n")
    return reply, (t_first - t_req) if t_first else None, usage


def describe(usage):
    kv = usage.get("kv_cache", {})
    return (f"prompt {usage['prompt_tokens']} tokens: {kv.get('gpu_tokens', 0)} from the GPU KV cache, "
            f"{kv.get('host_tokens', 0)} restored from host memory, {kv.get('disk_tokens', 0)} from disk, "
            f"{kv.get('computed_tokens', usage['prompt_tokens'])} computed")


def timeline(rec):
    def t(k):
        v = rec.get(k)
        return "-" if v is None else f"{v:.3f} s"
    kv = rec.get("kv_cache") or {}
    return (f"start {rec['seq']} ({rec['trigger']}): weights from {rec.get('source')}, "
            f"{rec.get('bytes', 0) / 1e6:.1f} MB at {rec.get('load_gbps', 0):.2f} GB/s | placed {t('placed_s')} | "
            f"layer 0 {t('first_layer_s')} | all weights {t('weights_s')} | engine {t('engine_s')} | "
            f"first token {t('first_token_s')}"
            + (f" | KV restored {kv.get('host_tokens', 0) + kv.get('disk_tokens', 0)} tokens" if kv else ""))


def main():
    binary, model = sys.argv[1], sys.argv[2]
    pool_dir = tempfile.mkdtemp(prefix="zerostart-demo-pool-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    log = tempfile.NamedTemporaryFile(prefix="zerostart-demo-", suffix=".log", delete=False)
    log_path = log.name
    t0 = time.monotonic()
    srv = subprocess.Popen([binary, "serve", model, "--name", "demo", "--host", "127.0.0.1", "--port", "0",
                            "--pool-size", "2G", "--pool-dir", pool_dir, "--keep-alive", "1",
                            "--kv-host", "256M"], stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        while port is None and time.monotonic() - t0 < 60 and srv.poll() is None:
            m = re.search(rb"listening on http://[^:]+:(\d+)", open(log_path, "rb").read())
            port = int(m.group(1)) if m else None
            time.sleep(0.01)
        if port is None:
            sys.exit("zerostart serve did not start:\n" + open(log_path).read()[-3000:])
        print(f"server ready on port {port} {time.monotonic() - t0:.3f} s after start (weights read into the "
              "hot model pool, then to the device); streaming a chat request (random weights: the reply is "
              "noise):\n")
        messages = [{"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": "Why does start-up speed matter?"}]
        reply, ttft, usage = chat(port, messages)
        print(f"first token {ttft:.3f} s after the request; {describe(usage)}")

        deadline = time.monotonic() + 30
        while json.loads(get(port, "/v1/models/demo"))["state"] != "unloaded" and time.monotonic() < deadline:
            time.sleep(0.05)
        info = json.loads(get(port, "/v1/models/demo"))
        print(f"\nidle for the 1 s keep-alive: the model is now {info['state']} (weights kept in the "
              f"{info['location']}); the conversation's next turn brings it back:\n")
        messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And for a server?"}]
        _, ttft, usage = chat(port, messages)
        print(f"first token {ttft:.3f} s after the request, model start included; {describe(usage)}")

        starts = json.loads(get(port, "/v1/models/demo/startups"))["data"]
        print("\nstart-up timelines (seconds from the start's beginning):\n  " +
              "\n  ".join(timeline(r) for r in starts))
        lines = [l for l in get(port, "/metrics").splitlines()
                 if l.startswith("zerostart_") and "bucket" not in l and
                 any(k in l for k in ("requests_total", "time_to_first_token_seconds_sum", "model_starts_total",
                                      "kv_prompt_tokens_total", "kv_store_host_blocks"))]
        print("\nmetrics (excerpt):\n  " + "\n  ".join(lines))
    finally:
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(timeout=60)
        log.close()
        print(f"\nserver stopped (exit {rc}); its log: {log_path}")
        shutil.rmtree(pool_dir, ignore_errors=True)  # the demo's pool segment


if __name__ == "__main__":
    main()
