"""Compares zerostart's CUDA engine with transformers' own implementation (eager attention) on
the GPU machine: logits at every prompt position and a greedy 32-token continuation.

    python3 bench/engine_vs_transformers.py [--bin build/dev/test_cuda_engine]
        [--tiny DIR]        write the tiny models of tests/py/tiny_model.py (every variant, bf16
                            and f32) to DIR and compare each
        [--model DIR ...]   also compare these model directories (e.g. the 8B-shaped synthetic)
        [--out FILE]        JSON results

Logits come from the driver `test_cuda_engine logits` (float32 [n, vocab]). transformers runs
the same weights in their file dtype (bf16 or f32) with attn_implementation="eager"; for bf16
models a float32 upcast of the same weights is the reference as well. Error = max over positions
of |zs - ref| / |ref|. Pass: error vs transformers <= 1e-2 and identical greedy tokens (a
greedy divergence at a near-tie of transformers' own top two logits is reported as such)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "py"))


def rel_err(a, b):
    num = np.linalg.norm((a.astype(np.float64) - b.astype(np.float64)), axis=-1)
    den = np.linalg.norm(b.astype(np.float64), axis=-1) + 1e-30
    return float(np.max(num / den))


def zs_run(binary, d, ids, ngen):
    with tempfile.NamedTemporaryFile(suffix=".f32", delete=False) as f:
        path = f.name
    try:
        p = subprocess.run([binary, "logits", d, path, str(ngen)] + [str(i) for i in ids],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"zerostart failed on {d}: {p.stderr.strip()}")
        cfg = json.load(open(os.path.join(d, "config.json")))
        lg = np.fromfile(path, dtype=np.float32).reshape(len(ids), cfg["vocab_size"])
        toks = [int(x) for x in p.stdout.split()]
        return lg, toks
    finally:
        os.unlink(path)


@torch.no_grad()
def hf_run(model, ids, ngen):
    x = torch.tensor([ids], device="cuda")
    out = model(input_ids=x, use_cache=True)
    lg = out.logits[0].float().cpu().numpy()
    pkv = out.past_key_values
    toks, margins = [], []
    last = out.logits[0, -1].float()
    for i in range(ngen):
        top2 = torch.topk(last, 2).values
        margins.append(float(top2[0] - top2[1]))
        t = int(torch.argmax(last))
        toks.append(t)
        if i + 1 == ngen:
            break
        o = model(input_ids=torch.tensor([[t]], device="cuda"), past_key_values=pkv, use_cache=True)
        pkv = o.past_key_values
        last = o.logits[0, -1].float()
    return lg, toks, margins


def compare(binary, d, nprompt, ngen, seed):
    from transformers import AutoModelForCausalLM
    cfg = json.load(open(os.path.join(d, "config.json")))
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in rng.integers(3, cfg["vocab_size"], nprompt)]
    t0 = time.time()
    zlg, ztok = zs_run(binary, d, ids, ngen)
    t_zs = time.time() - t0
    bf16 = cfg.get("torch_dtype") == "bfloat16"
    dt = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dt, attn_implementation="eager").cuda().eval()
    hlg, htok, hmargin = hf_run(model, ids, ngen)
    row = {"model": os.path.basename(d.rstrip("/")), "dtype": "bf16" if bf16 else "f32",
           "prompt": nprompt, "err_vs_hf": rel_err(zlg, hlg), "zs_s": round(t_zs, 2)}
    if bf16:
        model = model.float()
        flg, ftok, _ = hf_run(model, ids, ngen)
        row["err_vs_hf_fp32"] = rel_err(zlg, flg)
        row["err_hf_bf16_vs_fp32"] = rel_err(hlg, flg)
        row["greedy_hf_fp32_same_as_zs"] = ftok == ztok
    del model
    torch.cuda.empty_cache()
    div = next((i for i in range(ngen) if ztok[i] != htok[i]), None)
    row["greedy_same"] = div is None
    if div is not None:
        row["greedy_diverges_at"] = div
        row["hf_top2_margin_at_divergence"] = hmargin[div]
    row["ok"] = row["err_vs_hf"] <= 1e-2 and (div is None or hmargin[div] < 0.05)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/dev/test_cuda_engine")
    ap.add_argument("--tiny", default=None)
    ap.add_argument("--model", nargs="*", default=[])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--ngen", type=int, default=32)
    ap.add_argument("--dtypes", default="bf16,f32", help="tiny model dtypes")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dirs = []
    if a.tiny:
        import tiny_model
        for v in sorted(tiny_model.VARIANTS):
            for dt in a.dtypes.split(","):
                dirs.append((tiny_model.write_model(a.tiny, v, dt), min(a.prompt, 150)))
    dirs += [(d, a.prompt) for d in a.model]
    rows = []
    for i, (d, n) in enumerate(dirs):
        try:
            r = compare(a.bin, d, n, a.ngen, 100 + i)
        except Exception as e:  # report and go on with the next model
            r = {"model": os.path.basename(d.rstrip("/")), "ok": False, "error": str(e)[-2000:]}
        rows.append(r)
        print(json.dumps(r), flush=True)
    res = {"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"),
           "transformers": __import__("transformers").__version__, "rows": rows}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    bad = [r["model"] for r in rows if not r.get("ok")]
    print(f"engine_vs_transformers: {len(rows) - len(bad)} ok, {len(bad)} not ok {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
