#!/usr/bin/env python3
"""Tensor-parallel start-up on several GPUs of one machine (issue 7): a checkpoint too large for
one GPU, sliced over N GPUs with every byte read once.

For each case SHAPE:N (default: llama3-70b over 4 GPUs, llama3-70b-40l over 2) it
  1. writes the synthetic checkpoint if missing (`zerostart synth`, not timed);
  2. measures the ceilings in the same run: disk (best of O_DIRECT and buffered reads, page
     cache dropped), page cache (buffered, best over thread counts and chunk sizes) and pinned
     host->GPU copies into the N GPUs at the same time (`zerostart probe --h2d 4G --gpus N`:
     each GPU's rate and their sum);
  3. loads it with `zerostart load --tp N --json` (fresh process each run), warm (files in the
     page cache) and cold (`drop_caches` first): seconds from spawn to every shard resident,
     bytes read (must equal the checkpoint's tensor bytes), each GPU's bytes and GB/s; the
     first warm run also checks every shard byte against the files (--verify);
  4. starts `zerostart run --tp N` (fresh process, one greedy token of a short prompt), warm
     and cold: seconds from spawn to the first token, with the start-up timeline;
  5. optionally (--check-8b DIR) compares `run --tp N` with the one-GPU `run` on a model that
     fits one GPU: 32 greedy tokens, text equal or not (tests/gpu/run.sh's compare-tp is the
     authoritative check: it allows a difference only after a near-tie).
Results go to --out after every run (a time limit keeps what was measured).

    python3 bench/tp.py --zerostart build/dev/zerostart --out tp.json [--cases llama3-70b:4]
        [--model-root /tmp] [--reps 2] [--states warm,cold] [--device-name NAME]

--cpu runs the same stages on simulated CPU ranks (no GPU, no H2D ceiling): a smoke test of
this script, e.g. `--cpu --cases tiny:2 --states warm --reps 1`.
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
from load import drop_caches, log, warm_files  # noqa: E402


def probe(zs, *args):
    r = subprocess.run([zs, "probe", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"probe {' '.join(args[:4])}: {r.stderr[-1000:]}")
    return json.loads(r.stdout)


DEVICE = "cuda:0"


def ceilings(zs, files, ngpus):
    disk = None
    for kind, threads, chunk in (("--disk", "16", "4M"), ("--cache", "4", "64M")):
        drop_caches()
        d = next(iter(probe(zs, kind, "--threads", threads, "--chunk", chunk, *files).values()))
        d["method"] = "O_DIRECT" if kind == "--disk" else "buffered"
        if disk is None or d["gbps"] > disk["gbps"]:
            disk = d
    warm_files(files)
    cache = probe(zs, "--cache", "--threads", "8,16,32", "--chunk", "1M,4M,16M", *files)["pagecache"]
    if DEVICE == "cpu":
        return {"disk_gbps": disk["gbps"], "pagecache_gbps": cache["gbps"], "detail": {"disk": disk, "pagecache": cache}}
    h2d = probe(zs, "--h2d", "4G", "--gpus", str(ngpus))
    per_gpu = [g["gbps"] for g in h2d.get("h2d_gpus", [h2d["h2d_pinned"]])]
    return {"disk_gbps": disk["gbps"], "pagecache_gbps": cache["gbps"],
            "h2d_per_gpu_gbps": per_gpu, "h2d_sum_gbps": round(sum(per_gpu), 3),
            "detail": {"disk": disk, "pagecache": cache, "h2d": h2d}}


def load_once(zs, model, n, verify):
    t0 = time.monotonic()
    cmd = [zs, "load", model, "--tp", str(n), "--device", DEVICE, "--json"] + (["--verify"] if verify else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"load --tp {n}: {r.stderr[-2000:]}")
    d = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
    d["process_s"] = round(d["resident_mono"] - t0, 4)
    if d["bytes"] != d["checkpoint_bytes"]:
        raise RuntimeError(f"load --tp {n} read {d['bytes']} bytes, the checkpoint has {d['checkpoint_bytes']}")
    return d


def run_once(zs, model, n, max_tokens=1, prompt="Hello world"):
    tl = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    t0 = time.monotonic()
    r = subprocess.run([zs, "run", model, "-p", prompt, "--max-tokens", str(max_tokens), "--ignore-eos",
                        "--device", DEVICE, "--tp", str(n), "--timeline-json", tl], capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"run --tp {n}: {r.stderr[-2000:]}")
    d = json.load(open(tl))
    os.unlink(tl)
    d["process_wall_s"] = round(wall, 4)
    d["text"] = r.stdout
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zerostart", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default="llama3-70b:4,llama3-70b-40l:2", help="SHAPE:GPUS,...")
    ap.add_argument("--model-root", default="/tmp")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--states", default="warm,cold")
    ap.add_argument("--check-8b", default="", help="a model directory that fits one GPU")
    ap.add_argument("--device-name", default="")
    ap.add_argument("--cpu", action="store_true", help="simulated CPU ranks (smoke test of this script)")
    args = ap.parse_args()
    global DEVICE
    if args.cpu:
        DEVICE = "cpu"
        ngpu_here = 64
    else:
        ngpu_here = int(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.count("GPU "))
    res = {"device": args.device_name, "gpus": ngpu_here, "date": datetime.date.today().isoformat(),
           "command": " ".join(sys.argv), "cases": [], "errors": []}

    def save():
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    for case in [c for c in args.cases.split(",") if c]:
        shape, n = case.split(":")
        n = int(n)
        if n > ngpu_here:
            log(f"{case}: skipped, {ngpu_here} GPUs here")
            res["errors"].append({"case": case, "error": f"needs {n} GPUs, {ngpu_here} here"})
            continue
        model = os.path.join(args.model_root, f"zs-{shape}")
        if not os.path.exists(os.path.join(model, "config.json")):
            t = time.monotonic()
            subprocess.run([args.zerostart, "synth", model, "--shape", shape, "--seed", "1"], check=True,
                           capture_output=True)
            log(f"{case}: wrote {model} in {time.monotonic() - t:.0f} s")
        files = sorted(glob.glob(os.path.join(model, "*.safetensors")))
        row = {"case": case, "shape": shape, "gpus": n, "model": model, "loads": [], "starts": []}
        res["cases"].append(row)
        try:
            row["ceilings"] = ceilings(args.zerostart, files, n)
            c = row["ceilings"]
            log(f"{case}: ceilings disk {c['disk_gbps']:.2f} GB/s, page cache {c['pagecache_gbps']:.1f} GB/s, "
                f"pinned H2D per GPU {c.get('h2d_per_gpu_gbps')} (sum {c.get('h2d_sum_gbps')}) GB/s")
        except Exception as e:  # the loads still tell something
            res["errors"].append({"case": case, "stage": "ceilings", "error": str(e)[-1500:]})
        save()
        first = True
        for state in args.states.split(","):
            for rep in range(args.reps):
                for what in ("load", "run"):
                    if state == "cold":
                        drop_caches()
                    else:
                        warm_files(files)
                    try:
                        if what == "load":
                            d = load_once(args.zerostart, model, n, verify=first and state == "warm")
                            first = first and state != "warm"
                            d.update(state=state, rep=rep)
                            row["loads"].append(d)
                            per = ", ".join(f"GPU {g['gpu']} {g['bytes'] / 1e9:.2f} GB {g['gbps']:.1f} GB/s"
                                            for g in d["rank"])
                            log(f"{case} load {state}: process {d['process_s']:.3f} s, read {d['read_s']:.3f} s "
                                f"{d['gbps']:.2f} GB/s total; {per}")
                        else:
                            d = run_once(args.zerostart, model, n)
                            d.update(state=state, rep=rep)
                            row["starts"].append(d)
                            log(f"{case} run {state}: first token {d['first_token_s']:.3f} s after start "
                                f"(process {d['process_wall_s']:.3f} s), weights {d['weights_s']:.3f} s at "
                                f"{d['load_gbps']:.1f} GB/s, engine {d['engine_s']:.3f} s")
                    except Exception as e:
                        log(f"{case} {what} {state}: {e}")
                        res["errors"].append({"case": case, "stage": f"{what} {state}", "error": str(e)[-1500:]})
                    save()
        if args.check_8b:
            try:
                one = subprocess.run([args.zerostart, "run", args.check_8b, "-p", "Hello world", "--max-tokens", "32",
                                      "--ignore-eos", "--device", DEVICE], capture_output=True, text=True, check=True)
                tp = run_once(args.zerostart, args.check_8b, n, max_tokens=32)
                row["greedy_vs_one_gpu"] = {"model": args.check_8b, "equal": tp["text"] == one.stdout,
                                            "one_gpu": one.stdout, "tp": tp["text"]}
                log(f"{case}: 32 greedy tokens on {args.check_8b}: {'equal' if tp['text'] == one.stdout else 'DIFFER'}")
            except Exception as e:
                res["errors"].append({"case": case, "stage": "greedy check", "error": str(e)[-1500:]})
            save()

    print(f"{'case':22s} {'state':5s} {'load s':>7s} {'GB/s':>6s} {'per GPU GB/s':>24s} {'ceiling':>16s} "
          f"{'1st token s':>11s}")
    for row in res["cases"]:
        c = row.get("ceilings", {})
        for state in args.states.split(","):
            ls = [d for d in row["loads"] if d["state"] == state]
            ss = [d for d in row["starts"] if d["state"] == state]
            if not ls:
                continue
            best = min(ls, key=lambda d: d["process_s"])
            ceil = c.get("pagecache_gbps") if state == "warm" else c.get("disk_gbps")
            ceil = min(ceil, c["h2d_sum_gbps"]) if ceil and c.get("h2d_sum_gbps") else ceil
            per = "/".join(f"{g['gbps']:.1f}" for g in best["rank"])
            first = min((d["first_token_s"] for d in ss), default=float("nan"))
            print(f"{row['case']:22s} {state:5s} {best['process_s']:7.2f} {best['gbps']:6.2f} {per:>24s} "
                  f"{(ceil or 0):16.2f} {first:11.2f}")
    save()


if __name__ == "__main__":
    main()
