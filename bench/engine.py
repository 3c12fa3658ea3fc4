"""Engine speed on the GPU machine: zerostart's CUDA engine against transformers (eager
PyTorch, attn_implementation="sdpa") on the 8B-shaped synthetic model, in the same run.

    python3 bench/engine.py [--model DIR] [--bin build/dev/test_cuda_engine]
                            [--zs build/dev/zerostart] [--out bench/results/engine.json]
                            [--skip-hf]

Writes the synthetic model (`zerostart synth DIR --shape llama3-8b`) when DIR has none and
raises its max_position_embeddings to 40960 so that 32k-token prompts are accepted. Measures
prefill seconds (last-token logits) at 512, 8192 and 32768 tokens (median of 3 after a
warm-up) and batch-1 greedy decode tokens/s after a 512-token prompt. zerostart runs first in
its own process (test_cuda_engine bench: steps of 8192 tokens, KV cache sized to 90% of the
free GPU memory); transformers afterwards in this one. Output:
{"device", "date", "rows": [{"name", "prefill_512_s", "prefill_8k_s", "prefill_32k_s",
"decode_tok_s"}], ...}."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

LENS = (512, 8192, 32768)
KEYS = {512: "prefill_512_s", 8192: "prefill_8k_s", 32768: "prefill_32k_s"}


def ensure_model(zs, d):
    if not os.path.exists(os.path.join(d, "config.json")):
        t = time.time()
        subprocess.run([zs, "synth", d, "--shape", "llama3-8b"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"synth: {time.time() - t:.1f} s", flush=True)
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    if cfg.get("max_position_embeddings", 0) < 40960:
        cfg["max_position_embeddings"] = 40960
        json.dump(cfg, open(p, "w"), indent=1)


def zerostart(binary, d, step):
    cmd = [binary, "bench", d, "--prefill", ",".join(map(str, LENS)), "--decode", "128",
           "--step", str(step), "--reps", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"zerostart bench failed: {p.stderr.strip()} {p.stdout.strip()}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print("zerostart:", json.dumps(r), flush=True)
    row = {"name": "zerostart"}
    for L in LENS:
        row[KEYS[L]] = r.get(f"prefill_{L}_s")
    row["decode_tok_s"] = r.get("decode_tok_s")
    return row, r


@torch.no_grad()
def transformers_bench(d):
    from transformers import AutoModelForCausalLM
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").cuda().eval()
    print(f"transformers load: {time.time() - t:.1f} s", flush=True)
    V = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    row = {"name": "transformers"}
    for L in LENS:
        ids = torch.randint(3, V, (1, L), generator=g).cuda()
        ts = []
        for r in range(4):
            torch.cuda.synchronize()
            a = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            if r:
                ts.append(time.perf_counter() - a)
            del out
        row[KEYS[L]] = statistics.median(ts)
        torch.cuda.empty_cache()
        print(f"transformers prefill {L}: {row[KEYS[L]]:.4f} s", flush=True)
    ids = torch.randint(3, V, (1, 512), generator=g).cuda()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    pkv, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
    n, warm = 64, 4
    for i in range(n + warm):
        if i == warm:
            torch.cuda.synchronize()
            a = time.perf_counter()
        o = model(input_ids=tok, past_key_values=pkv, use_cache=True, logits_to_keep=1)
        pkv, tok = o.past_key_values, o.logits[:, -1:].argmax(-1)
        tok.item()  # the next step needs the token on the host like a server's sampler
    torch.cuda.synchronize()
    row["decode_tok_s"] = n / (time.perf_counter() - a)
    print(f"transformers decode: {row['decode_tok_s']:.1f} tok/s", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/tmp/zs-llama3-8b")
    ap.add_argument("--bin", default="build/dev/test_cuda_engine")
    ap.add_argument("--zs", default="build/dev/zerostart")
    ap.add_argument("--out", default="bench/results/engine.json")
    ap.add_argument("--step", type=int, default=8192)
    ap.add_argument("--skip-hf", action="store_true")
    a = ap.parse_args()
    ensure_model(a.zs, a.model)
    zrow, zraw = zerostart(a.bin, a.model, a.step)
    rows = [zrow]
    if not a.skip_hf:
        import transformers
        rows.append(transformers_bench(a.model))
    res = {"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"),
           "rows": rows, "model": "synthetic llama3-8b shape, bf16",
           "zerostart_detail": zraw,
           "transformers": None if a.skip_hf else __import__("transformers").__version__,
           "torch": torch.__version__}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
