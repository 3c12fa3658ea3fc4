#!/usr/bin/env python3
"""Weights-to-GPU benchmark (issue: weights at the speed of the hardware).

Each loader runs in a fresh process, in two states: "warm" (checkpoint files pre-read into the
page cache) and "cold" (page cache dropped with `sync; echo 3 > /proc/sys/vm/drop_caches`).
For each run: seconds from process start to weights resident on the GPU (process_s, from the
driver's monotonic clock before the spawn to the child's report after synchronising) and the
load's own seconds and GB/s (load_s: from the call that starts loading to resident; for
zerostart the load after CUDA set-up). In the same run it measures the ceilings: raw disk
read (best of O_DIRECT and buffered, before and after the loaders), page-cache read (best
over thread counts and chunk sizes) and pinned host->device copies.

    python3 bench/load.py --zerostart build/dev/zerostart --model /tmp/m8b --out load.json
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def warm_files(files):
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass


def run_child(cmd, env=None):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {' '.join(cmd[1:3])} failed: {r.stderr[-2000:]}")
    line = [l for l in r.stdout.splitlines() if l.startswith("{")][-1]
    rep = json.loads(line)
    rep["process_s"] = rep["resident_mono"] - t0
    return rep


def peer_cmd(script, args):
    return [sys.executable, os.path.join(HERE, "peers", script), args.model]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zerostart", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device-name", default="")
    ap.add_argument("--peers", default="safetensors,transformers,fastsafetensors,runai-model-streamer")
    ap.add_argument("--zs-reps", type=int, default=3)
    ap.add_argument("--peer-cold-reps", type=int, default=2)
    ap.add_argument("--states", default="warm,cold")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.model, "*.safetensors")))
    peers = {"safetensors": "safetensors_load.py", "transformers": "transformers_load.py",
             "fastsafetensors": "fastsafetensors_load.py", "runai-model-streamer": "runai_load.py"}
    result = {"device": args.device_name, "date": datetime.date.today().isoformat(),
              "command": " ".join(sys.argv), "model_bytes": None, "ceilings": {}, "loaders": [],
              "runs": [], "errors": []}

    # Ceilings, measured in this run. The disk is the best of O_DIRECT and buffered reads (each
    # after dropping the page cache), measured before the loaders and again after them, since a
    # virtual disk's speed drifts.
    def disk_ceiling():
        best = None
        for kind, threads, chunk in (("--disk", 16, "4M"), ("--cache", 4, "64M")):
            drop_caches()
            r = json.loads(subprocess.run([args.zerostart, "probe", kind, "--threads", str(threads), "--chunk", chunk,
                                           *files], capture_output=True, text=True, check=True).stdout)
            r = next(iter(r.values()))
            r["method"] = "O_DIRECT" if kind == "--disk" else "buffered"
            log(f"disk ceiling probe: {r['method']} {threads} threads x {chunk}: {r['gbps']:.3f} GB/s")
            if best is None or r["gbps"] > best["gbps"]:
                best = r
        return best

    log("ceiling: disk (cold)")
    disk_before = disk_ceiling()
    log("ceiling: page cache")
    warm_files(files)
    cache = json.loads(subprocess.run([args.zerostart, "probe", "--cache", "--threads", "8,16,32",
                                       "--chunk", "1M,4M,16M,64M", "--h2d", "4G", *files],
                                      capture_output=True, text=True, check=True).stdout)
    result["ceilings"] = {"disk_gbps": disk_before["gbps"], "pagecache_gbps": cache["pagecache"]["gbps"],
                          "h2d_pinned_gbps": cache["h2d_pinned"]["gbps"],
                          "detail": {"disk_before": disk_before, "pagecache": cache["pagecache"],
                                     "h2d": cache["h2d_pinned"]}}
    log("ceilings:", json.dumps(result["ceilings"]))

    # (name, command, reps warm, reps cold). Cold runs go in interleaved rounds so that a drift
    # of the disk's speed during the run affects every loader alike; each row reports the
    # median of its runs.
    zs = [args.zerostart, "load", args.model, "--device", "cuda:0", "--json"]
    loaders = [("zerostart", zs, args.zs_reps, args.zs_reps),
               ("zerostart --readahead", zs + ["--readahead"], 0, args.zs_reps)]
    for p in [p for p in args.peers.split(",") if p]:
        loaders.append((p, peer_cmd(peers[p], args), 1, 1 if p == "transformers" else args.peer_cold_reps))
    for state in args.states.split(","):
        runs = {name: [] for name, *_ in loaders}
        rounds = max(l[2] if state == "warm" else l[3] for l in loaders)
        for rnd in range(rounds):
            for name, cmd, reps_warm, reps_cold in loaders:
                if rnd >= (reps_warm if state == "warm" else reps_cold):
                    continue
                if state == "cold":
                    drop_caches()
                else:
                    warm_files(files)
                try:
                    r = run_child(cmd)
                except Exception as e:  # a peer that fails is recorded, not fatal
                    log(f"{name} {state}: {e}")
                    result["errors"].append({"name": name, "state": state, "error": str(e)[-1500:]})
                    continue
                r.update(name=name, state=state, rep=rnd)
                runs[name].append(r)
                result["runs"].append(r)
                with open(args.out, "w") as f:  # partial results survive a time limit
                    json.dump(result, f, indent=1)
                log(f"{name:22s} {state}: process {r['process_s']:.3f} s, load {r['load_s']:.3f} s, "
                    f"{r['bytes'] / r['load_s'] / 1e9:.2f} GB/s")
                if name == "zerostart":
                    result["model_bytes"] = r["bytes"]
        for name, *_ in loaders:
            rs = runs[name]
            if rs:
                med = sorted(rs, key=lambda x: x["process_s"])[(len(rs) - 1) // 2]  # median (lower)
                result["loaders"].append({"name": name, "state": state, "process_s": round(med["process_s"], 4),
                                          "load_s": round(med["load_s"], 4),
                                          "gbps": round(med["bytes"] / med["load_s"] / 1e9, 3),
                                          "reps": len(rs)})
    if "cold" in args.states:
        disk_after = disk_ceiling()
        result["ceilings"]["detail"]["disk_after"] = disk_after
        result["ceilings"]["disk_gbps"] = max(disk_before["gbps"], disk_after["gbps"])
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    c = result["ceilings"]
    print(f"ceilings: disk {c['disk_gbps']:.2f} GB/s, page cache {c['pagecache_gbps']:.2f} GB/s, "
          f"pinned H2D {c['h2d_pinned_gbps']:.2f} GB/s; model {result['model_bytes'] / 1e9:.2f} GB")
    print(f"{'loader':22s} {'state':5s} {'process_s':>9s} {'load_s':>8s} {'GB/s':>7s}")
    for l in result["loaders"]:
        print(f"{l['name']:22s} {l['state']:5s} {l['process_s']:9.3f} {l['load_s']:8.3f} {l['gbps']:7.2f}")


if __name__ == "__main__":
    main()
