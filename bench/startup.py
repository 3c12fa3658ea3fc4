#!/usr/bin/env python3
"""Fresh-process start-up to first token with `zerostart run` (one greedy token of a short
prompt), in three states: checkpoint files in the page cache (warm), page cache dropped
(cold), and weights in the hot model pool (pool; filled first by `zerostart pool warm`).
Each run's start-up timeline (config, tokenizer, layer 0, weights, engine, first token, source
tier, GB/s) comes from `--timeline-json`; process_s is measured from the spawn.

    python3 bench/startup.py --zerostart build/dev/zerostart --model /tmp/zs-m8b --out startup.json
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import drop_caches, warm_files  # noqa: E402


def run(zs, model, extra, env):
    tl = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    t0 = time.monotonic()
    r = subprocess.run([zs, "run", model, "-p", "Hello world", "--max-tokens", "1", "--device", "cuda:0",
                        "--timeline-json", tl, *extra], capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    d = json.load(open(tl))
    d["process_wall_s"] = round(wall, 4)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zerostart", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pool-dir", default="/dev/shm/zerostart-pool")
    ap.add_argument("--device-name", default="")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.model, "*.safetensors")))
    env = dict(os.environ, ZS_POOL_DIR=args.pool_dir)
    res = {"device": args.device_name, "date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
           "rows": []}
    warm_files(files)
    run(args.zerostart, args.model, [], env)  # first use of the GPU in this machine's life: not counted
    for case, prep, extra in [("warm", lambda: warm_files(files), []), ("cold", drop_caches, []),
                              ("pool", None, ["--pool"])]:
        if case == "pool":
            t = time.monotonic()
            subprocess.run([args.zerostart, "pool", "warm", args.model], check=True, env=env, capture_output=True)
            res["pool_fill_s"] = round(time.monotonic() - t, 3)
        else:
            prep()
        d = run(args.zerostart, args.model, extra, env)
        d["case"] = case
        res["rows"].append(d)
        print(f"{case:5s}: first token {d['first_token_s']:.3f} s after start (process {d['process_wall_s']:.3f} s), "
              f"weights {d['weights_s']:.3f} s from {d['source']} at {d['load_gbps']:.1f} GB/s, "
              f"layer 0 at {d['first_layer_s']:.3f} s, pool/pin {d['pool_s']:.3f} s", flush=True)
    subprocess.run([args.zerostart, "pool", "evict", args.model], env=env, capture_output=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
