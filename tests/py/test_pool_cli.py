"""The hot model pool through the command line, across processes: `pool warm` fills it,
another process's `load --pool --verify` copies from it (a hit), a changed checkpoint is
refilled, `pool warm` killed with SIGKILL mid-fill leaves no segment behind, eviction."""
import os
import signal
import subprocess
import time

import pytest


@pytest.fixture()
def env(tmp_path, zerostart_asan):
    model = tmp_path / "m"
    subprocess.run([str(zerostart_asan), "synth", str(model), "--shape", "small", "--seed", "4"], check=True,
                   capture_output=True)
    e = dict(os.environ, ZS_POOL_DIR=str(tmp_path / "pool"))
    return zerostart_asan, model, e, tmp_path / "pool"


def zs(binary, env, *args):
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, env=env)


def test_warm_then_load_from_pool(env):
    binary, model, e, _ = env
    r = zs(binary, e, "pool", "warm", model)
    assert r.returncode == 0 and "filled from storage" in r.stdout, r.stderr
    r = zs(binary, e, "load", model, "--pool", "--verify", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "pool        " in r.stdout and " hit" in r.stdout and "matches a buffered read" in r.stdout
    r = zs(binary, e, "pool", "ls")
    assert "ready" in r.stdout and str(model) in r.stdout
    assert zs(binary, e, "pool", "verify", model).returncode == 0
    # a changed checkpoint is never served stale
    subprocess.run([str(binary), "synth", str(model), "--shape", "small", "--seed", "5"], check=True,
                   capture_output=True)
    r = zs(binary, e, "load", model, "--pool", "--verify", "--device", "cpu")
    assert r.returncode == 0 and "refilled (checkpoint changed)" in r.stdout, r.stdout + r.stderr
    assert zs(binary, e, "pool", "evict", model).returncode == 0
    assert str(model) not in zs(binary, e, "pool", "ls").stdout


def test_sigkill_during_fill_leaves_nothing(env):
    binary, model, e, pool = env
    caught = False
    for _ in range(5):
        p = subprocess.Popen([str(binary), "pool", "warm", str(model)], env=e, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not list(pool.glob("*.seg")) and p.poll() is None:
            time.sleep(0.0005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        listing = zs(binary, e, "pool", "ls").stdout  # opening the pool recovers it
        if "filling" in listing or not list(pool.glob("*.seg")):
            caught = True
            assert "filling" not in listing
            assert not list(pool.glob("*.seg"))
            break
        zs(binary, e, "pool", "evict", model)  # the fill had finished: try again
    assert caught, "never killed the filler mid-fill"


def test_pool_errors(env, tmp_path):
    binary, model, e, _ = env
    r = zs(binary, e, "pool", "warm", model, "--pool-size", "1M")
    assert r.returncode == 1 and "but the pool holds" in r.stderr
    r = zs(binary, e, "pool", "verify", model)
    assert r.returncode == 1 and "no segment" in r.stderr
    assert zs(binary, e, "pool", "frobnicate").returncode == 2
    r = zs(binary, e, "pool", "warm", tmp_path / "missing")
    assert r.returncode == 1 and "missing" in r.stderr
