"""Tensor parallel on simulated CPU ranks: for every tiny model variant the engine supports
(tiny_model.py, F32 and BF16: Llama GQA and MHA, KV heads fewer than ranks, Qwen2 q/k/v bias,
Llama attention bias with the o bias, Qwen3 q/k norm, tied embeddings, sliding windows, rope
scalings) and for extra shapes with uneven head, KV head, intermediate and vocabulary splits,
the engine split over N = 2, 3, 4 (5) ranks gives the single-rank logits at every position
(within float tolerance: the o/down projections and the embedding are summed in another order)
and the same greedy continuations. Driven through the ASan engine driver's --tp option (which
also fails when the sliced load reads a byte count other than the checkpoint's). Plus the CLI:
`zerostart run --tp N --device cpu` prints what --tp 1 prints, `zerostart load --tp N` reports
bytes read equal to the checkpoint's tensor bytes, and bad rank counts are refused."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import tiny_model  # noqa: E402
from test_engine import PROMPT, engine_driver, engine_logits, rel_err, run  # noqa: E402,F401

REL_TOL = 1e-4
RANKS = (2, 3, 4)

# Shapes beyond the variants: uneven splits of every partitioned dimension.
EXTRA = {
    # 6 heads over 3 KV heads: with 4 and 5 ranks, ranks share KV heads and split their groups;
    # 100 MLP rows and 161 vocabulary rows split unevenly
    "uneven_gqa": dict(num_attention_heads=6, num_key_value_heads=3, head_dim=16,
                       intermediate_size=100, vocab_size=161),
    # 8 KV heads over 3 ranks: whole KV groups, 2/3/3 per rank
    "uneven_mha": dict(num_attention_heads=8, num_key_value_heads=8, head_dim=8,
                       intermediate_size=90, vocab_size=163, attention_bias=True),
}
MODELS = [(v, dt) for v in sorted(tiny_model.VARIANTS) for dt in ("f32", "bf16")] + \
         [(v, "f32") for v in sorted(EXTRA)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp_models")
    paths = {}
    for v, dt in MODELS:
        if v in EXTRA:
            cfg = tiny_model.make_config("llama")
            cfg.update(EXTRA[v])
            paths[(v, dt)] = tiny_model.write_model(str(out), v, dt, seed=77, config=cfg)
        else:
            paths[(v, dt)] = tiny_model.write_model(str(out), v, dt)
    return paths


def ranks_for(variant):
    return RANKS + (5,) if variant == "uneven_gqa" else RANKS


@pytest.mark.parametrize("variant,dtype", MODELS, ids=[f"{v}-{d}" for v, d in MODELS])
def test_logits_equal_single_rank(engine_driver, models, variant, dtype):
    d = models[(variant, dtype)]
    opts = ("--all", "--block", 4, "--chunk", 5, "--step", 7, "--threads", 1)
    ref = engine_logits(engine_driver, d, PROMPT, *opts)
    assert np.abs(ref).max() > 1.0
    for n in ranks_for(variant):
        got = engine_logits(engine_driver, d, PROMPT, "--tp", n, *opts)
        assert got.shape == ref.shape
        assert rel_err(got, ref) <= REL_TOL, f"{n} ranks"


@pytest.mark.parametrize("variant", sorted(tiny_model.VARIANTS) + sorted(EXTRA))
def test_greedy_equals_single_rank(engine_driver, models, variant):
    d = models[(variant, "f32")]
    prompt = PROMPT[:13]
    # the driver fails (exit 3) unless whole prefill + single decode, chunked prefill, a forked
    # prefix and batched decode of three sequences agree
    args = ("greedy", d, 10, "--block", 4, "--chunk", 3, "--threads", 1)
    r = run(engine_driver, *args, *prompt)
    assert r.returncode == 0, r.stderr
    want = r.stdout.split()
    assert len(want) == 10
    for n in ranks_for(variant):
        r = run(engine_driver, *args[:3], "--tp", n, *args[3:], *prompt)
        assert r.returncode == 0, (n, r.stderr)
        assert r.stdout.split() == want, f"{n} ranks"


def test_o_bias_is_added_once(engine_driver, models):
    # the o bias is replicated on every rank: added by each, the sum would differ
    d = models[("llama_bias", "f32")]
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["attention_bias"] is True
    ref = engine_logits(engine_driver, d, PROMPT[:6], "--threads", 1)
    got = engine_logits(engine_driver, d, PROMPT[:6], "--tp", 4, "--threads", 1)
    assert rel_err(got, ref) <= REL_TOL


@pytest.fixture(scope="module")
def synth(tmp_path_factory, zerostart_asan):
    d = tmp_path_factory.mktemp("tp_run") / "tiny"
    subprocess.run([str(zerostart_asan), "synth", str(d), "--shape", "tiny", "--seed", "9"], check=True,
                   capture_output=True)
    return d


def zs(binary, *args):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_run_tp_equals_single(synth, zerostart_asan):
    args = ("run", synth, "-p", "Hello world, the model starts fast.", "--device", "cpu",
            "--max-tokens", 16, "--ignore-eos", "--threads", 1)
    one = zs(zerostart_asan, *args, "--tp", 1)
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.strip()) > 0
    for n in (2, 3, 4):
        r = zs(zerostart_asan, *args, "--tp", n)
        assert r.returncode == 0, (n, r.stderr)
        assert r.stdout == one.stdout, f"{n} ranks"


def test_load_tp_reads_every_byte_once(synth, zerostart_asan):
    for n in (1, 3, 4):
        r = zs(zerostart_asan, "load", synth, "--device", "cpu", "--tp", n, "--chunk", "8K", "--json",
               "--verify")
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        assert j["ranks"] == n and len(j["rank"]) == n
        assert j["bytes"] == j["checkpoint_bytes"] > 0
        assert j["verified"] is True
        # replicated tensors (norms) go to every rank, everything else to one
        assert sum(x["bytes"] for x in j["rank"]) >= j["checkpoint_bytes"]
    r = zs(zerostart_asan, "load", synth, "--device", "cpu", "--tp", 2)
    assert r.returncode == 0, r.stderr
    assert "= checkpoint tensor bytes" in r.stdout


@pytest.mark.parametrize("cmd", ["run", "load"])
def test_bad_rank_counts_refused(synth, zerostart_asan, cmd):
    extra = ("-p", "hi") if cmd == "run" else ()
    r = zs(zerostart_asan, cmd, synth, *extra, "--device", "cpu", "--tp", 5)
    assert r.returncode == 1
    assert "4 attention heads cannot be split over 5 ranks" in r.stderr
    for bad in ("0", "-2", "65", "x"):
        r = zs(zerostart_asan, cmd, synth, *extra, "--device", "cpu", "--tp", bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert "--tp" in r.stderr
