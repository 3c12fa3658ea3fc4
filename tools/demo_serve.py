#!/usr/bin/env python3
"""Second half of `make demo`: start `zerostart serve` on the demo model, send one streaming
chat request (plain HTTP + server-sent events, standard library only), print the reply as it
arrives and the server's start-up timeline, then stop the server with SIGTERM.

    python3 tools/demo_serve.py build/rel/zerostart build/demo-model
"""
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def main():
    binary, model = sys.argv[1], sys.argv[2]
    log = tempfile.NamedTemporaryFile(prefix="zerostart-demo-", suffix=".log", delete=False)
    t0 = time.monotonic()
    srv = subprocess.Popen([binary, "serve", model, "--name", "demo", "--host", "127.0.0.1", "--port", "0"],
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        port = None
        while port is None and time.monotonic() - t0 < 60 and srv.poll() is None:
            m = re.search(rb"listening on http://[^:]+:(\d+)", open(log.name, "rb").read())
            port = int(m.group(1)) if m else None
            time.sleep(0.01)
        if port is None:
            sys.exit("zerostart serve did not start:\n" + open(log.name).read()[-3000:])
        ready = time.monotonic() - t0
        print(f"server ready on port {port} {ready:.3f} s after start; streaming a chat request "
              "(random weights: the reply is noise):\n")
        body = json.dumps({"model": "demo", "stream": True, "max_tokens": 32, "temperature": 0,
                           "stream_options": {"include_usage": True},
                           "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                        {"role": "user", "content": "Why does start-up speed matter?"}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        t_req, t_first, usage = time.monotonic(), None, None
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
                        sys.stdout.write(text)
                        sys.stdout.flush()
        print("\n")
        if t_first:
            print(f"first token {t_first - t_req:.3f} s after the request; usage {usage}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            lines = [l for l in r.read().decode().splitlines() if l.startswith("zerostart_") and "bucket" not in l]
        print("metrics (excerpt):\n  " + "\n  ".join(lines[:12]))
    finally:
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(timeout=60)
        timeline = [l for l in open(log.name).read().splitlines() if "start-up" in l or "ready" in l]
        print("\nserver log (start-up):\n  " + "\n  ".join(timeline[:6]))
        print(f"server stopped (exit {rc})")


if __name__ == "__main__":
    main()
