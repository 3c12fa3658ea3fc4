"""Writes well-conditioned tiny models for the CUDA engine comparisons (CPU vs CUDA in
tests/gpu/test_cuda_engine.c, zerostart vs transformers in bench/engine_vs_transformers.py):
every variant of tests/py/tiny_model.py (llama, llama_mha, llama3 / linear / yarn /
yarn-mscale RoPE, tied, llama_bias, qwen2 with an inactive and an active sliding window,
qwen3 with q/k norm and an explicit head_dim, mistral with a window), in F32 and BF16.

Why: tiny_model.py draws weights so that the float64 CPU tests see sharp attention and large
logits (q/k x2, lm_head x3, embeddings N(0, 1)); with a bf16 KV cache and bf16 tensor-core
inputs those models amplify rounding so much that transformers' own bf16 forward differs from
its float32 forward by 1.3-14 % (bench/results, 2026-11-25), above the 1e-2 bar.

Initialisation (same names, shapes and configs as tiny_model.py; seed 3000 + variant index):
  - every linear and embedding weight ~ normal(0, 0.02): transformers' _init_weights with the
    default initializer_range 0.02;
  - except the q and k projections ~ normal(0, 1/sqrt(hidden)): at transformers' 0.02 and a
    hidden size of 64, attention scores would have a standard deviation of ~0.03 (uniform
    attention: RoPE, windows and masks would hardly change the logits, so the comparison could
    not see them broken). 1/sqrt(hidden) gives scores of standard deviation ~1, what 0.02 gives
    at the 8B width (0.02 = 1.28 / sqrt(4096));
  - RMSNorm weights 1 + normal(0, 0.1) (transformers: ones; the perturbation keeps a norm read
    wrongly visible); biases normal(0, 0.02) (transformers: zeros, which would hide bias bugs).
Measured with the float64 reference (tests/py/ref_llama.py), 64-token prompts: rounding every
normalised activation and q/k to bf16 moves the logits by 0.26-0.58 % (relative L2, worst
position), while dropping RoPE moves them by 30-62 % and dropping the sliding window by 91-137 %
(the old q/k-halved models: 0.6-1.3 % for the same bf16 rounding).

    python3 tests/gpu/tiny_gpu_models.py OUTDIR
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
import numpy as np  # noqa: E402
import tiny_model  # noqa: E402

INIT_RANGE = 0.02


def make_weights(cfg, seed):
    """float32 weights in HF names (the tensors of tiny_model.make_weights), initialised as
    described above."""
    rng = np.random.default_rng(seed)
    shapes = {k: a.shape for k, a in tiny_model.make_weights(cfg, seed).items()}
    hidden = cfg["hidden_size"]
    w = {}
    for name in sorted(shapes):
        shp = shapes[name]
        if name.endswith("norm.weight"):
            a = 1.0 + 0.1 * rng.standard_normal(shp)
        elif name.endswith(".bias"):
            a = INIT_RANGE * rng.standard_normal(shp)
        elif ".self_attn.q_proj." in name or ".self_attn.k_proj." in name:
            a = rng.standard_normal(shp) / np.sqrt(hidden)
        else:
            a = INIT_RANGE * rng.standard_normal(shp)
        w[name] = a.astype(np.float32)
    return w


def write_all(outdir, dtypes=("f32", "bf16")):
    paths = []
    for i, v in enumerate(sorted(tiny_model.VARIANTS)):
        cfg = tiny_model.make_config(v)
        cfg["initializer_range"] = INIT_RANGE
        w = make_weights(cfg, 3000 + i)
        for dt in dtypes:
            paths.append(tiny_model.write_model(outdir, v, dt, config=cfg, weights=w))
    return paths


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    for p in write_all(argv[1]):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
