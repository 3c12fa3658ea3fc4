"""Pre-warming in `zerostart serve` (--prewarm on): a model with a recurring request pattern
that scales to zero between requests is brought back before its next request (start-up
trigger "prewarm"), and that request finds it ready; pre-warming never takes memory from a
busy model, an unused pre-warm gives way to a live request for another model, and nothing
happens with pre-warming off. Requests follow a fixed schedule; assertions are on start-up
records, states and metrics, with generous waits, never on durations."""
import json
import threading
import time

import pytest

from server_util import Server, make_model_dir, serve_binary
from test_server_scale import BODY, complete, copies, model_info, startups, wait_state

PERIOD = 3.0  # seconds between the pattern's requests
KEEP_ALIVE = "0.5"  # the model scales to zero well before each next request


@pytest.fixture()
def zerostart(request):
    return serve_binary(request)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("prewarm"))[0]


def recurring(srv, model, n=3, before_each=None):
    """n requests PERIOD apart (the model scaled to zero before each after the first);
    returns the outputs."""
    outs = []
    t0 = time.monotonic()
    for k in range(n):
        if k:
            wait_state(srv, "unloaded", model)
            time.sleep(max(0.0, t0 + k * PERIOD - time.monotonic()))
        if before_each:
            before_each(k)
        outs.append(complete(srv, model))
    return outs


def wait_prewarm(srv, model, timeout=4 * PERIOD + 20):
    """The first start-up record with trigger "prewarm", once it is done (or None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pw = [s for s in startups(srv, model) if s["trigger"] == "prewarm"]
        if pw and pw[0]["state"] != "starting":
            return pw[0]
        time.sleep(0.02)
    return None


def test_recurring_requests_are_prewarmed(zerostart, model_dir, tmp_path):
    with Server(zerostart, model_dir, "--name", "tiny", "--keep-alive", KEEP_ALIVE, "--prewarm", "on",
                "--kv-mem", "1M", "--pool-size", "64M", "--pool-dir", tmp_path / "pool") as srv:
        outs = recurring(srv, "tiny")
        assert len(set(outs)) == 1
        # nothing is pre-warmed before a pattern exists (a start per request so far)
        triggers = [s["trigger"] for s in startups(srv)]
        assert "prewarm" not in triggers and triggers[-1] == "request", triggers
        pw = wait_prewarm(srv, "tiny")
        assert pw is not None, startups(srv)
        assert pw["state"] == "done" and pw["request_id"] is None and pw["source"] == "pool", pw
        wait_state(srv, "ready", timeout=10)
        assert srv.metrics()["zerostart_prewarms_total"] == 1
        # the predicted request arrives: served by the pre-warmed engine, no start of its own
        assert complete(srv) == outs[0]
        s = startups(srv)
        assert s[-1]["seq"] == pw["seq"] and s[-1]["trigger"] == "prewarm", s[-1]
        m = srv.metrics()
        assert m["zerostart_prewarm_hits_total"] == 1
        assert m["zerostart_prewarm_unused_total"] == 0
        log = srv.log()
    assert "pre-warm: model tiny, next request expected" in log
    assert "model tiny: starting (prewarm)" in log


def test_prewarm_off_by_default_and_when_disabled(zerostart, model_dir, tmp_path):
    for args in ((), ("--prewarm", "off")):
        with Server(zerostart, model_dir, "--name", "tiny", "--keep-alive", KEEP_ALIVE, "--kv-mem", "1M",
                    *args) as srv:
            recurring(srv, "tiny")
            # past the predicted arrival (and its spread): still scaled to zero
            time.sleep(PERIOD + 1.5)
            assert model_info(srv)["state"] == "unloaded"
            assert all(s["trigger"] != "prewarm" for s in startups(srv))
            assert srv.metrics()["zerostart_prewarms_total"] == 0
            log = srv.log()
        assert "pre-warm" not in log


def two_models(tmp_path, model_dir):
    """A config of two copies of the tiny model (m1 stays when idle); --device-mem 2500K holds
    only one."""
    dirs = copies(model_dir, tmp_path, 2)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"keep_alive": float(KEEP_ALIVE), "prewarm": True, "models": [
        {"name": f"m{i}", "path": d, "kv_mem": "1M", "device": "cpu", "keep_alive": [float(KEEP_ALIVE), 60][i]}
        for i, d in enumerate(dirs)]}))
    return cfg


def test_prewarm_never_evicts_a_busy_model(zerostart, model_dir, tmp_path):
    """m0 has the recurring pattern; right after its third request m1 starts a long stream
    that covers m0's predicted next request: the device is never idle with room, so m0 is
    not pre-warmed and m1 is never interrupted."""
    cfg = two_models(tmp_path, model_dir)
    with Server(zerostart, None, "--config", cfg, "--device-mem", "2500K", "--step-delay-ms", "25",
                log_path=str(tmp_path / "serve.log")) as srv:
        recurring(srv, "m0")
        n1 = len(startups(srv, "m1"))
        res, states = {}, []
        body = dict(BODY, model="m1", max_tokens=240, ignore_eos=True)
        t = threading.Thread(target=lambda: res.update(r=srv.post("/v1/completions", body)))
        t.start()
        deadline = time.monotonic() + 2 * PERIOD + 10
        while t.is_alive() and time.monotonic() < deadline:
            st = model_info(srv, "m1")["state"]
            if states or st == "ready":
                states.append(st)
            time.sleep(0.02)
        t.join(120)
        st, _, b = res["r"]
        assert st == 200, b
        assert json.loads(b)["usage"]["completion_tokens"] == 240
        assert states and set(states) == {"ready"}, states  # never evicted while it streamed
        assert all(s["trigger"] != "prewarm" for s in startups(srv, "m0")), startups(srv, "m0")
        assert len(startups(srv, "m1")) == n1 + 1
        m = srv.metrics()
        assert m["zerostart_prewarms_total"] == 0
        assert m["zerostart_model_start_failures_total"] == 0


def test_unused_prewarm_gives_way_to_a_live_request(zerostart, model_dir, tmp_path):
    """m0 is pre-warmed into the only room there is; a request for m1 arrives first: m1
    takes the memory (the unused pre-warm is the victim) and is served."""
    cfg = two_models(tmp_path, model_dir)
    with Server(zerostart, None, "--config", cfg, "--device-mem", "2500K",
                log_path=str(tmp_path / "serve.log")) as srv:
        outs = recurring(srv, "m0")
        pw = wait_prewarm(srv, "m0")
        assert pw is not None and pw["state"] == "done", startups(srv, "m0")
        assert complete(srv, "m1") == outs[0]  # same weights in both copies
        s1 = startups(srv, "m1")[-1]
        assert s1["trigger"] == "request" and "after unloading m0" in s1["placement"], s1
        wait_state(srv, "unloaded", "m0")
        m = srv.metrics()
        assert m["zerostart_prewarms_total"] == 1
        assert m["zerostart_prewarm_unused_total"] == 1
        assert m["zerostart_prewarm_hits_total"] == 0
        log = srv.log()
    assert "model m0 scaled to zero (evicted)" in log
