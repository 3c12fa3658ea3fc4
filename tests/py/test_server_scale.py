"""Scale from zero in `zerostart serve`: keep-alive unloads an idle model and the next request
brings it back from the hot pool with identical greedy output; more models than the device
budget (--device-mem) fit force idle models out and every request still succeeds; a
restarted server re-attaches its pool segment, and a changed checkpoint is refilled; SIGKILL
while the server fills the pool leaves no segment and no stale data; concurrent servers
never exceed the pool capacity. Waits poll observable state with deadlines, never timings."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

import tiny_model
from server_util import Server, make_model_dir, build_tokenizer, serve_binary, CHAT_TEMPLATE

BODY = {"model": "tiny", "prompt": "Hello world, how are", "max_tokens": 8, "temperature": 0}


@pytest.fixture()
def zerostart(request):
    """The release binary, or the ASan one with ZS_SERVE_ASAN=1."""
    return serve_binary(request)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("scale"))[0]


def complete(srv, model="tiny", prompt=BODY["prompt"]):
    st, _, b = srv.post("/v1/completions", dict(BODY, model=model, prompt=prompt))
    assert st == 200, b
    return json.loads(b)["choices"][0]["text"]


def model_info(srv, name="tiny"):
    st, _, b = srv.get("/v1/models/" + name)
    assert st == 200, b
    return json.loads(b)


def startups(srv, name="tiny"):
    st, _, b = srv.get(f"/v1/models/{name}/startups")
    assert st == 200, b
    return json.loads(b)["data"]


def settled_startups(srv, name="tiny", timeout=30):
    """The start-up records once none is in progress: an overlapped start completes its record
    when the loader ends, which may be just after the triggering request was answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = startups(srv, name)
        if all(x["state"] != "starting" for x in s):
            return s
        time.sleep(0.02)
    raise AssertionError(f"a start of {name} never ended: {startups(srv, name)}")


def wait_state(srv, state, name="tiny", timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if model_info(srv, name)["state"] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"model {name} never became {state}: {model_info(srv, name)}")


def pool_ls(binary, pool):
    r = subprocess.run([str(binary), "pool", "ls"], capture_output=True, text=True,
                       env=dict(os.environ, ZS_POOL_DIR=str(pool)))
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_scale_to_zero_and_back(zerostart, model_dir, tmp_path):
    pool = tmp_path / "pool"
    with Server(zerostart, model_dir, "--name", "tiny", "--keep-alive", "1", "--pool-size", "64M",
                "--pool-dir", pool, "--kv-mem", "1M") as srv:
        info = model_info(srv)
        assert info["state"] == "ready" and info["location"] == "device" and info["device"] == "cpu"
        first = complete(srv)
        wait_state(srv, "unloaded")
        info = model_info(srv)
        assert info["location"] == "pool" and info["device"] is None
        assert srv.metrics()['zerostart_model_loaded{model="tiny"}'] == 0
        assert complete(srv) == first
        s = settled_startups(srv)
        assert len(s) == 2
        assert s[0]["trigger"] == "initial" and s[0]["source"] == "pool-filled"
        assert s[1]["trigger"] == "request" and s[1]["source"] == "pool" and s[1]["request_id"]
        for k in ("placed_s", "first_layer_s", "weights_s", "engine_s", "first_token_s"):
            assert s[1][k] is not None and s[1][k] >= 0, k
        # overlapped start: the engine may be ready before the last weights arrive
        assert s[1]["first_layer_s"] <= s[1]["weights_s"]
        assert s[1]["first_layer_s"] <= s[1]["first_token_s"] and s[1]["engine_s"] <= s[1]["first_token_s"]
        assert s[0]["overlap"] is False and s[1]["overlap"] is True
        assert s[1]["bytes"] > 0 and s[1]["state"] == "done"
        m = srv.metrics()
        assert m['zerostart_model_starts_total{source="pool"}'] == 1
        assert m['zerostart_model_starts_total{source="pool-filled"}'] == 1
        assert m['zerostart_model_startup_seconds_count{source="pool"}'] == 1
        # admin: scale to zero now, warm now (protected like the API)
        st, _, b = srv.post("/admin/models/tiny/unload", {})
        assert st == 200 and json.loads(b)["state"] == "unloaded", b
        st, _, b = srv.get("/admin/pool")
        p = json.loads(b)
        assert st == 200 and p["enabled"] and len(p["segments"]) == 1 and p["segments"][0]["in_use"]
        assert p["used_bytes"] <= p["capacity_bytes"]
        st, _, b = srv.post("/admin/models/tiny/load", {})
        assert st == 200 and json.loads(b)["state"] == "ready", b
        assert startups(srv)[-1]["trigger"] == "admin"
        assert complete(srv) == first
        log = srv.log()
    assert "scaled to zero (keep-alive)" in log and "scaled to zero (admin)" in log
    assert "start-up 2" in log


def test_admin_needs_the_api_key(zerostart, model_dir, tmp_path):
    with Server(zerostart, model_dir, "--name", "tiny", "--api-key", "sekret", "--kv-mem", "1M") as srv:
        assert srv.post("/admin/models/tiny/unload", {})[0] == 401
        assert srv.get("/admin/pool")[0] == 401
        auth = {"Authorization": "Bearer sekret"}
        assert srv.post("/admin/models/nope/unload", {}, headers=auth)[0] == 404
        assert srv.get("/admin/models/tiny/unload", headers=auth)[0] == 405
        st, _, b = srv.post("/admin/models/tiny/unload", {}, headers=auth)
        assert st == 200 and json.loads(b)["state"] == "unloaded"
        st, _, b = srv.get("/admin/pool", headers=auth)
        assert st == 200 and json.loads(b)["enabled"] is False
        # no pool: the next request reloads from storage (page cache)
        st, _, b = srv.post("/v1/completions", BODY, headers=auth)
        assert st == 200, b
        st, _, b = srv.get("/v1/models/tiny/startups", headers=auth)
        assert json.loads(b)["data"][-1]["source"] in ("page-cache", "disk")


def copies(model_dir, tmp_path, n):
    out = []
    for i in range(n):
        d = tmp_path / f"m{i}"
        shutil.copytree(model_dir, d)
        out.append(str(d))
    return out


def test_more_models_than_fit(zerostart, model_dir, tmp_path):
    dirs = copies(model_dir, tmp_path, 3)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"keep_alive": 0, "models": [
        {"name": f"m{i}", "path": d, "kv_mem": "1M", "device": "cpu"} for i, d in enumerate(dirs)]}))
    # each model holds about 1.5 MB (weights + 1 MiB KV): two fit in 3.5 MB
    with Server(zerostart, None, "--config", cfg, "--device-mem", "3500K", "--pool-size", "64M",
                "--pool-dir", tmp_path / "pool", log_path=str(tmp_path / "serve.log")) as srv:
        states = {m["id"]: m["state"] for m in json.loads(srv.get("/v1/models")[2])["data"]}
        assert list(states.values()).count("ready") == 2, states  # m0 gave way to m2 at start
        ref = complete(srv, "m2")
        for name in ["m0", "m1", "m2", "m0", "m2", "m1"]:
            assert complete(srv, name) == ref  # same weights in every copy
        # concurrent requests to every model, while watching the device budget
        errors, outs, over = [], [], []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                d = json.loads(srv.get("/admin/pool")[2])["devices"][0]
                if d["used_bytes"] > d["budget_bytes"]:
                    over.append(d)
                time.sleep(0.01)

        def client(name):
            try:
                for _ in range(3):
                    outs.append(complete(srv, name))
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        w = threading.Thread(target=watch)
        w.start()
        th = [threading.Thread(target=client, args=(f"m{i % 3}",)) for i in range(6)]
        for t in th:
            t.start()
        for t in th:
            t.join(120)
        stop.set()
        w.join(10)
        assert not errors, errors
        assert len(outs) == 18 and set(outs) == {ref}
        assert not over, over
        log = srv.log()
    assert "after unloading" in log and "scaled to zero (evicted)" in log


def test_model_larger_than_pool_or_device_is_refused(zerostart, model_dir, tmp_path):
    r = subprocess.run([str(zerostart), "serve", model_dir, "--port", "0", "--pool-size", "100K",
                        "--pool-dir", str(tmp_path / "pool"), "--kv-mem", "1M"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "does not fit in the hot model pool" in r.stderr, r.stderr
    r = subprocess.run([str(zerostart), "serve", model_dir, "--port", "0", "--device-mem", "1M",
                        "--kv-mem", "1M"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "device budget" in r.stderr, r.stderr


def test_restart_reattaches_and_refuses_stale(zerostart, model_dir, tmp_path):
    d = copies(model_dir, tmp_path, 1)[0]
    pool = tmp_path / "pool"
    args = ("--name", "tiny", "--pool-size", "64M", "--pool-dir", pool, "--kv-mem", "1M")
    with Server(zerostart, d, *args) as srv:
        assert startups(srv)[0]["source"] == "pool-filled"
        first = complete(srv)
    seg = list(pool.glob("*.seg"))
    assert len(seg) == 1
    ino = os.stat(seg[0]).st_ino
    with Server(zerostart, d, *args) as srv:
        assert startups(srv)[0]["source"] == "pool"  # re-attached, no refill
        assert complete(srv) == first
    assert os.stat(seg[0]).st_ino == ino
    # the checkpoint changes: the segment is stale and refilled, never served
    st = next(f for f in os.listdir(d) if f.endswith(".safetensors"))
    os.utime(os.path.join(d, st), ns=(time.time_ns(), time.time_ns() + 10**9))
    with Server(zerostart, d, *args) as srv:
        assert startups(srv)[0]["source"] == "pool-filled"
        assert complete(srv) == first
    assert len(list(pool.glob("*.seg"))) == 1
    assert "ready" in pool_ls(zerostart, pool)


def big_model_dir(root):
    """The served tiny model with wide MLPs (about 50 MB) so that a pool fill takes a while."""
    tok = build_tokenizer()
    cfg = tiny_model.make_config("llama")
    cfg.update(vocab_size=tok.get_vocab_size(with_added_tokens=True), max_position_embeddings=512,
               bos_token_id=None, eos_token_id=tok.token_to_id("<|im_end|>"), intermediate_size=8192,
               num_hidden_layers=8)
    d = tiny_model.write_model(str(root), "llama", "f32", config=cfg)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>", "bos_token": None}, f)
    return d


def test_sigkill_while_filling_then_restart(zerostart, tmp_path):
    d = big_model_dir(tmp_path / "big")
    pool = tmp_path / "pool"
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "1M") as srv:  # no pool: the reference
        ref = complete(srv)
    caught = False
    for _ in range(6):
        p = subprocess.Popen([str(zerostart), "serve", d, "--port", "0", "--pool-size", "256M",
                              "--pool-dir", str(pool), "--kv-mem", "1M"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and p.poll() is None and not list(pool.glob("*.seg")):
            time.sleep(0.0005)
        p.send_signal(signal.SIGKILL)
        p.wait()
        listing = pool_ls(zerostart, pool)  # any pool user frees a dead filler's segment
        if not list(pool.glob("*.seg")):
            caught = True
            assert "filling" not in listing
            break
        shutil.rmtree(pool)  # the fill had finished: try again
    assert caught, "never killed the server mid-fill"
    with Server(zerostart, d, "--name", "tiny", "--pool-size", "256M", "--pool-dir", pool,
                "--kv-mem", "1M") as srv:
        assert startups(srv)[0]["source"] == "pool-filled"
        assert complete(srv) == ref
    assert len(list(pool.glob("*.seg"))) == 1


def test_pool_capacity_under_concurrent_starts(zerostart, model_dir, tmp_path):
    dirs = copies(model_dir, tmp_path, 3)
    pool = tmp_path / "pool"
    # each segment is about 460 KB: the pool holds two
    cap = 1000 * 1024
    procs = [subprocess.Popen([str(zerostart), "serve", d, "--name", "tiny", "--port", "0",
                               "--pool-size", str(cap), "--pool-dir", str(pool), "--kv-mem", "1M"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in dirs]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            segs = list(pool.glob("*.seg"))
            assert sum(os.path.getsize(s) for s in segs) <= cap + len(segs) * 65536  # data + headers
            if sum(p.poll() is not None for p in procs) >= 1 and len(segs) >= 2:
                break
            time.sleep(0.01)
        failed = [p for p in procs if p.poll() is not None]
        assert len(failed) == 1, "exactly one server cannot fit"
        err = failed[0].stderr.read()
        assert failed[0].returncode == 1 and "does not fit in the hot model pool" in err, err
        listing = pool_ls(zerostart, pool)
        assert listing.count("ready") == 2
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
            p.stderr.close()
    assert len(list(pool.glob("*.seg"))) == 2


def sse_events(srv, body):
    """POST a streaming completion; returns the decoded `data:` payloads (the server closes
    the stream at the end, so a hang would fail the read's timeout)."""
    st, _, b = srv.post("/v1/completions", dict(body, stream=True))
    assert st == 200, b
    return [line[6:] for line in b.decode().split("\n") if line.startswith("data: ")]


def test_overlapped_scale_from_zero_same_output(zerostart, tmp_path):
    """A request for a scaled-to-zero model is served while its weights stream in (a model
    large enough that the load takes a while), with the same greedy output; the start-up
    record says the engine ran over the arriving weights."""
    d = big_model_dir(tmp_path / "big")
    with Server(zerostart, d, "--name", "tiny", "--keep-alive", "0.5", "--kv-mem", "1M") as srv:
        first = complete(srv)
        for _ in range(2):
            wait_state(srv, "unloaded")
            assert complete(srv) == first
            s = settled_startups(srv)[-1]
            assert s["trigger"] == "request" and s["overlap"] is True and s["state"] == "done", s
            assert s["source"] in ("page-cache", "disk") and s["bytes"] > 40_000_000
            assert 0 <= s["first_layer_s"] <= s["weights_s"], s
            assert s["first_layer_s"] <= s["first_token_s"] and s["engine_s"] <= s["first_token_s"], s
        wait_state(srv, "unloaded")
        text = "".join(json.loads(e)["choices"][0]["text"] for e in sse_events(srv, BODY) if e != "[DONE]")
        assert text == first  # streamed from a scaled-to-zero start too
        assert startups(srv)[-1]["overlap"] is True
        assert srv.metrics()["zerostart_model_start_failures_total"] == 0


def test_load_failure_mid_load_is_an_error_and_serving_goes_on(zerostart, model_dir, tmp_path):
    """The checkpoint is truncated while the model is scaled to zero: the overlapped reload
    fails in the middle, the waiting clients (plain and streaming) get an error, nothing
    hangs, the reservation is released, the other model keeps serving, and once the file is
    whole again the model comes back."""
    dirs = copies(model_dir, tmp_path, 2)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"keep_alive": 0, "models": [
        {"name": f"m{i}", "path": d, "kv_mem": "1M", "device": "cpu"} for i, d in enumerate(dirs)]}))
    with Server(zerostart, None, "--config", cfg, "--device-mem", "64M", log_path=str(tmp_path / "serve.log")) as srv:
        ref = complete(srv, "m0")
        st, _, b = srv.post("/admin/models/m0/unload", {})
        assert st == 200 and json.loads(b)["state"] == "unloaded", b
        used = json.loads(srv.get("/admin/pool")[2])["devices"][0]["used_bytes"]
        shard = next(os.path.join(dirs[0], f) for f in os.listdir(dirs[0]) if f.endswith(".safetensors"))
        whole = open(shard, "rb").read()
        os.truncate(shard, len(whole) // 2)
        try:
            st, _, b = srv.post("/v1/completions", dict(BODY, model="m0"))
            assert st == 503, b
            msg = json.loads(b)["error"]["message"]
            assert "could not be loaded" in msg and "truncated" in msg, msg
            ev = sse_events(srv, dict(BODY, model="m0"))
            assert ev[-1] == "[DONE]" and "could not be loaded" in json.loads(ev[-2])["error"]["message"], ev
            s = startups(srv, "m0")
            assert s[-1]["state"] == "failed" and "truncated" in s[-1]["error"], s[-1]
            assert s[-1]["trigger"] == "request" and s[-1]["overlap"] is True
            wait_state(srv, "unloaded", "m0")  # the answer may come just before the unload
            assert json.loads(srv.get("/admin/pool")[2])["devices"][0]["used_bytes"] == used
            assert complete(srv, "m1") == ref  # the other model is unaffected
            assert srv.get("/health")[0] == 200
            assert srv.metrics()["zerostart_model_start_failures_total"] >= 1
            srv.wait_metric('zerostart_kv_blocks_in_use{model="m1"}', lambda v: v == 0, timeout=30)
        finally:
            with open(shard, "wb") as f:
                f.write(whole)
        assert complete(srv, "m0") == ref
        wait_state(srv, "ready", "m0")  # the loader may end just after the response
        assert settled_startups(srv, "m0")[-1]["state"] == "done"
        log = srv.log()
    assert "could not be loaded" in log


def test_unload_during_load_is_safe(zerostart, tmp_path):
    """Admin unload while an admin load streams the weights in: the load is cancelled or
    completes, either way the model ends unloaded with its memory released, the admin load
    answers (never hangs), and the model serves the same output afterwards. An unload asked
    while a request runs waits for the request."""
    d = big_model_dir(tmp_path / "big")
    with Server(zerostart, d, "--name", "tiny", "--keep-alive", "0", "--kv-mem", "1M") as srv:
        first = complete(srv)
        outcomes = []
        for _ in range(3):
            st, _, b = srv.post("/admin/models/tiny/unload", {})
            assert st == 200, b
            res = {}
            t = threading.Thread(target=lambda: res.update(r=srv.post("/admin/models/tiny/load", {})))
            t.start()
            deadline = time.monotonic() + 30
            while model_info(srv)["state"] == "unloaded" and t.is_alive() and time.monotonic() < deadline:
                time.sleep(0.001)
            st, _, b = srv.post("/admin/models/tiny/unload", {})
            assert st in (200, 202), b
            t.join(60)
            assert not t.is_alive(), "admin load hung"
            assert res["r"][0] in (200, 503), res
            wait_state(srv, "unloaded")
            outcomes.append(startups(srv)[-1]["state"])
            assert json.loads(srv.get("/admin/pool")[2])["devices"][0]["used_bytes"] == 0
        assert set(outcomes) <= {"done", "cancelled"}, outcomes
        # a request in flight: the unload waits for it
        res = {}
        t = threading.Thread(target=lambda: res.update(r=complete(srv)))
        t.start()
        deadline = time.monotonic() + 30
        while model_info(srv)["state"] == "unloaded" and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        srv.post("/admin/models/tiny/unload", {})
        t.join(60)
        assert res.get("r") == first
        wait_state(srv, "unloaded")
        assert complete(srv) == first


def test_kernel_warmup_on_cpu(zerostart, model_dir):
    """--warmup on runs the throw-away forward at start (on GPUs it is the default): recorded
    in the initial start-up, and the output is what a server without it gives."""
    with Server(zerostart, model_dir, "--name", "tiny", "--kv-mem", "1M", "--warmup", "off") as srv:
        ref = complete(srv)
        assert startups(srv)[0]["warmup_s"] is None
    with Server(zerostart, model_dir, "--name", "tiny", "--kv-mem", "1M", "--warmup", "on") as srv:
        s = startups(srv)[0]
        assert s["trigger"] == "initial" and s["warmup_s"] is not None and s["warmup_s"] >= 0
        assert srv.metrics()['zerostart_kv_blocks_allocated{model="tiny"}'] == 0  # nothing left behind
        assert complete(srv) == ref
        log = srv.log()
    assert "kernel warm-up in" in log
