"""Plain-numpy float64 reference forward pass for the Llama family (Llama, Mistral, Qwen2,
Qwen3), written from the math and the transformers conventions, independent of the C code:
full recompute over the whole sequence, explicit causal / sliding-window mask, softmax over
a dense score matrix.

    python tests/py/ref_llama.py MODEL_DIR ids...   # prints last-position logits
"""
import json
import math
import os
import sys

import numpy as np
from safetensors import deserialize


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        raw = f.read()
    w = {}
    for name, t in deserialize(raw):
        data = bytes(t["data"])
        dt = t["dtype"]
        if dt in ("bfloat16", "BF16"):
            a = (np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dt in ("float16", "F16"):
            a = np.frombuffer(data, dtype=np.float16).astype(np.float32)
        elif dt in ("float32", "F32"):
            a = np.frombuffer(data, dtype=np.float32)
        else:
            raise ValueError(f"{name}: dtype {dt}")
        w[name] = a.reshape(t["shape"]).astype(np.float64)
    return cfg, w


def inv_freq_and_scale(cfg, hd):
    """RoPE inverse frequencies (float64) and the cos/sin multiplier."""
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "default":
        return inv, 1.0
    if kind == "linear":
        return inv / rs["factor"], 1.0
    if kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        out = np.empty_like(inv)
        for i, f in enumerate(inv):
            wl = 2 * math.pi / f
            if wl < old / hi:          # high frequency: unchanged
                out[i] = f
            elif wl > old / lo:        # low frequency: interpolated by factor
                out[i] = f / factor
            else:                      # in between: smooth blend
                s = (old / wl - lo) / (hi - lo)
                out[i] = (1 - s) * f / factor + s * f
        return out, 1.0
    if kind == "yarn":
        factor = rs["factor"]
        orig = rs.get("original_max_position_embeddings", cfg["max_position_embeddings"])
        bf, bs = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

        def dim_for(rot):
            return hd * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        lo, hi = dim_for(bf), dim_for(bs)
        if rs.get("truncate", True):
            lo, hi = math.floor(lo), math.ceil(hi)
        lo, hi = max(lo, 0), min(hi, hd - 1)
        if lo == hi:
            hi += 0.001
        ramp = np.clip((np.arange(hd // 2) - lo) / (hi - lo), 0, 1)
        extrap = 1 - ramp
        out = (inv / factor) * (1 - extrap) + inv * extrap

        def mscale(s, m=1.0):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

        if rs.get("attention_factor") is not None:
            att = rs["attention_factor"]
        elif rs.get("mscale") and rs.get("mscale_all_dim"):
            att = mscale(factor, rs["mscale"]) / mscale(factor, rs["mscale_all_dim"])
        else:
            att = mscale(factor)
        return out, att
    raise ValueError(f"rope type {kind}")


def layer_windows(cfg):
    """Per-layer sliding window (0 = full attention), as transformers applies it."""
    arch = cfg["architectures"][0]
    L = cfg["num_hidden_layers"]
    if arch == "LlamaForCausalLM":
        return [0] * L
    if arch == "MistralForCausalLM":
        sw = cfg.get("sliding_window", 4096)
        return [sw or 0] * L
    # Qwen2 / Qwen3
    if not cfg.get("use_sliding_window", False):
        return [0] * L
    sw = cfg.get("sliding_window", 4096) or 0
    mwl = cfg.get("max_window_layers", 28)
    return [sw if i >= mwl else 0 for i in range(L)]


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, inv, scale):
    """x: [n, heads, hd]; rotate-half convention."""
    ang = np.outer(pos, inv)                      # [n, hd/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :] * scale
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :] * scale
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rot * sin


def forward(cfg, w, ids):
    """Logits [len(ids), vocab] for the whole sequence (positions 0..n-1)."""
    arch = cfg["architectures"][0]
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or H // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    n = len(ids)
    pos = np.arange(n, dtype=np.float64)
    inv, scale = inv_freq_and_scale(cfg, hd)
    windows = layer_windows(cfg)
    x = w["model.embed_tokens.weight"][np.asarray(ids)]
    qi = np.arange(n)[:, None]
    ki = np.arange(n)[None, :]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."

        def lin(name, v):
            y = v @ w[p + name + ".weight"].T
            b = w.get(p + name + ".bias")
            return y if b is None else y + b

        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        q = lin("self_attn.q_proj", h).reshape(n, nh, hd)
        k = lin("self_attn.k_proj", h).reshape(n, nkv, hd)
        v = lin("self_attn.v_proj", h).reshape(n, nkv, hd)
        if arch == "Qwen3ForCausalLM":
            q = rmsnorm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rmsnorm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = rope(q, pos, inv, scale)
        k = rope(k, pos, inv, scale)
        mask = ki <= qi
        if windows[l]:
            mask &= ki > qi - windows[l]
        out = np.empty((n, nh, hd))
        for head in range(nh):
            kvh = head // (nh // nkv)
            s = q[:, head, :] @ k[:, kvh, :].T / math.sqrt(hd)
            s = np.where(mask, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, head, :] = s @ v[:, kvh, :]
        x = x + lin("self_attn.o_proj", out.reshape(n, nh * hd))
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = lin("mlp.gate_proj", h)
        u = lin("mlp.up_proj", h)
        x = x + lin("mlp.down_proj", g / (1 + np.exp(-g)) * u)
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def greedy(cfg, w, ids, steps):
    """Greedy continuation by full recompute; also returns each step's top-2 logit gap."""
    seq = list(ids)
    out, gaps = [], []
    for _ in range(steps):
        lg = forward(cfg, w, seq)[-1]
        order = np.argsort(-lg, kind="stable")
        out.append(int(order[0]))
        gaps.append(float(lg[order[0]] - lg[order[1]]))
        seq.append(int(order[0]))
    return out, gaps


if __name__ == "__main__":
    c, weights = load(sys.argv[1])
    print(" ".join(f"{v:.9g}" for v in forward(c, weights, [int(a) for a in sys.argv[2:]])[-1]))
