"""Round-trip tests of the checkpoint reader and loader against files written and read by the
reference `safetensors` package: every dtype, scalars, empty tensors, odd sizes, tensors
spanning many chunks, thousands of small tensors, unaligned offsets, sharded directories,
O_DIRECT on and off, and a file system without O_DIRECT."""
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
from safetensors import deserialize

from st_writer import DTYPES, random_bytes, write_raw, write_reference

MODES = [(1, 4096, -1), (4, 65536, 1), (3, 4 << 20, 0)]


def run_dump(driver, path, out, threads=4, chunk=4 << 20, direct=-1):
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([str(driver), "dump", str(path), str(out), str(threads), str(chunk), str(direct)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = {}
    for line in (out / "manifest.tsv").read_text().splitlines():
        idx, name, dtype, shape, nbytes = line.split("\t")
        shape = [int(x) for x in shape.split(",")] if shape else []
        got[name] = (dtype, shape, (out / f"{idx}.bin").read_bytes())
        assert len(got[name][2]) == int(nbytes)
    return got


def reference_read(path):
    """The reference package's view of a file: {name: (dtype, shape, bytes)}."""
    return {name: (v["dtype"], v["shape"], bytes(v["data"]))
            for name, v in deserialize(pathlib.Path(path).read_bytes())}


def assert_same(got, ref):
    assert set(got) == set(ref)
    for name in ref:
        assert got[name][0] == ref[name][0], name
        assert got[name][1] == list(ref[name][1]), name
        assert got[name][2] == ref[name][2], f"bytes of {name} differ"


@pytest.mark.parametrize("threads,chunk,direct", MODES)
def test_every_dtype_scalars_empty_odd(tmp_path, load_driver, threads, chunk, direct):
    rng = np.random.default_rng(1)
    tensors = {}
    for i, dtype in enumerate(DTYPES):
        for shape in ([3, 5, 7], [], [0], [4, 0, 2], [1], [13]):
            tensors[f"t{i}.{len(tensors)}"] = (dtype, shape, random_bytes(rng, dtype, shape))
    f = tmp_path / "all.safetensors"
    write_reference(f, tensors, {"format": "pt"})
    got = run_dump(load_driver, f, tmp_path / "out", threads, chunk, direct)
    assert_same(got, reference_read(f))


@pytest.mark.parametrize("threads,chunk,direct", MODES)
def test_many_chunks_and_many_tensors(tmp_path, load_driver, threads, chunk, direct):
    rng = np.random.default_rng(2)
    tensors = {"big": ("BF16", [1531, 1023], random_bytes(rng, "BF16", [1531, 1023]))}
    for i in range(3000):
        dtype = ["F32", "F16", "U8", "I64"][i % 4]
        shape = [int(rng.integers(1, 40))]
        tensors[f"small.{i}"] = (dtype, shape, random_bytes(rng, dtype, shape))
    f = tmp_path / "many.safetensors"
    write_reference(f, tensors)
    got = run_dump(load_driver, f, tmp_path / "out", threads, chunk, direct)
    assert_same(got, reference_read(f))


def test_unaligned_offsets(tmp_path, load_driver):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=81, dtype=np.uint8).tobytes()
    entries = {
        "u8": ("U8", [3], 0, 3),
        "f32_at_3": ("F32", [5], 3, 23),       # unaligned for its dtype
        "f64_at_23": ("F64", [2], 23, 39),
        "bf16_at_39": ("BF16", [7, 3], 39, 81),
        "empty": ("F16", [0], 81, 81),
    }
    f = tmp_path / "unaligned.safetensors"
    write_raw(f, entries, data)
    for threads, chunk, direct in MODES:
        got = run_dump(load_driver, f, tmp_path / f"out{threads}", threads, chunk, direct)
        assert_same(got, reference_read(f))


def test_gaps_between_tensors(tmp_path, load_driver):
    # The reference reader refuses gaps; zerostart accepts them (no byte is shared) and
    # must still return exactly each tensor's own bytes.
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=9000, dtype=np.uint8).tobytes()
    entries = {"a": ("F32", [3], 5, 17), "b": ("I16", [10], 29, 49), "c": ("U8", [100], 8000, 8100)}
    f = tmp_path / "gaps.safetensors"
    write_raw(f, entries, data)
    for threads, chunk, direct in MODES:
        got = run_dump(load_driver, f, tmp_path / f"out{threads}", threads, chunk, direct)
        for name, (dtype, shape, b, e) in entries.items():
            assert got[name] == (dtype, shape, data[b:e]), name


def test_sharded_directory_with_index(tmp_path, load_driver):
    rng = np.random.default_rng(4)
    model = tmp_path / "model"
    model.mkdir()
    weight_map, ref = {}, {}
    for s in range(3):
        tensors = {f"model.layers.{s * 2 + k}.w": ("BF16", [33, 65], random_bytes(rng, "BF16", [33, 65]))
                   for k in range(2)}
        name = f"model-{s + 1:05d}-of-00003.safetensors"
        write_reference(model / name, tensors)
        weight_map.update({t: name for t in tensors})
        ref.update(reference_read(model / name))
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (model / "config.json").write_text("{}")
    got = run_dump(load_driver, model, tmp_path / "out", 4, 8192, -1)
    assert_same(got, ref)


def test_tmpfs_has_no_o_direct(tmp_path, load_driver):
    shm = pathlib.Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this machine")
    rng = np.random.default_rng(5)
    d = shm / f"zs-rt-{os.getpid()}"
    d.mkdir(exist_ok=True)
    try:
        f = d / "m.safetensors"
        write_reference(f, {"w": ("F32", [1000, 33], random_bytes(rng, "F32", [1000, 33]))})
        got = run_dump(load_driver, f, tmp_path / "out", 2, 8192, 1)  # O_DIRECT forced
        assert_same(got, reference_read(f))
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


@pytest.mark.parametrize("cut", [0, 5, 8, 20, -1])
def test_truncated_files_give_clear_errors(tmp_path, load_driver, cut):
    rng = np.random.default_rng(6)
    f = tmp_path / "t.safetensors"
    write_reference(f, {"w": ("F32", [64], random_bytes(rng, "F32", [64]))})
    raw = f.read_bytes()
    f.write_bytes(raw[:cut] if cut >= 0 else raw[:-1])
    r = subprocess.run([str(load_driver), "dump", str(f), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "t.safetensors" in r.stderr
    assert "AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
