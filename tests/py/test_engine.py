"""Engine tests against the numpy reference (ref_llama.py): logits at every position and
greedy continuations for every tiny model variant (tiny_model.py) in F32 and BF16, through
the ASan build of tests/unit/test_engine_driver.c, with small KV blocks and chunked prefill
so the paged cache is crossed at block boundaries; plus refusal of configs and weights the
engine cannot run, each error naming the field or tensor."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import ref_llama  # noqa: E402
import tiny_model  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DRIVER_REL = "build/asan/tests/test_engine_driver"
MODELS = [(v, dt) for v in sorted(tiny_model.VARIANTS) for dt in ("f32", "bf16")]
# 26 tokens: crosses several 4-token blocks, the sliding windows (5, 6) and yarn's
# original context is not reached on purpose (rope scaling applies at every position).
PROMPT = [5, 17, 33, 2, 60, 41, 8, 8, 19, 27, 50, 3, 11, 44, 38, 21, 7, 63, 0, 30, 99, 120,
          150, 1, 159, 77]
REL_TOL = 1e-4


@pytest.fixture(scope="session")
def engine_driver():
    if os.environ.get("ZS_ENGINE_DRIVER"):  # e.g. a mutated build, to check the tests bite
        return pathlib.Path(os.environ["ZS_ENGINE_DRIVER"])
    path = ROOT / DRIVER_REL
    if not path.exists():
        subprocess.run(["make", "-C", str(ROOT), DRIVER_REL], check=True,
                       stdout=subprocess.DEVNULL)
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_models")
    return {(v, dt): tiny_model.write_model(str(out), v, dt) for v, dt in MODELS}


def run(driver, *args):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    return subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def engine_logits(driver, model_dir, ids, *opts):
    r = run(driver, "logits", model_dir, *opts, *ids)
    assert r.returncode == 0, r.stderr
    return np.array([[float(x) for x in line.split()] for line in r.stdout.strip().splitlines()])


def rel_err(got, ref):
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("variant,dtype", MODELS, ids=[f"{v}-{d}" for v, d in MODELS])
def test_logits_match_reference(engine_driver, models, variant, dtype):
    d = models[(variant, dtype)]
    cfg, w = ref_llama.load(d)
    ref = ref_llama.forward(cfg, w, PROMPT)
    assert np.abs(ref).max() > 1.0  # logits are not degenerate
    # every position; 4-token blocks, prefill in calls of 5 tokens, steps of at most 7
    got = engine_logits(engine_driver, d, PROMPT, "--all", "--block", 4, "--chunk", 5,
                        "--step", 7)
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= REL_TOL
    # last position only, default block size, whole prompt in one call
    got = engine_logits(engine_driver, d, PROMPT, "--chunk", 0)
    assert got.shape == (1, ref.shape[1])
    assert rel_err(got[0], ref[-1]) <= REL_TOL


@pytest.mark.parametrize("variant,dtype", MODELS, ids=[f"{v}-{d}" for v, d in MODELS])
def test_greedy_matches_reference(engine_driver, models, variant, dtype):
    d = models[(variant, dtype)]
    prompt = PROMPT[:13]
    steps = 10
    # the driver itself fails (exit 3) unless whole-prefill + single decode and chunked
    # prefill + forked prefix + batched decode give the same tokens
    r = run(engine_driver, "greedy", d, steps, "--block", 4, "--chunk", 3, *prompt)
    assert r.returncode == 0, r.stderr
    got = [int(x) for x in r.stdout.split()]
    cfg, w = ref_llama.load(d)
    want, gaps = ref_llama.greedy(cfg, w, prompt, steps)
    for i, (g, t) in enumerate(zip(got, want)):
        if g != t:
            # only a near-tie in the reference may flip the argmax
            assert gaps[i] < 1e-3, f"step {i}: engine {g}, reference {t} (gap {gaps[i]})"
            break
    assert len(got) == steps


# Each feature the engine implements must change the result, or the comparison above could
# not catch it being ignored: the reference with the feature toggled must disagree.
TOGGLES = {
    "mistral": lambda c: c.update(sliding_window=None),
    "qwen2_swa": lambda c: c.update(use_sliding_window=False),
    "qwen2": lambda c: c.update(use_sliding_window=True),          # present but inactive
    "llama3_rope": lambda c: c.pop("rope_scaling"),
    "linear_rope": lambda c: c.pop("rope_scaling"),
    "yarn": lambda c: c.pop("rope_scaling"),
    "yarn_mscale": lambda c: c["rope_scaling"].pop("mscale"),
}


@pytest.mark.parametrize("variant", sorted(TOGGLES))
def test_features_matter(engine_driver, models, variant):
    d = models[(variant, "f32")]
    cfg, w = ref_llama.load(d)
    TOGGLES[variant](cfg)
    other = ref_llama.forward(cfg, w, PROMPT)
    got = engine_logits(engine_driver, d, PROMPT, "--all", "--block", 4)
    assert rel_err(got, other) > 1e-3


def test_token_id_outside_vocabulary(engine_driver, models):
    d = models[("llama", "f32")]
    r = run(engine_driver, "logits", d, 5, 6, 160)
    assert r.returncode == 1
    assert "token id 160" in r.stderr
    r = run(engine_driver, "logits", d, 5, -1)
    assert r.returncode == 1
    assert "token id -1" in r.stderr


def base_config(**over):
    c = tiny_model.make_config("llama")
    c.update(over)
    return c


BAD_CONFIGS = [
    ("dynamic_rope", base_config(rope_scaling={"type": "dynamic", "factor": 2.0}),
     'rope_scaling.type "dynamic" is not supported'),
    ("longrope", base_config(rope_scaling={"rope_type": "longrope", "short_factor": [1.0],
                                           "long_factor": [1.0]}),
     'rope_scaling.rope_type "longrope" is not supported'),
    ("llama3_missing", base_config(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     "rope_scaling.low_freq_factor"),
    ("yarn_factor", base_config(rope_scaling={"rope_type": "yarn", "factor": 0.5}),
     "rope_scaling.factor"),
    ("linear_no_factor", base_config(rope_scaling={"type": "linear"}), "rope_scaling.factor"),
    # finite parameters whose derived frequencies are infinite or NaN (found by the fuzzer)
    ("linear_tiny_factor", base_config(rope_scaling={"rope_type": "linear", "factor": 1e-300}),
     "rope parameters give frequency"),
    ("llama3_tiny_factor", base_config(rope_scaling={
        "rope_type": "llama3", "factor": 1e-300, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
     "rope parameters give frequency"),
    ("yarn_tiny_beta", base_config(rope_scaling={"rope_type": "yarn", "factor": 2.0,
                                                 "beta_fast": 1e-310}),
     "rope parameters give frequency"),
    ("arch", base_config(architectures=["GPTNeoXForCausalLM"]), "architectures[0]"),
    ("two_archs", base_config(architectures=["LlamaForCausalLM", "MistralForCausalLM"]),
     "architectures"),
    ("act", base_config(hidden_act="gelu_pytorch_tanh"), "hidden_act"),
    ("kv_heads", base_config(num_key_value_heads=3), "num_key_value_heads"),
    ("heads_hidden", base_config(num_attention_heads=5, num_key_value_heads=5), "hidden_size"),
    ("mlp_bias", base_config(mlp_bias=True), "mlp_bias"),
    ("quant", base_config(quantization_config={"quant_method": "awq"}), "quantization_config"),
    ("partial_rotary", base_config(partial_rotary_factor=0.5), "partial_rotary_factor"),
    ("odd_head_dim", base_config(head_dim=15), "head_dim"),
    ("zero_layers", base_config(num_hidden_layers=0), "num_hidden_layers"),
    ("neg_vocab", base_config(vocab_size=-3), "vocab_size"),
    ("huge_hidden", base_config(hidden_size=1 << 40), "hidden_size"),
    ("string_size", base_config(intermediate_size="96"), "intermediate_size"),
    ("eps", base_config(rms_norm_eps=-1.0), "rms_norm_eps"),
    ("theta", base_config(rope_theta=0), "rope_theta"),
    ("eos", base_config(eos_token_id=[2, 500]), "eos_token_id[1]"),
    ("layer_types", dict(tiny_model.make_config("qwen2_swa"),
                         layer_types=["full_attention", "chunked_attention"]), "layer_types[1]"),
    ("llama_sliding", base_config(layer_types=["full_attention", "sliding_attention"]),
     "layer_types[1]"),
    ("mistral_window", dict(tiny_model.make_config("mistral"), sliding_window=-4),
     "sliding_window"),
    ("missing_hidden", {k: v for k, v in base_config().items() if k != "hidden_size"},
     "hidden_size is missing"),
]


@pytest.mark.parametrize("name,cfg,needle", BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_refused(engine_driver, tmp_path, name, cfg, needle):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    r = run(engine_driver, "config", p)
    assert r.returncode == 1, r.stdout
    assert "config.json" in r.stderr and needle in r.stderr, r.stderr


def test_good_configs_accepted(engine_driver, tmp_path):
    for v in sorted(tiny_model.VARIANTS):
        p = tmp_path / f"{v}.json"
        p.write_text(json.dumps(tiny_model.make_config(v)))
        r = run(engine_driver, "config", p)
        assert r.returncode == 0, (v, r.stderr)
    # transformers v5 spelling: rope_parameters carrying rope_theta
    c = base_config(rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    del c["rope_theta"]
    p = tmp_path / "v5.json"
    p.write_text(json.dumps(c))
    assert run(engine_driver, "config", p).returncode == 0


def _model_with(tmp_path, variant, edit):
    cfg = tiny_model.make_config(variant)
    w = tiny_model.make_weights(cfg, 7)
    edit(cfg, w)
    return tiny_model.write_model(str(tmp_path), variant, "f32", config=cfg, weights=w)


BAD_WEIGHTS = [
    ("missing", "llama", lambda c, w: w.pop("model.layers.1.mlp.up_proj.weight"),
     "model.layers.1.mlp.up_proj.weight is missing"),
    ("shape", "llama", lambda c, w: w.update({"model.layers.0.self_attn.k_proj.weight":
                                              np.zeros((64, 64), np.float32)}),
     "model.layers.0.self_attn.k_proj.weight has shape [64, 64]"),
    ("no_lm_head", "llama", lambda c, w: w.pop("lm_head.weight"), "lm_head.weight"),
    ("stray_bias", "llama", lambda c, w: w.update({"model.layers.0.self_attn.o_proj.bias":
                                                   np.zeros(64, np.float32)}),
     "model.layers.0.self_attn.o_proj.bias is present"),
    ("qwen2_bias", "qwen2", lambda c, w: w.pop("model.layers.0.self_attn.v_proj.bias"),
     "model.layers.0.self_attn.v_proj.bias is missing"),
    ("qwen3_norm", "qwen3", lambda c, w: w.update({"model.layers.1.self_attn.q_norm.weight":
                                                   np.ones(16, np.float32)}),
     "model.layers.1.self_attn.q_norm.weight has shape [16]"),
    ("vocab", "llama", lambda c, w: c.update(vocab_size=170), "model.embed_tokens.weight"),
]


@pytest.mark.parametrize("name,variant,edit,needle", BAD_WEIGHTS, ids=[b[0] for b in BAD_WEIGHTS])
def test_bad_weights_refused(engine_driver, tmp_path, name, variant, edit, needle):
    d = _model_with(tmp_path, variant, edit)
    r = run(engine_driver, "check", d)
    assert r.returncode == 1, r.stdout
    assert needle in r.stderr, r.stderr


def test_good_model_checks(engine_driver, models):
    r = run(engine_driver, "check", models[("qwen3", "bf16")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
