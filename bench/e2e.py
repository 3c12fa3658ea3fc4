#!/usr/bin/env python3
"""Start-up benchmark (issue: scale from zero), request -> first streamed token, 8B shape:
  pool        a running server whose model was scaled to zero (keep-alive expired), weights in
              the hot model pool: time from the request to the first streamed token;
  fresh_warm  a fresh `zerostart serve` process, checkpoint in the page cache: time from the
              spawn to the first streamed token of a request sent as soon as the port answers;
  fresh_cold  the same with the page cache dropped;
and in the same run the baseline (a fresh Python process: transformers from_pretrained +
streamed generate, warm and cold) and the ceilings (disk, page cache, pinned host->GPU).
Writes JSON and, where matplotlib is available, a PNG chart.

    python3 bench/e2e.py --zerostart build/dev/zerostart --model /tmp/zs-m8b --out e2e.json --png e2e.png
"""
import argparse
import datetime
import glob
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import drop_caches, warm_files  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def stream_first_token(port, timeout=600):
    """Sends a streaming chat request; returns the monotonic time of the first content chunk."""
    body = json.dumps({"model": "m", "stream": True, "max_tokens": 4, "temperature": 0, "ignore_eos": True,
                       "messages": [{"role": "user", "content": "Hello world"}]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    first = None
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("data: {") and first is None:
            chunk = json.loads(line[6:])
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = time.monotonic()
    conn.close()
    return first


def start_server(zs, model, device, extra, log_path):
    log = open(log_path, "wb")
    t0 = time.monotonic()
    p = subprocess.Popen([zs, "serve", model, "--name", "m", "--device", device, "--host", "127.0.0.1",
                          "--port", "0", "--kv-mem", "2G", *extra], stdout=log, stderr=subprocess.STDOUT)
    port = None
    while port is None and p.poll() is None and time.monotonic() - t0 < 600:
        m = re.search(rb"listening on http://[^:]+:(\d+)", open(log_path, "rb").read())
        port = int(m.group(1)) if m else None
        time.sleep(0.002)
    if port is None:
        raise RuntimeError("server did not start: " + open(log_path, "rb").read()[-2000:].decode("utf-8", "replace"))
    return p, port, t0


def stop_server(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()


def get_json(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path)
    r = conn.getresponse()
    return json.loads(r.read())


def fresh_case(args, files, state, log_path):
    """Returns (spawn -> first token, the server's start-up records)."""
    drop_caches() if state == "cold" else warm_files(files)
    p, port, t0 = start_server(args.zerostart, args.model, args.device, args.server_arg, log_path)
    try:
        first = stream_first_token(port)
        startups = wait_startups(port, time.monotonic() + 120)
    finally:
        stop_server(p)
    return first - t0, startups


def wait_startups(port, deadline):
    """GET /v1/models/m/startups once no start is running (an overlapped start completes its
    record when the loader ends, maybe after the first token)."""
    while True:
        startups = get_json(port, "/v1/models/m/startups")
        if all(s.get("state") != "starting" for s in startups["data"]) or time.monotonic() > deadline:
            return startups
        time.sleep(0.05)


def pool_case(args, log_path):
    p, port, _ = start_server(args.zerostart, args.model, args.device,
                              ["--pool-size", args.pool_size, "--keep-alive", "1", *args.server_arg], log_path)
    try:
        stream_first_token(port)  # the first request after start (the model is resident)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the keep-alive to scale it to zero
            models = get_json(port, "/v1/models")["data"]
            if any(m.get("id") == "m" and m.get("state") == "unloaded" for m in models):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("the model was not scaled to zero")
        t = time.monotonic()
        first = stream_first_token(port)
        return first - t, wait_startups(port, time.monotonic() + 120)
    finally:
        stop_server(p)


def transformers_case(args, files, state):
    drop_caches() if state == "cold" else warm_files(files)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, os.path.join(HERE, "peers", "transformers_first_token.py"), args.model],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])["first_token_mono"] - t0


def chart(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = result["rows"]
    labels = [f"{r['name']}\n{r['case']}" for r in rows]
    vals = [r["ttft_s"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    bars = ax.barh(labels, vals, color=["#2a7" if r["name"] == "zerostart" else "#c55" for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("request -> first streamed token (s, log scale)")
    ax.set_title(f"8B-shaped bf16 model, {result['device']}")
    for b, v in zip(bars, vals):
        ax.text(v, b.get_y() + b.get_height() / 2, f" {v:.2f} s", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zerostart", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--pool-size", default="40G")
    ap.add_argument("--cases", default="pool,fresh_warm,fresh_cold,tf_warm,tf_cold")
    ap.add_argument("--device-name", default="")
    ap.add_argument("--server-arg", action="append", default=[], help="extra argument for every server (repeat)")
    ap.add_argument("--no-ceilings", action="store_true", help="skip the ceiling probes (a quick rerun of some cases)")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.model, "*.safetensors")))
    nbytes = sum(os.path.getsize(f) for f in files)
    res = {"device": args.device_name, "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
           "model_bytes": nbytes, "ceilings": {}, "rows": [], "errors": []}
    log = tempfile.NamedTemporaryFile(prefix="zs-e2e-", suffix=".log", delete=False).name
    cases = args.cases.split(",")
    if args.device.startswith("cuda") and not args.no_ceilings:
        drop_caches()
        disk = json.loads(subprocess.run([args.zerostart, "probe", "--cache", "--threads", "4", "--chunk", "64M",
                                          *files], capture_output=True, text=True, check=True).stdout)
        cache = json.loads(subprocess.run([args.zerostart, "probe", "--cache", "--threads", "16", "--chunk", "1M",
                                           "--h2d", "4G", *files], capture_output=True, text=True, check=True).stdout)
        res["ceilings"] = {"disk_gbps": disk["pagecache"]["gbps"], "pagecache_gbps": cache["pagecache"]["gbps"],
                           "h2d_pinned_gbps": cache["h2d_pinned"]["gbps"]}
        print("ceilings:", res["ceilings"], flush=True)
    for case in cases:
        try:
            if case == "pool":
                t, startups = pool_case(args, log)
                res["pool_startups"] = startups
                row = {"name": "zerostart", "case": "pool", "ttft_s": round(t, 4)}
            elif case in ("fresh_warm", "fresh_cold"):
                t, startups = fresh_case(args, files, case.split("_")[1], log)
                res[case + "_startups"] = startups
                row = {"name": "zerostart", "case": case, "ttft_s": round(t, 4)}
            else:
                row = {"name": "transformers", "case": "fresh_" + case.split("_")[1],
                       "ttft_s": round(transformers_case(args, files, case.split("_")[1]), 4)}
        except Exception as e:  # recorded, the other cases still run
            res["errors"].append({"case": case, "error": str(e)[-1500:]})
            print(f"{case}: {e}", flush=True)
            continue
        res["rows"].append(row)
        print(f"{row['name']:12s} {row['case']:10s} {row['ttft_s']:8.3f} s", flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    if args.png:
        chart(res, args.png)


if __name__ == "__main__":
    main()
