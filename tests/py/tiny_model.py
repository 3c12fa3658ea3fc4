"""Writes tiny random Hugging Face-layout models (config.json + model.safetensors) for every
Llama-family variant the engine supports, in F32 and BF16, for the engine tests.

    python tests/py/tiny_model.py OUTDIR            # all variants, both dtypes
    python tests/py/tiny_model.py OUTDIR llama f32  # one

Weights are written with the safetensors library; BF16 values are the F32 draws rounded to
nearest-even, so the reference (ref_llama.py) reads back exactly what the engine sees.
"""
import json
import os
import sys

import numpy as np
from safetensors import TensorSpec, serialize_file

BASE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=160,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    hidden_act="silu",
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (architecture, config overrides)
VARIANTS = {
    "llama": ("LlamaForCausalLM", {}),
    "llama_mha": ("LlamaForCausalLM", {"num_key_value_heads": 4, "num_hidden_layers": 3}),
    "llama3_rope": ("LlamaForCausalLM", {
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "linear_rope": ("LlamaForCausalLM", {"rope_scaling": {"type": "linear", "factor": 4.0}}),
    "yarn": ("LlamaForCausalLM", {
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                         "original_max_position_embeddings": 64}}),
    "yarn_mscale": ("Qwen2ForCausalLM", {
        "rope_scaling": {"type": "yarn", "factor": 8.0, "mscale": 0.9, "mscale_all_dim": 0.5,
                         "beta_fast": 16, "beta_slow": 2, "original_max_position_embeddings": 32}}),
    "tied": ("LlamaForCausalLM", {"tie_word_embeddings": True, "eos_token_id": [2, 3]}),
    "llama_bias": ("LlamaForCausalLM", {"attention_bias": True}),
    "qwen2": ("Qwen2ForCausalLM", {"use_sliding_window": False, "sliding_window": 4,
                                   "max_window_layers": 1, "rope_theta": 1000000.0}),
    "qwen2_swa": ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 5,
                                       "max_window_layers": 1}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 24, "num_attention_heads": 4,
                                   "num_key_value_heads": 2, "tie_word_embeddings": True,
                                   "use_sliding_window": False, "sliding_window": None}),
    "mistral": ("MistralForCausalLM", {"sliding_window": 6, "num_attention_heads": 8,
                                       "num_key_value_heads": 2, "head_dim": 16}),
}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bfloat16 bits, round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u >> 16) & 1) + 0x7FFF
    return ((u + r) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def make_config(variant):
    arch, over = VARIANTS[variant]
    cfg = dict(BASE)
    cfg["architectures"] = [arch]
    cfg["model_type"] = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                         "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}[arch]
    cfg.update(over)
    return cfg


def make_weights(cfg, seed):
    """Random float32 weights in HF names, scaled so logits are well spread."""
    rng = np.random.default_rng(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    arch = cfg["architectures"][0]
    bias_qkv = arch == "Qwen2ForCausalLM" or (arch in ("LlamaForCausalLM", "Qwen3ForCausalLM")
                                              and cfg.get("attention_bias", False))
    bias_o = arch in ("LlamaForCausalLM", "Qwen3ForCausalLM") and cfg.get("attention_bias", False)

    def lin(o, i):
        return rng.standard_normal((o, i)).astype(np.float32) * np.float32(1.2 / np.sqrt(i))

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32),
         "model.norm.weight": norm(H)}
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = lin(V, H) * np.float32(3.0)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm(H)
        w[p + "post_attention_layernorm.weight"] = norm(H)
        w[p + "self_attn.q_proj.weight"] = lin(nh * hd, H) * np.float32(2.0)
        w[p + "self_attn.k_proj.weight"] = lin(nkv * hd, H) * np.float32(2.0)
        w[p + "self_attn.v_proj.weight"] = lin(nkv * hd, H)
        w[p + "self_attn.o_proj.weight"] = lin(H, nh * hd)
        if bias_qkv:
            for n, d in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                w[p + f"self_attn.{n}_proj.bias"] = (0.3 * rng.standard_normal(d)).astype(np.float32)
        if bias_o:
            w[p + "self_attn.o_proj.bias"] = (0.3 * rng.standard_normal(H)).astype(np.float32)
        if arch == "Qwen3ForCausalLM":
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
        w[p + "mlp.gate_proj.weight"] = lin(I, H)
        w[p + "mlp.up_proj.weight"] = lin(I, H)
        w[p + "mlp.down_proj.weight"] = lin(H, I)
    return w


def write_safetensors(path, tensors, dtype):
    """tensors: name -> float32 array; dtype 'f32' or 'bf16'."""
    keep = []
    specs = {}
    for name, a in tensors.items():
        if dtype == "bf16":
            buf = np.ascontiguousarray(f32_to_bf16_bits(a))
            st = "bfloat16"
        else:
            buf = np.ascontiguousarray(a, dtype=np.float32)
            st = "float32"
        keep.append(buf)
        specs[name] = TensorSpec(dtype=st, shape=list(a.shape), data_ptr=buf.ctypes.data,
                                 data_len=buf.nbytes)
    serialize_file(specs, path, None)


def write_model(outdir, variant, dtype, seed=None, config=None, weights=None):
    """Writes one model directory; returns its path."""
    cfg = config if config is not None else make_config(variant)
    if seed is None:
        seed = 1000 + sorted(VARIANTS).index(variant)
    w = weights if weights is not None else make_weights(cfg, seed)
    cfg = dict(cfg)
    cfg["torch_dtype"] = "bfloat16" if dtype == "bf16" else "float32"
    d = os.path.join(outdir, f"{variant}-{dtype}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_safetensors(os.path.join(d, "model.safetensors"), w, dtype)
    return d


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    out = argv[1]
    variants = [argv[2]] if len(argv) > 2 else sorted(VARIANTS)
    dtypes = [argv[3]] if len(argv) > 3 else ["f32", "bf16"]
    for v in variants:
        for dt in dtypes:
            print(write_model(out, v, dt))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
