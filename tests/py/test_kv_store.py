"""KV warm start in `zerostart serve` (CPU, tiny model, real HTTP): prefixes that left the GPU
cache come back from the host tier, prefixes survive a restart on the disk tier, tenants
(cache_salt) never share blocks, damaged or tampered block files are rejected and recomputed,
SIGKILL during write-back leaves a store the next server opens cleanly, conversation turns
prefill only their new message, many concurrent requests sharing a prefix all succeed — and
greedy outputs are the same with and without the store. Assertions are on usage, metrics
and files, never on timings."""
import glob
import json
import os
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from server_util import Server, make_model_dir, serve_binary

BS = 16  # the engine's KV block size


@pytest.fixture()
def zerostart(request):
    return serve_binary(request)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d, tok = make_model_dir(tmp_path_factory.mktemp("kvstore"))
    return d, tok.get_vocab_size(with_added_tokens=True)


def ids(n, seed, vocab):
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(3, vocab - 3, size=n)]


def complete(srv, prompt, salt=None, max_tokens=8):
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if salt is not None:
        body["cache_salt"] = salt
    st, _, b = srv.post("/v1/completions", body)
    assert st == 200, b
    r = json.loads(b)
    return r["choices"][0]["text"], r["usage"]


def kv(u):
    return u["kv_cache"]


def restored(u):
    return kv(u)["host_tokens"] + kv(u)["disk_tokens"]


TIGHT = ("--name", "tiny", "--kv-mem", "256K")  # 32 blocks: one 300-token request at a time


def test_host_tier_brings_back_evicted_prefix(zerostart, model):
    d, vocab = model
    p, q = ids(300, 1, vocab), ids(300, 2, vocab)
    with Server(zerostart, d, *TIGHT, "--kv-host", "16M") as srv:
        t1, u1 = complete(srv, p)
        assert u1["prompt_tokens_details"]["cached_tokens"] == 0 and kv(u1)["computed_tokens"] == 300
        complete(srv, q)  # needs the KV cache: p's blocks leave the GPU for host memory
        m = srv.metrics()
        assert m['zerostart_kv_exported_blocks_total{model="tiny"}'] >= 18
        assert m['zerostart_kv_store_host_blocks{model="tiny"}'] >= 18
        t2, u2 = complete(srv, p)
        assert kv(u2)["gpu_tokens"] == 0
        assert kv(u2)["host_tokens"] == 288  # every full block but the one holding the last token
        assert kv(u2)["computed_tokens"] == 12 and u2["prompt_tokens_details"]["cached_tokens"] == 288
        assert kv(u2)["restore_s"] >= 0
        # the time to first token splits at the restore's start and the admission
        assert kv(u1)["restore_began_s"] == 0 and kv(u1)["admitted_s"] >= 0
        assert 0 < kv(u2)["restore_began_s"] <= kv(u2)["admitted_s"]
        assert t2 == t1
        m = srv.metrics()
        assert m['zerostart_kv_prompt_tokens_total{source="host"}'] >= 288
        assert m["zerostart_kv_restore_seconds_count"] >= 1
    with Server(zerostart, d, *TIGHT, "--kv-host", "0") as ref:  # no store: the reference
        t3, u3 = complete(ref, p)
        complete(ref, q)
        t4, u4 = complete(ref, p)
        assert restored(u4) == 0 and kv(u4)["computed_tokens"] == 300
        assert t3 == t1 and t4 == t1


def test_disk_tier_survives_restart(zerostart, model, tmp_path):
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    p = ids(300, 3, vocab)
    args = TIGHT + ("--kv-host", "16M", "--kv-disk", kvdir)
    with Server(zerostart, d, *args) as srv:
        t1, u1 = complete(srv, p)
        assert kv(u1)["computed_tokens"] == 300
    # SIGTERM: the GPU cache's prefixes went to the store, the store to disk
    files = glob.glob(os.path.join(kvdir, "*", "*", "*.kvb"))
    assert len(files) >= 18, files
    names = sorted(os.path.basename(f) for f in files)
    with Server(zerostart, d, *args) as srv:
        srv.wait_metric('zerostart_kv_store_disk_blocks{model="tiny"}', lambda v: v == len(files))
        t2, u2 = complete(srv, p)
        assert kv(u2)["disk_tokens"] == 288 and kv(u2)["gpu_tokens"] == 0
        assert t2 == t1
        assert srv.metrics()['zerostart_kv_prompt_tokens_total{source="disk"}'] == 288
    # the same prompt names the same blocks in every process (stable keys, no seeds)
    assert set(names) <= set(os.path.basename(f) for f in glob.glob(os.path.join(kvdir, "*", "*", "*.kvb")))


def test_restore_takes_in_blocks_while_the_rest_are_read(zerostart_asan, model, tmp_path):
    """A restore from a slow disk (a reader sleeps 400 ms before each block) gives the request
    its sequence at once and appends the blocks read so far while the rest are still read, so
    their copies into the KV cache overlap the reads; the answer is the one computed before.
    A client that goes away while its blocks are read frees the sequence, and the blocks it
    had taken in serve the next request from the GPU cache. (ASan build.)"""
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    p = ids(500, 9, vocab)  # 31 full blocks before the last token
    args = ("--name", "tiny", "--kv-mem", "1M", "--kv-host", "16M", "--kv-disk", kvdir)
    with Server(zerostart_asan, d, *args) as srv:
        t1, u1 = complete(srv, p)
        assert kv(u1)["computed_tokens"] == 500
    with Server(zerostart_asan, d, *args, "--kv-read-delay-ms", "400") as srv:
        srv.wait_metric('zerostart_kv_store_disk_blocks{model="tiny"}', lambda v: v >= 31)
        t2, u2 = complete(srv, p)
        assert kv(u2)["disk_tokens"] == 496 and kv(u2)["gpu_tokens"] == 0
        assert kv(u2)["computed_tokens"] == 4
        assert t2 == t1
        m = srv.metrics()
        # the first progress report comes after 16 blocks, with 15 still to read (at least one
        # more 400 ms wave of reads whatever the number of reader threads)
        assert m['zerostart_kv_restore_overlapped_blocks_total{model="tiny"}'] >= 16
        assert m['zerostart_kv_blocks_in_use{model="tiny"}'] == 0
    with Server(zerostart_asan, d, *args, "--kv-read-delay-ms", "400") as srv:
        srv.wait_metric('zerostart_kv_store_disk_blocks{model="tiny"}', lambda v: v >= 31)
        body = json.dumps({"model": "tiny", "prompt": p, "max_tokens": 8, "temperature": 0,
                           "stream": True}).encode()
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        # counted as taken in, so read and in the sequence, while 15 blocks are still read
        srv.wait_metric('zerostart_kv_restore_overlapped_blocks_total{model="tiny"}', lambda v: v >= 16)
        sock.close()  # gone while the rest of its blocks are read
        srv.wait_metric("zerostart_requests_cancelled_total", lambda v: v >= 1)
        srv.wait_metric('zerostart_kv_blocks_in_use{model="tiny"}', lambda v: v == 0)
        t3, u3 = complete(srv, p)
        assert kv(u3)["gpu_tokens"] >= 256  # what the cancelled request had taken in
        assert kv(u3)["gpu_tokens"] + restored(u3) + kv(u3)["computed_tokens"] == 500
        assert t3 == t1


def test_tenants_never_share(zerostart, model, tmp_path):
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    p = ids(200, 4, vocab)
    args = ("--name", "tiny", "--kv-mem", "1M", "--kv-host", "16M", "--kv-disk", kvdir)
    with Server(zerostart, d, *args) as srv:
        ta, ua = complete(srv, p, salt="tenant-a")
        assert ua["prompt_tokens_details"]["cached_tokens"] == 0
        tb, ub = complete(srv, p, salt="tenant-b")  # same prompt, other tenant: nothing shared
        assert ub["prompt_tokens_details"]["cached_tokens"] == 0
        tn, un = complete(srv, p)  # no salt is a tenant of its own
        assert un["prompt_tokens_details"]["cached_tokens"] == 0
        ta2, ua2 = complete(srv, p, salt="tenant-a")
        assert kv(ua2)["gpu_tokens"] == 192
        assert ta == tb == tn == ta2
        st, _, b = srv.post("/v1/completions", {"model": "tiny", "prompt": p, "cache_salt": 7})
        assert st == 400 and b"cache_salt" in b
        st, _, b = srv.post("/v1/completions", {"model": "tiny", "prompt": p, "cache_salt": ""})
        assert st == 400
    with Server(zerostart, d, *args) as srv:  # after a restart, from disk: still per tenant
        _, uc = complete(srv, p, salt="tenant-c")
        assert uc["prompt_tokens_details"]["cached_tokens"] == 0
        _, ub2 = complete(srv, p, salt="tenant-b")
        assert kv(ub2)["disk_tokens"] == 192


def test_damaged_files_are_rejected(zerostart, model, tmp_path):
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    p = ids(300, 5, vocab)
    args = TIGHT + ("--kv-host", "16M", "--kv-disk", kvdir)
    with Server(zerostart, d, *args) as srv:
        t1, _ = complete(srv, p)
    files = sorted(glob.glob(os.path.join(kvdir, "*", "*", "*.kvb")))
    assert len(files) >= 18
    # one file with a flipped payload byte, one truncated, one with a forged header field
    with open(files[0], "r+b") as f:
        f.seek(300)
        b = f.read(1)
        f.seek(300)
        f.write(bytes([b[0] ^ 0xFF]))
    os.truncate(files[1], os.path.getsize(files[1]) // 2)
    with open(files[2], "r+b") as f:
        f.seek(80)  # the chain position, covered by the header checksum
        b = f.read(1)
        f.seek(80)
        f.write(bytes([b[0] ^ 0x40]))
    with Server(zerostart, d, *args) as srv:
        t2, u2 = complete(srv, p)
        assert t2 == t1  # whatever was restored is intact, the rest recomputed
        srv.wait_metric('zerostart_kv_store_rejected_files_total{model="tiny"}', lambda v: v >= 2)
        # a damaged block ends the usable prefix: at most the blocks before the first damaged one
        assert kv(u2)["computed_tokens"] + restored(u2) == 300
    for f in files[:3]:
        assert not os.path.exists(f) or os.path.getsize(f) > 0


def test_sigkill_during_writeback(zerostart, model, tmp_path):
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    prompts = [ids(300, 10 + i, vocab) for i in range(6)]
    args = TIGHT + ("--kv-host", "16M", "--kv-disk", kvdir)
    srv = Server(zerostart, d, *args)
    try:
        outs = [complete(srv, p)[0] for p in prompts]  # each evicts the previous: write-backs queue
    finally:
        srv.proc.send_signal(signal.SIGKILL)
        srv.stop()
    with Server(zerostart, d, *args) as srv:
        assert not glob.glob(os.path.join(kvdir, "*", "*", ".tmp-*"))  # crashed writers cleaned
        for p, want in zip(prompts, outs):
            got, u = complete(srv, p)
            assert got == want
            assert kv(u)["computed_tokens"] + restored(u) + kv(u)["gpu_tokens"] == 300


def test_conversation_turns_prefill_only_the_new_message(zerostart, model):
    d, _ = model
    msgs = [{"role": "system", "content": "You are a helpful assistant. Answer briefly and politely."}]
    turns = ["Hello, how are you today?", "What did the quick brown fox do?",
             "In 2024 the server handled how many requests?", "def encode(self, text: str)",
             "naïve café résumé"]

    def chat(srv, history):
        st, _, b = srv.post("/v1/chat/completions", {"model": "tiny", "messages": history,
                                                     "max_tokens": 12, "temperature": 0})
        assert st == 200, b
        r = json.loads(b)
        return r["choices"][0]["message"]["content"], r["usage"]

    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "1M") as srv:
        history, prev_prompt, replies = list(msgs), 0, []
        for i, t in enumerate(turns):
            history.append({"role": "user", "content": t})
            reply, u = chat(srv, history)
            replies.append(reply)
            if i > 0:  # everything before this turn's message came from the cache
                assert u["prompt_tokens_details"]["cached_tokens"] >= (prev_prompt // BS) * BS - BS, (i, u)
                assert kv(u)["computed_tokens"] < u["prompt_tokens"] - prev_prompt + 2 * BS, (i, u)
            prev_prompt = u["prompt_tokens"]
            history.append({"role": "assistant", "content": reply})
    # the same conversation, each turn on a fresh server (nothing cached): same replies
    history = list(msgs)
    for i, t in enumerate(turns):
        history.append({"role": "user", "content": t})
        with Server(zerostart, d, "--name", "tiny", "--kv-mem", "1M", "--kv-host", "0") as ref:
            reply, u = chat(ref, history)
        assert u["prompt_tokens_details"]["cached_tokens"] == 0
        assert reply == replies[i], i
        history.append({"role": "assistant", "content": reply})


def test_concurrent_requests_sharing_a_prefix(zerostart, model):
    d, vocab = model
    system = ids(160, 20, vocab)
    prompts = [system + ids(40, 100 + i, vocab) for i in range(24)]
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "512K", "--kv-host", "4M") as ref:
        want = [complete(ref, p)[0] for p in prompts]  # one at a time
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "512K", "--kv-host", "4M") as srv:
        results = [None] * len(prompts)

        def run(i):
            results[i] = complete(srv, prompts[i])

        th = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
        for t in th:
            t.start()
        for t in th:
            t.join()
        assert [r[0] for r in results] == want
        assert sum(r[1]["prompt_tokens_details"]["cached_tokens"] for r in results) >= 160 * 12
        m = srv.metrics()
        assert m['zerostart_kv_blocks_in_use{model="tiny"}'] == 0


def wait_context(srv, cid, status, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st, _, b = srv.get("/v1/contexts/" + cid)
        assert st == 200, b
        c = json.loads(b)
        if c["status"] == status:
            return c
        assert c["status"] != "failed", c
        time.sleep(0.02)
    raise AssertionError(f"context {cid} never became {status}: {c}")


SYSTEM = [{"role": "system", "content": "You are a helpful assistant. Answer briefly and politely. "
                                        "In 2024 the server handled 1234567 requests at 99.95% availability. "
                                        "def encode(self, text: str) -> list[int]: return [self.vocab[t] for t in text]"}]


def test_contexts_api_and_precompute(zerostart, model):
    d, vocab = model
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "1M") as srv:
        st, _, b = srv.post("/v1/contexts", {"model": "tiny", "name": "sys", "messages": SYSTEM})
        assert st == 201, b
        c = json.loads(b)
        assert c["id"] == "sys" and c["object"] == "context" and c["tokens"] > 2 * BS
        c = wait_context(srv, "sys", "ready")
        assert c["cached_tokens"] == (c["tokens"] // BS) * BS and c["progress_tokens"] == c["tokens"]
        # a conversation that starts with the context prefills only what follows it
        msgs = SYSTEM + [{"role": "user", "content": "Hello, how are you today?"}]
        st, _, b = srv.post("/v1/chat/completions", {"model": "tiny", "messages": msgs, "max_tokens": 4,
                                                     "temperature": 0})
        assert st == 200, b
        u = json.loads(b)["usage"]
        assert u["kv_cache"]["gpu_tokens"] >= c["cached_tokens"] - BS, (u, c)
        # list, duplicates, errors, delete
        st, _, b = srv.post("/v1/contexts", {"model": "tiny", "prompt": ids(40, 7, vocab)})
        assert st == 201
        gen_id = json.loads(b)["id"]
        assert gen_id.startswith("ctx-")
        st, _, b = srv.get("/v1/contexts")
        assert st == 200 and {x["id"] for x in json.loads(b)["data"]} == {"sys", gen_id}
        st, _, b = srv.get("/v1/contexts?model=other")
        assert st == 200 and json.loads(b)["data"] == []
        st, _, b = srv.post("/v1/contexts", {"model": "tiny", "name": "sys", "prompt": "x"})
        assert st == 409 and json.loads(b)["error"]["code"] == "context_exists"
        st, _, b = srv.post("/v1/contexts", {"model": "nope", "prompt": "x"})
        assert st == 404
        for bad in [{"model": "tiny"}, {"model": "tiny", "prompt": "x", "messages": SYSTEM},
                    {"model": "tiny", "prompt": "x", "name": "bad name!"}, {"model": "tiny", "prompt": [99999]},
                    {"model": "tiny", "prompt": "x", "cache_salt": ""}]:
            st, _, b = srv.post("/v1/contexts", bad)
            assert st == 400, (bad, b)
        st, _, b = srv.post("/v1/contexts", b"{not json")
        assert st == 400
        st, _, b = srv.get("/v1/contexts/nope")
        assert st == 404
        req = urllib_request(srv, "DELETE", "/v1/contexts/" + gen_id)
        assert req[0] == 200 and json.loads(req[1])["deleted"] is True
        assert urllib_request(srv, "DELETE", "/v1/contexts/" + gen_id)[0] == 404
        m = srv.metrics()
        assert m['zerostart_contexts_ready{model="tiny"}'] >= 1


def urllib_request(srv, method, path):
    import urllib.request
    req = urllib.request.Request(srv.url + path, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_contexts_survive_restart(zerostart, model, tmp_path):
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    doc = ids(250, 8, vocab)
    args = ("--name", "tiny", "--kv-mem", "1M", "--kv-disk", kvdir)
    with Server(zerostart, d, *args) as srv:
        st, _, b = srv.post("/v1/contexts", {"model": "tiny", "name": "doc", "prompt": doc, "cache_salt": "t"})
        assert st == 201, b
        c1 = wait_context(srv, "doc", "ready")
        assert c1["restored_tokens"] == 0
        want, _ = complete(srv, doc + ids(20, 9, vocab), salt="t")
    assert os.path.exists(os.path.join(kvdir, "contexts.json"))
    with Server(zerostart, d, *args) as srv:
        c2 = wait_context(srv, "doc", "ready")  # known again, brought back from disk, not recomputed
        assert c2["restored_tokens"] == (250 // BS) * BS
        got, u = complete(srv, doc + ids(20, 9, vocab), salt="t")
        assert got == want and kv(u)["gpu_tokens"] == (250 // BS) * BS
        _, u2 = complete(srv, doc + ids(20, 9, vocab))  # another tenant: not shared
        assert u2["prompt_tokens_details"]["cached_tokens"] == 0


def test_precompute_yields_to_live_requests(zerostart, model):
    d, vocab = model
    args = ("--name", "tiny", "--kv-mem", "1M", "--max-batch", "4", "--step-tokens", "16", "--step-delay-ms", "40")
    with Server(zerostart, d, *args) as srv:
        st, _, b = srv.post("/v1/contexts", {"model": "tiny", "name": "long", "prompt": ids(480, 11, vocab)})
        assert st == 201, b
        deadline = time.monotonic() + 60
        while True:  # computing, part way
            c = json.loads(srv.get("/v1/contexts/long")[2])
            if c["status"] == "computing" and c["progress_tokens"] > 0:
                break
            assert time.monotonic() < deadline and c["status"] != "ready", c
            time.sleep(0.005)
        before = c["progress_tokens"]
        text, u = complete(srv, ids(40, 12, vocab), max_tokens=6)  # live: 3 prefill steps + 5 decode steps
        after = json.loads(srv.get("/v1/contexts/long")[2])
        # while the live request ran, the precompute advanced by at most the one step in flight
        assert after["progress_tokens"] <= before + 2 * 16, (before, after)
        assert after["status"] != "ready"
        wait_context(srv, "long", "ready")


def test_predicted_prefix_comes_back_while_idle(zerostart, model):
    d, vocab = model
    system = ids(160, 30, vocab)  # 10 blocks, asked for again and again
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "512K", "--kv-host", "16M") as srv:
        complete(srv, system + ids(40, 31, vocab))
        _, u = complete(srv, system + ids(40, 32, vocab))
        assert kv(u)["gpu_tokens"] == 160  # recurring now
        complete(srv, ids(480, 33, vocab))
        complete(srv, ids(480, 34, vocab))  # the system prompt's blocks left the GPU for the host tier
        # idle: the predictor brings the recurring prefix back into the GPU cache
        srv.wait_metric('zerostart_kv_prefetched_blocks_total{model="tiny"}', lambda v: v >= 10)
        text, u = complete(srv, system + ids(40, 35, vocab))
        assert kv(u)["gpu_tokens"] >= 160 and kv(u)["host_tokens"] == 0, u
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "512K", "--kv-host", "0") as ref:
        assert complete(ref, system + ids(40, 35, vocab))[0] == text


def test_api_keys_are_tenants(zerostart, model):
    d, vocab = model
    p = ids(120, 40, vocab)
    body = {"model": "tiny", "prompt": p, "max_tokens": 4, "temperature": 0}

    def post(srv, key, path="/v1/completions", b=body):
        st, _, r = srv.post(path, b, headers={"Authorization": "Bearer " + key})
        return st, json.loads(r)

    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "1M", "--api-key", "key-one", "--api-key", "key-two") as srv:
        st, r1 = post(srv, "key-one")
        assert st == 200 and r1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        st, r2 = post(srv, "key-two")  # same prompt, other key: nothing shared
        assert st == 200 and r2["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        st, r3 = post(srv, "key-one")
        assert r3["usage"]["prompt_tokens_details"]["cached_tokens"] == 112
        assert r1["choices"][0]["text"] == r2["choices"][0]["text"] == r3["choices"][0]["text"]
        assert post(srv, "wrong")[0] == 401
        # contexts are per key too: invisible (and unusable) to the other key
        st, c = post(srv, "key-one", "/v1/contexts", {"model": "tiny", "name": "mine", "prompt": ids(64, 41, vocab)})
        assert st == 201, c
        st, _, lst = srv.get("/v1/contexts", headers={"Authorization": "Bearer key-two"})
        assert st == 200 and json.loads(lst)["data"] == []
        st, _, _ = srv.get("/v1/contexts/mine", headers={"Authorization": "Bearer key-two"})
        assert st == 404
        st, _, b = srv.get("/v1/contexts/mine", headers={"Authorization": "Bearer key-one"})
        assert st == 200 and json.loads(b)["cache_salt"] is True


def test_prefix_survives_scale_to_zero(zerostart, model):
    d, vocab = model
    p = ids(300, 50, vocab)
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "1M", "--kv-host", "16M", "--keep-alive", "0.5") as srv:
        t1, _ = complete(srv, p)
        deadline = time.monotonic() + 30
        while json.loads(srv.get("/v1/models/tiny")[2])["state"] != "unloaded":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t2, u = complete(srv, p)  # brings the model back, and the prompt's KV from host memory
        assert t2 == t1
        assert kv(u)["host_tokens"] == 288 and kv(u)["gpu_tokens"] == 0
        st = json.loads(srv.get("/v1/models/tiny/startups")[2])["data"][-1]
        assert st["trigger"] == "request" and st["kv_cache"]["host_tokens"] == 288
        assert st["kv_cache"]["computed_tokens"] == 12 and st["kv_cache"]["restore_s"] >= 0


def test_disk_tier_capacity(zerostart, model, tmp_path):
    d, vocab = model
    kvdir = str(tmp_path / "kv")
    block_file = 288 + 8192  # header + one block of the tiny model's f32 KV
    args = TIGHT + ("--kv-host", "16M", "--kv-disk", kvdir, "--kv-disk-size", str(10 * block_file))
    with Server(zerostart, d, *args) as srv:
        for i in range(4):
            complete(srv, ids(300, 60 + i, vocab))  # ~19 blocks each, evicted in turn
        srv.wait_metric('zerostart_kv_store_write_queue{model="tiny"}', lambda v: v == 0)
        m = srv.metrics()
        assert m['zerostart_kv_store_disk_bytes{model="tiny"}'] <= 10 * block_file
        assert m['zerostart_kv_store_disk_evictions_total{model="tiny"}'] > 0
    files = glob.glob(os.path.join(kvdir, "*", "*", "*.kvb"))
    assert 0 < len(files) <= 10


def test_prefetch_never_evicts_a_registered_context(zerostart, model):
    """A recurring prefix the predictor wants back must not push a registered context out."""
    d, vocab = model
    p1, p3 = ids(256, 70, vocab), ids(256, 71, vocab)
    with Server(zerostart, d, "--name", "tiny", "--kv-mem", "224K", "--kv-host", "16M") as srv:  # 28 blocks
        complete(srv, p1 + ids(16, 72, vocab))
        complete(srv, p1 + ids(16, 73, vocab))  # p1 recurs: the predictor wants it in the GPU
        st, _, b = srv.post("/v1/contexts", {"model": "tiny", "name": "doc", "prompt": p3})
        assert st == 201, b
        c = wait_context(srv, "doc", "ready")
        assert c["restored_tokens"] == 0  # computed (p1's eviction made the room)
        time.sleep(0.3)  # idle: a prefetch of p1 would happen now, and must find no room
        c = json.loads(srv.get("/v1/contexts/doc")[2])
        assert c["status"] == "ready" and c["restored_tokens"] == 0, c  # never pushed out and brought back
        _, u = complete(srv, p3 + ids(16, 74, vocab))
        assert kv(u)["gpu_tokens"] == 256 and kv(u)["host_tokens"] == 0, u
