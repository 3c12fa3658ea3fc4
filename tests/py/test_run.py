"""End-to-end tests of `zerostart run` on a synthetic checkpoint (HF layout with tokenizer.json
and a chat template): greedy text equals the numpy reference forward pass decoded by the
reference `tokenizers` package, plain and through the chat template; seeded sampling is
reproducible; bad input gives clear errors. Runs the ASan build of the command."""
import json
import pathlib
import subprocess

import jinja2
import numpy as np
import pytest
from safetensors import deserialize
from tokenizers import Tokenizer

import ref_llama


@pytest.fixture(scope="module")
def model(tmp_path_factory, zerostart_asan):
    d = tmp_path_factory.mktemp("run") / "tiny"
    subprocess.run([str(zerostart_asan), "synth", str(d), "--shape", "tiny", "--seed", "5"], check=True,
                   capture_output=True)
    return d


def reference_weights(d):
    cfg = json.loads((d / "config.json").read_text())
    w = {}
    for shard in sorted(d.glob("*.safetensors")):
        for name, t in deserialize(shard.read_bytes()):
            assert t["dtype"] in ("bfloat16", "BF16")
            a = (np.frombuffer(bytes(t["data"]), dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            w[name] = a.reshape(t["shape"]).astype(np.float64)
    return cfg, w


def reference_text(d, ids, steps):
    cfg, w = reference_weights(d)
    eos = json.loads((d / "generation_config.json").read_text())["eos_token_id"]
    out = []
    toks, gaps = ref_llama.greedy(cfg, w, list(ids), steps)
    for t, gap in zip(toks, gaps):
        if t in eos:
            break
        # float32 in C against float64 here: a near-tie would make the comparison meaningless
        assert gap > 1e-4, f"reference top-2 logits within {gap}: pick another prompt"
        out.append(t)
    return Tokenizer.from_file(str(d / "tokenizer.json")).decode(out, skip_special_tokens=True)


def run(binary, *args):
    return subprocess.run([str(binary), "run", *map(str, args)], capture_output=True)


def test_greedy_matches_reference(model, zerostart_asan):
    prompt = "Hello world, the model starts fast."
    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(prompt).ids
    r = run(zerostart_asan, model, "-p", prompt, "--max-tokens", 12, "--device", "cpu")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode("utf-8") == reference_text(model, ids, 12) + "\n"
    assert b"first token" in r.stderr and b"timeline" in r.stderr


def test_chat_greedy_matches_reference(model, zerostart_asan):
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"}]
    text = env.from_string(cfg["chat_template"]).render(messages=msgs, add_generation_prompt=True,
                                                         bos_token=cfg["bos_token"], eos_token=cfg["eos_token"])
    ids = Tokenizer.from_file(str(model / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    r = run(zerostart_asan, model, "-p", "Who are you?", "--system", "Be brief.", "--chat", "--max-tokens", 10,
            "--device", "cpu")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode("utf-8") == reference_text(model, ids, 10) + "\n"
    assert f"prompt    {len(ids)} tokens".encode() in r.stderr


def test_seeded_sampling_is_reproducible(model, zerostart_asan):
    args = (model, "-p", "the", "--temperature", "0.9", "--top-p", "0.95", "--seed", "7", "--max-tokens", "24")
    a, b = run(zerostart_asan, *args), run(zerostart_asan, *args)
    assert a.returncode == 0 and a.stdout == b.stdout


@pytest.mark.parametrize("args,code,needle", [
    (["-p", "x", "--max-tokens", "0"], 2, b"--max-tokens"),
    (["-p", "x", "--temperature", "nan"], 2, b"--temperature"),
    (["-p", "x", "--device", "tpu"], 2, b"unknown device"),
    (["--bogus"], 2, b"usage"),
])
def test_bad_arguments(model, zerostart_asan, args, code, needle):
    r = run(zerostart_asan, model, *args)
    assert r.returncode == code
    assert needle in r.stderr


def test_missing_model_and_tokenizer(tmp_path, model, zerostart_asan):
    r = run(zerostart_asan, tmp_path / "nope", "-p", "x")
    assert r.returncode == 1 and b"nope" in r.stderr
    d = tmp_path / "notok"
    d.mkdir()
    for f in model.iterdir():
        if f.name != "tokenizer.json":
            (d / f.name).write_bytes(f.read_bytes())
    r = run(zerostart_asan, d, "-p", "x")
    assert r.returncode == 1 and b"no tokenizer.json" in r.stderr


def test_run_through_the_pool_with_timeline(model, zerostart_asan, tmp_path):
    import os
    env = dict(os.environ, ZS_POOL_DIR=str(tmp_path / "pool"))
    plain = run(zerostart_asan, model, "-p", "the model", "--max-tokens", 8)
    sources = []
    for i in range(2):
        tl = tmp_path / f"tl{i}.json"
        r = subprocess.run([str(zerostart_asan), "run", str(model), "-p", "the model", "--max-tokens", "8", "--pool",
                            "--timeline-json", str(tl)], capture_output=True, env=env)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == plain.stdout
        t = json.loads(tl.read_text())
        sources.append(t["source"])
        assert t["bytes"] > 0 and t["model"] == str(model)
        # the engine is built while the weights stream in; the first token needs them all
        assert 0 < t["opened_s"] <= t["first_layer_s"] <= t["weights_s"] <= t["first_token_s"]
        assert t["opened_s"] <= t["engine_s"] <= t["first_token_s"]
    assert sources == ["pool-filled", "pool"]
