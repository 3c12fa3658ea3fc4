#!/usr/bin/env python3
"""Serving benchmark (issue: OpenAI-compatible server): `zerostart serve` on a model, then
for 1, 8 and 32 concurrent streams, requests with 512-token prompts (token ids, so every
prompt is exactly that long) and 128 output tokens (`ignore_eos`), streamed. Per level:
output tokens/s over the level's wall time, time to first token and inter-token latency
percentiles (p50/p90/p99), measured on the client from the streamed chunks. Standard library
only.

    python3 bench/serve.py --zerostart build/dev/zerostart --model /tmp/zs-m8b --device cuda:0 --out serve.json
"""
import argparse
import datetime
import http.client
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def one_request(port, prompt_ids, out_tokens, res):
    body = json.dumps({"model": "m", "prompt": prompt_ids, "max_tokens": out_tokens, "temperature": 0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        res.update(error=f"HTTP {r.status}: {r.read()[:300]!r}")
        return
    times, usage = [], None
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        usage = chunk.get("usage") or usage
        if any(c.get("text") for c in chunk.get("choices", [])):
            times.append(time.monotonic())
    conn.close()
    res.update(t0=t0, times=times, usage=usage, end=time.monotonic())


def run_level(port, conc, nreq, prompt_tokens, out_tokens, vocab_lo, vocab_hi, rng):
    results = [dict() for _ in range(nreq)]
    prompts = [[rng.randrange(vocab_lo, vocab_hi) for _ in range(prompt_tokens)] for _ in range(nreq)]
    next_i = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= nreq:
                return
            one_request(port, prompts[i], out_tokens, results[i])

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r and r.get("times")]
    ttft = [r["times"][0] - r["t0"] for r in ok]
    itl = [b - a for r in ok for a, b in zip(r["times"], r["times"][1:])]
    out = sum((r["usage"] or {}).get("completion_tokens", 0) for r in ok)
    ms = lambda x: None if x is None else round(x * 1000, 2)
    return {"concurrency": conc, "requests": nreq, "errors": len(errors), "error_examples": errors[:3],
            "wall_s": round(wall, 3), "output_tokens": out, "output_tok_s": round(out / wall, 1),
            "ttft_ms": {"p50": ms(pct(ttft, 50)), "p90": ms(pct(ttft, 90)), "p99": ms(pct(ttft, 99))},
            "itl_ms": {"p50": ms(pct(itl, 50)), "p90": ms(pct(itl, 90)), "p99": ms(pct(itl, 99)),
                       "mean": ms(statistics.mean(itl) if itl else None)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zerostart", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--kv-mem", default="8G")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="requests per level = rounds x concurrency (min 4)")
    ap.add_argument("--device-name", default="")
    args = ap.parse_args()
    log = tempfile.NamedTemporaryFile(prefix="zs-serve-bench-", suffix=".log", delete=False)
    t_start = time.monotonic()
    srv = subprocess.Popen([args.zerostart, "serve", args.model, "--name", "m", "--device", args.device,
                            "--host", "127.0.0.1", "--port", "0", "--kv-mem", args.kv_mem, "--max-queue", "1024"],
                           stdout=log, stderr=subprocess.STDOUT)
    result = {"device": args.device_name, "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
              "prompt_tokens": args.prompt_tokens, "output_tokens": args.output_tokens, "levels": []}
    try:
        port = None
        while port is None and srv.poll() is None and time.monotonic() - t_start < 300:
            m = re.search(rb"listening on http://[^:]+:(\d+)", open(log.name, "rb").read())
            port = int(m.group(1)) if m else None
            time.sleep(0.01)
        if port is None:
            sys.exit("server did not start:\n" + open(log.name).read()[-3000:])
        result["server_ready_s"] = round(time.monotonic() - t_start, 3)
        rng = random.Random(1)
        run_level(port, 1, 2, 32, 8, 0, 256, rng)  # warm-up
        for c in [int(x) for x in args.concurrency.split(",")]:
            lv = run_level(port, c, max(4, args.rounds * c), args.prompt_tokens, args.output_tokens, 0, 256, rng)
            result["levels"].append(lv)
            print(f"concurrency {c:3d}: {lv['output_tok_s']:8.1f} tok/s, TTFT p50 {lv['ttft_ms']['p50']} ms "
                  f"p99 {lv['ttft_ms']['p99']} ms, ITL p50 {lv['itl_ms']['p50']} ms p99 {lv['itl_ms']['p99']} ms, "
                  f"errors {lv['errors']}", flush=True)
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=120)
        except subprocess.TimeoutExpired:
            srv.kill()
        result["server_log_tail"] = open(log.name).read()[-2000:]
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
