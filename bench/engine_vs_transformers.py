"""Compares zerostart's CUDA engine with transformers' own implementation (eager attention) on
the GPU machine: logits at every prompt position and a greedy 32-token continuation.

    python3 bench/engine_vs_transformers.py [--bin build/dev/test_cuda_engine]
        [--tiny DIR]        write the well-conditioned tiny models of tests/gpu/tiny_gpu_models.py
                            (every variant; --dtypes, default bf16,f32) to DIR and compare each
        [--model DIR ...]   also compare these model directories (e.g. the 8B-shaped synthetic)
        [--out FILE]        JSON results

Logits come from the driver `test_cuda_engine logits` (float32 [n, vocab]). transformers runs
the same weights in their file dtype (bf16 or f32) with attn_implementation="eager"; for bf16
models also upcast to float32. Relative error = max over positions of |a - b| / |b| (L2 over
the vocabulary). Per model:
  err_zs_vs_hf_bf16     zerostart vs transformers in the file dtype (bf16 models)
  err_zs_vs_hf_fp32     zerostart vs transformers float32 (the more exact reference)
  err_hf_bf16_vs_fp32   transformers' own bf16 forward vs its float32 forward (its bf16 noise)
  greedy_*              tokens equal in the 32-token greedy continuation (zs vs hf bf16, zs vs
                        hf fp32, hf bf16 vs hf fp32), with the first divergence and
                        transformers' top-2 logit margin there
  within_bar            err vs transformers in the file dtype <= 1e-2
  within_hf_noise       err_zs_vs_hf_fp32 <= err_hf_bf16_vs_fp32 (zerostart is no further from
                        float32 than transformers' own bf16 forward is)
ok: within_bar and greedy identical to transformers in the file dtype (a divergence at a
near-tie of transformers' top two logits, margin < 0.05, is accepted and reported as such)."""
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


def greedy_cmp(a, b):
    div = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
    return {"same": div is None and len(a) == len(b), "agree": div if div is not None else len(a),
            "diverges_at": div}


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
           "prompt": nprompt, "zs_s": round(t_zs, 2)}
    g = greedy_cmp(ztok, htok)
    if bf16:
        row["err_zs_vs_hf_bf16"] = rel_err(zlg, hlg)
        model = model.float()
        flg, ftok, fmargin = hf_run(model, ids, ngen)
        row["err_zs_vs_hf_fp32"] = rel_err(zlg, flg)
        row["err_hf_bf16_vs_fp32"] = rel_err(hlg, flg)
        gf, ghf = greedy_cmp(ztok, ftok), greedy_cmp(htok, ftok)
        row["greedy_zs_vs_hf_bf16"] = g["agree"]
        row["greedy_zs_vs_hf_fp32"] = gf["agree"]
        row["greedy_hf_bf16_vs_fp32"] = ghf["agree"]
        row["within_bar"] = row["err_zs_vs_hf_bf16"] <= 1e-2
        row["within_hf_noise"] = row["err_zs_vs_hf_fp32"] <= row["err_hf_bf16_vs_fp32"]
    else:
        row["err_zs_vs_hf_fp32"] = rel_err(zlg, hlg)
        row["greedy_zs_vs_hf_fp32"] = g["agree"]
        row["within_bar"] = row["err_zs_vs_hf_fp32"] <= 1e-2
    del model
    torch.cuda.empty_cache()
    row["greedy_of"] = ngen
    div = g["diverges_at"]
    row["greedy_same"] = g["same"]
    if div is not None:
        row["greedy_diverges_at"] = div
        row["hf_top2_margin_at_divergence"] = hmargin[div]
    row["ok"] = row["within_bar"] and (div is None or hmargin[div] < 0.05)
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
        sys.path.insert(0, os.path.join(HERE, "..", "tests", "gpu"))
        import tiny_gpu_models
        for p in tiny_gpu_models.write_all(a.tiny, tuple(a.dtypes.split(","))):
            dirs.append((p, min(a.prompt, 150)))
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
    print("model                 zs-hf(bf16) zs-hf(fp32) hf(bf16-fp32) greedy zs-hf/zs-fp32/hf-fp32 ok")
    for r in rows:
        f = lambda k: f"{r[k]:.4f}" if isinstance(r.get(k), float) else "-"
        print(f"{r['model']:22s} {f('err_zs_vs_hf_bf16'):>10s} {f('err_zs_vs_hf_fp32'):>11s} "
              f"{f('err_hf_bf16_vs_fp32'):>13s}   {r.get('greedy_zs_vs_hf_bf16', r.get('greedy_zs_vs_hf_fp32', '-'))}"
              f"/{r.get('greedy_zs_vs_hf_fp32', '-')}/{r.get('greedy_hf_bf16_vs_fp32', '-')} of {r.get('greedy_of', '-')}"
              f" {'ok' if r.get('ok') else 'NOT OK'}")
    print(f"engine_vs_transformers: {len(rows) - len(bad)} ok, {len(bad)} not ok {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
