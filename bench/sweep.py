#!/usr/bin/env python3
"""Tuning sweep for the loader on a GPU machine: zerostart warm loads over reader threads,
chunk sizes and staging slots; cold storage reads (O_DIRECT and buffered) over threads and
chunk sizes, each after dropping the page cache; zerostart cold loads for a few settings.
Prints a table per part and writes everything as JSON.

    python3 bench/sweep.py --zerostart build/dev/zerostart --model /tmp/zs-m8b --out sweep.json
"""
import argparse
import glob
import itertools
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import drop_caches, warm_files  # noqa: E402


def zs_load(zs, model, extra):
    r = subprocess.run([zs, "load", model, "--device", "cuda:0", "--json", *extra], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def probe(zs, files, kind, threads, chunk):
    r = subprocess.run([zs, "probe", kind, "--threads", str(threads), "--chunk", chunk, *files],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-300:]}
    return next(iter(json.loads(r.stdout).values()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zerostart", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", default="8,16,24,32")
    ap.add_argument("--chunks", default="1M,2M,4M,8M")
    ap.add_argument("--slots", default="2,4")
    ap.add_argument("--cold-files", type=int, default=2, help="shards used for the cold read probes")
    ap.add_argument("--cold-loads", default="16:4M:2,32:4M:4,32:16M:2")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.model, "*.safetensors")))
    out = {"warm": [], "cold_probe": [], "cold_load": []}

    warm_files(files)
    print("warm loads: threads chunk slots -> setup_s load_s GB/s", flush=True)
    for t, c, s in itertools.product(args.threads.split(","), args.chunks.split(","), args.slots.split(",")):
        r = zs_load(args.zerostart, args.model, ["--threads", t, "--chunk", c, "--slots", s])
        r.update(threads_arg=t, chunk_arg=c, slots_arg=s)
        out["warm"].append(r)
        if "error" in r:
            print(f"  {t:>3} {c:>4} {s}: {r['error']}", flush=True)
        else:
            print(f"  {t:>3} {c:>4} {s}: {r['setup_s']:.3f} {r['load_s']:.3f} {r['gbps']:6.2f}", flush=True)

    cold_files = files[: args.cold_files]
    print(f"cold reads of {len(cold_files)} shard(s): mode threads chunk -> GB/s", flush=True)
    for kind, t, c in [("--disk", 16, "4M"), ("--disk", 32, "4M"), ("--disk", 64, "4M"), ("--disk", 32, "16M"),
                       ("--disk", 64, "16M"), ("--disk", 16, "64M"), ("--cache", 16, "4M"), ("--cache", 16, "64M"),
                       ("--cache", 4, "64M"), ("--cache", 64, "4M")]:
        drop_caches()
        r = probe(args.zerostart, cold_files, kind, t, c)
        r.update(mode="odirect" if kind == "--disk" else "buffered", threads=t, chunk=c)
        out["cold_probe"].append(r)
        print(f"  {r['mode']:8s} {t:>3} {c:>4}: {r.get('gbps', r.get('error'))}", flush=True)

    print("cold zerostart loads: threads chunk slots -> load_s GB/s direct%", flush=True)
    for spec in args.cold_loads.split(","):
        t, c, s = spec.split(":")
        drop_caches()
        r = zs_load(args.zerostart, args.model, ["--threads", t, "--chunk", c, "--slots", s])
        r.update(threads_arg=t, chunk_arg=c, slots_arg=s)
        out["cold_load"].append(r)
        if "error" in r:
            print(f"  {spec}: {r['error']}", flush=True)
        else:
            print(f"  {t:>3} {c:>4} {s}: {r['load_s']:.3f} {r['gbps']:6.2f} "
                  f"{100 * r['bytes_direct'] / r['bytes']:.0f}%", flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
