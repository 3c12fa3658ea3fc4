#!/usr/bin/env python3
"""KV cache warm start benchmark (issue 6): time to first token (TTFT) of a request whose prompt
starts with a long prefix, by where that prefix's KV is when the request arrives:

  uncached     nowhere: the whole prompt is prefilled;
  gpu          in the GPU prefix cache (an earlier request had the same prefix);
  host         in the store's host tier only: it left the GPU cache (another request took
               the whole KV cache, so the prefix's holder was exported) and comes back over PCIe;
  disk         in the disk tier only: the server that computed it was stopped (SIGTERM saves
               the GPU cache to the store, the store flushes to disk), a fresh server was
               started on the same --kv-disk and the page cache was dropped;
  restart      the same without dropping the page cache (block files as the OS left them);
  precomputed  registered with POST /v1/contexts and computed by the server while idle.

Each case runs on its own fresh server (the server's prefix predictor brings recurring
prefixes back into the GPU cache while idle, evicting other holders: cases sharing a server
would change each other's state) after a warm-up request, with its own random token-id
prefix; the measured prompt is prefix + a fresh 64-token suffix (the "question"), so the
suffix is always prefilled. --kv-mem is sized per server so that no measured request makes
the server evict (and export) anything while it is timed. TTFT is measured on the client:
from sending the streamed request to the first chunk with text (server_ttft_s: the server's
own arrival -> first token, from its TTFT histogram). Every measured prompt is also run on a
reference server without a store (--kv-host 0, no --kv-disk) and the greedy outputs compared.

Then a 10-turn chat (/v1/chat/completions, each turn adds a user message of ~500 tokens and
keeps the assistant's reply in the history), TTFT per turn with the store and on a server
without it. Before every turn another client's request reserves the whole KV cache (a short
prompt with max_tokens = the cache capacity, cancelled after its first token), so the chat's
history is no longer in the GPU cache when the next turn arrives: with the store it comes
back from host memory (or the server's predictor brought it back while idle), without the
store it is prefilled again. --chat-evict 0 skips that (then the GPU prefix cache alone keeps
the history on both servers). In chat rows, prefix_tokens is the conversation before the
turn's new message (the previous turn's prompt + reply tokens).

Output (--out): {"device", "date", "rows": [{"case", "prefix_tokens", "ttft_s", ...}], ...}
with per row the usage the server reported (tokens from gpu / host / disk, computed tokens,
restore seconds and GB/s), the ratio to the uncached case, whether the greedy output equals
the reference; plus ceilings measured in the same run (`zerostart probe`: pinned
host->device on a GPU, reads of the KV block files with the page cache dropped), the
bandwidths the server measured, server start / shutdown times, the targets of issue 6 and
anomalies (a case whose KV did not come from where the case says).

    python3 bench/kv.py --zerostart build/dev/zerostart --model /tmp/zs-m8b --device cuda:0 --out kv.json
    python3 bench/kv.py --cpu --zerostart build/rel/zerostart --out kv-cpu-smoke.json   # CPU smoke run

Standard library only. The synthetic checkpoints say max_position_embeddings 8192: when the
prefixes need more, config.json is raised (and the change recorded in the output), as
bench/engine.py does for its 32k prefill.
"""
import argparse
import datetime
import glob
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BS = 16            # the engine's KV block size (tokens)
MODEL = "m"        # the name the servers serve the model under
SYSTEM = "You are a helpful assistant. Answer briefly."
WORDS = ("the of and to in is that for it as with was on be at by this are from or have an they which one "
         "you were all we can her has there been if more when will would who so no model start fast token "
         "server weights zero Hello world").split()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --- model and sizes -----------------------------------------------------------------------------

def model_config(model):
    with open(os.path.join(model, "config.json")) as f:
        return json.load(f)


def kv_bytes_per_token(cfg, device):
    """K and V of every layer and KV head for one position; the CUDA backend keeps bf16, the CPU
    backend float32."""
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    return 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * (2 if device.startswith("cuda") else 4)


def token_id_range(model, cfg):
    """Ids for random prompts: below the tokenizer's added (special) tokens."""
    hi = cfg["vocab_size"]
    try:
        with open(os.path.join(model, "tokenizer.json")) as f:
            added = [t["id"] for t in json.load(f).get("added_tokens", []) if t.get("special", True)]
        if added:
            hi = min(hi, min(added))
    except (OSError, ValueError, KeyError):
        hi = max(1, hi - 256)
    return 0, hi


def ensure_positions(model, need, result):
    """Raises max_position_embeddings to `need` (rounded up to 4096) when it is lower."""
    path = os.path.join(model, "config.json")
    cfg = model_config(model)
    have = cfg.get("max_position_embeddings", 0)
    if have >= need:
        return
    new = -(-need // 4096) * 4096
    cfg["max_position_embeddings"] = new
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    result["config_patched"] = {"max_position_embeddings": [have, new]}
    log(f"config.json: max_position_embeddings {have} -> {new} (prefixes need {need} positions)")


def kib(nbytes):
    """A size argument for the server, in KiB (rounded up)."""
    return f"{max(1, -(-int(nbytes) // 1024))}K"


def fs_type(path):
    """File system type of the mount holding path (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def drop_caches():
    """sync; echo 3 > /proc/sys/vm/drop_caches. Returns False when not permitted."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"cannot drop the page cache ({e}): the disk case runs with whatever the page cache holds")
        return False


# --- a server --------------------------------------------------------------------------------------

class Server:
    """A `zerostart serve` process on a free port; start_s = spawn -> 'listening' in its log."""

    def __init__(self, args, label, extra, timeout):
        self.label = label
        self.log_path = os.path.join(args.workdir, f"serve-{label}.log")
        self.timeout = timeout
        cmd = [args.zerostart, "serve", args.model, "--name", MODEL, "--device", args.device,
               "--host", "127.0.0.1", "--port", "0", "--keep-alive", "0", "--max-batch", "8",
               "--step-tokens", str(args.step_tokens), *args.server_arg, *extra]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        self.cmd = cmd
        log(f"[{label}] " + " ".join(cmd[1:]))
        self.log_f = open(self.log_path, "wb")
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log_f, stderr=subprocess.STDOUT)
        self.port = None
        while self.port is None and self.proc.poll() is None and time.monotonic() - self.t_spawn < 600:
            m = re.search(rb"listening on http://[^:]+:(\d+)", open(self.log_path, "rb").read())
            self.port = int(m.group(1)) if m else None
            time.sleep(0.005)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"server {label} did not start:\n{self.log_tail()}")
        self.start_s = time.monotonic() - self.t_spawn
        self.stop_s = None
        self.returncode = None

    def log_tail(self, n=3000):
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")

    def stop(self):
        """SIGTERM (the server saves its GPU prefix cache to the store and flushes the disk
        tier), then waits; stop_s = SIGTERM -> exit."""
        if self.proc.poll() is None:
            t = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=600)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stop_s = time.monotonic() - t
        self.log_f.close()
        self.returncode = self.proc.returncode
        return self.returncode

    def conn(self, timeout=None):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or self.timeout)

    def request(self, method, path, body=None):
        c = self.conn()
        c.request(method, path, None if body is None else json.dumps(body),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def get_json(self, path):
        st, data = self.request("GET", path)
        if st != 200:
            raise RuntimeError(f"GET {path}: HTTP {st}: {data[:300]!r}")
        return json.loads(data)

    def metrics(self):
        st, data = self.request("GET", "/metrics")
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def gauge(self, name, m=None):
        return (m or self.metrics()).get(f'{name}{{model="{MODEL}"}}', 0.0)

    def wait_for(self, what, pred, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if pred(m):
                return m
            if time.monotonic() > deadline:
                raise RuntimeError(f"[{self.label}] timed out waiting for {what}")
            time.sleep(0.01)

    def wait_idle(self):
        """No request running or queued, no KV block held by a live request."""
        return self.wait_for("idle", lambda m: self.gauge("zerostart_running_requests", m) == 0
                             and self.gauge("zerostart_queue_length", m) == 0
                             and self.gauge("zerostart_kv_blocks_in_use", m) == 0)

    def capacity_tokens(self):
        return int(self.gauge("zerostart_kv_blocks_total")) * BS


def stream(srv, path, body, timeout=None):
    """A streamed request; returns ttft_s (send -> first chunk with text), the text, the usage."""
    body = dict(body, model=MODEL, stream=True, stream_options={"include_usage": True})
    c = srv.conn(timeout)
    t0 = time.monotonic()
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"POST {path}: HTTP {r.status}: {r.read()[:500]!r}")
    first, parts, usage = None, [], None
    for raw in r:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            break
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(f"POST {path}: stream error {chunk['error']}")
        usage = chunk.get("usage") or usage
        for ch in chunk.get("choices", []):
            piece = ch.get("text") if "text" in ch else (ch.get("delta") or {}).get("content")
            if piece:
                if first is None:
                    first = time.monotonic()
                parts.append(piece)
    end = time.monotonic()
    c.close()
    return {"ttft_s": None if first is None else first - t0, "text": "".join(parts), "usage": usage,
            "total_s": end - t0}


def usage_fields(u):
    """A row's fields from a reply's usage: cached tokens and the server's kv_cache extension."""
    kv = u.get("kv_cache") or {}
    row = {"cached_tokens": (u.get("prompt_tokens_details") or {}).get("cached_tokens")}
    for k in ("gpu_tokens", "host_tokens", "disk_tokens", "computed_tokens", "restore_s", "restore_gbps",
              "restore_began_s", "admitted_s"):
        row[k] = kv.get(k)
    return row


def server_ttft(before, after):
    """This request's arrival -> first token as the server saw it (the TTFT histogram's sum
    grew by it; one request at a time)."""
    k = "zerostart_time_to_first_token_seconds_sum"
    if k in before and k in after:
        return round(after[k] - before[k], 6)
    return None


# --- measurements ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, result):
        self.args = args
        self.result = result
        self.cfg = model_config(args.model)
        self.bpt = kv_bytes_per_token(self.cfg, args.device)
        self.id_lo, self.id_hi = token_id_range(args.model, self.cfg)
        self.reference = {}   # prompt key -> (text, ttft_s) from the server without a store

    def ids(self, n, *seed):
        rng = random.Random("/".join(map(str, seed)))
        return [rng.randrange(self.id_lo, self.id_hi) for _ in range(n)]

    def save(self):
        """After every row (a time limit leaves what was measured); atomic."""
        tmp = self.args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.result, f, indent=1)
        os.replace(tmp, self.args.out)

    # -- prompts of the prefix cases
    def prompts(self, n):
        """For each case: (prefix, the suffix of an earlier request, the measured suffix)."""
        q = self.args.suffix_tokens
        return {case: (self.ids(n, case, n, "prefix"), self.ids(q, case, n, "earlier"), self.ids(q, case, n, "measured"))
                for case in ("uncached", "gpu", "host", "disk", "restart", "precomputed")}

    def prompt_tokens(self, n):
        return n + self.args.suffix_tokens + self.args.output_tokens

    def kv_mem(self, tokens):
        """--kv-mem: the given size, or room for `tokens` (+5% and 4 blocks). Each server gets
        room for what its case keeps in the GPU cache, so that no measured request makes the
        server evict (and export) another prefix while it is timed."""
        if self.args.kv_mem != "auto":
            return self.args.kv_mem
        blocks = -(-int(tokens * 1.05) // BS) + 4
        return kib(blocks * BS * self.bpt)

    def kv_host(self, tokens):
        if self.args.kv_host != "auto":
            return self.args.kv_host
        return kib(tokens * self.bpt + (64 << 20))

    def complete(self, srv, ids, max_tokens=None):
        return stream(srv, "/v1/completions", {"prompt": ids, "max_tokens": max_tokens or self.args.output_tokens,
                                               "temperature": 0, "ignore_eos": True})

    def warm_up(self, srv, n):
        """One request before measuring (CUDA / cuBLAS set-up, first allocations), of n tokens."""
        r = self.complete(srv, self.ids(max(BS, n), "warm-up", srv.label, n))
        log(f"[{srv.label}] warm-up ({max(BS, n)} tokens): TTFT {r['ttft_s']} s")
        # a GPU server page-locks its KV host tier in idle time after start; the cases measure
        # a server that has been idle that long (until then host copies are synchronous)
        if srv.gauge("zerostart_kv_store_host_capacity_bytes") > 0 and not self.args.device.startswith("cpu"):
            srv.wait_for("the KV host tier page-locked", lambda m: srv.gauge("zerostart_kv_store_host_pinned", m) != 0)
            t = round(time.monotonic() - srv.t_spawn, 3)
            self.result.setdefault("host_tier_pinned_after_spawn_s", {})[srv.label] = t
            log(f"[{srv.label}] KV host tier page-locked {t} s after spawn "
                f"({srv.gauge('zerostart_kv_store_host_capacity_bytes') / 1e9:.1f} GB)")

    def evict_all(self, srv):
        """Another client's request reserves the whole KV cache: a 16-token prompt whose
        max_tokens makes its worst case every block, so admission evicts every prefix-cache
        holder (exported to the store when it has one); cancelled after its first token.
        Several such requests at once when the cache is larger than the context length."""
        before = srv.metrics()
        cap = srv.capacity_tokens()
        ctx = self.ctx_limit
        conns, left, k = [], cap, 0
        while left >= 2 * BS:
            take = min(left, ctx) // BS * BS
            body = {"model": MODEL, "prompt": self.ids(BS, "evict", srv.label, time.monotonic_ns(), k),
                    "max_tokens": take - BS, "temperature": 0, "ignore_eos": True, "stream": True}
            c = srv.conn(120)
            c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                raise RuntimeError(f"evicting request: HTTP {r.status}: {r.read()[:300]!r}")
            r.readline()  # the first event: admitted, every holder it needed room from is gone
            conns.append(c)
            left -= take
            k += 1
        for c in conns:
            c.close()
        m = srv.wait_idle()
        exported = srv.gauge("zerostart_kv_exported_blocks_total", m) - srv.gauge("zerostart_kv_exported_blocks_total", before)
        return {"evicting_requests": len(conns), "cached_blocks_before": srv.gauge("zerostart_kv_blocks_cached", before),
                "exported_blocks": exported}

    def wait_exports(self, srv, before, want_blocks, timeout=30):
        """Until the store has published at least want_blocks more exported blocks."""
        key = "zerostart_kv_exported_blocks_total"
        try:
            srv.wait_for(f"{want_blocks} exported blocks",
                         lambda m: srv.gauge(key, m) - srv.gauge(key, before) >= want_blocks, timeout)
        except RuntimeError as e:
            self.anomaly(str(e))

    def anomaly(self, text):
        log("ANOMALY: " + text)
        self.result["anomalies"].append(text)

    def measure(self, srv, case, n, prefix, suffix, expect_tier):
        """The measured request of a case: a row with the usage and the reference comparison."""
        before = srv.metrics()
        r = self.complete(srv, prefix + suffix)
        after = srv.metrics()
        u = r["usage"] or {}
        kv = u.get("kv_cache") or {}
        row = {"case": case, "prefix_tokens": n, "ttft_s": round(r["ttft_s"], 6) if r["ttft_s"] is not None else None,
               "server_ttft_s": server_ttft(before, after), "prompt_tokens": u.get("prompt_tokens"),
               **usage_fields(u),
               "skipped_by_cost_blocks": srv.gauge("zerostart_kv_restore_skipped_blocks_total", after)
               - srv.gauge("zerostart_kv_restore_skipped_blocks_total", before),
               # blocks copied into the KV cache while the same restore still read from disk
               "overlapped_blocks": srv.gauge("zerostart_kv_restore_overlapped_blocks_total", after)
               - srv.gauge("zerostart_kv_restore_overlapped_blocks_total", before),
               "output": r["text"], "server": srv.label}
        if r["ttft_s"] is None:
            self.anomaly(f"{case} {n}: no text in the response (output {r['text']!r})")
        ref = self.reference.get((case, n))
        if ref is not None:
            row["output_matches_reference"] = r["text"] == ref[0]
            if r["text"] != ref[0]:
                self.anomaly(f"{case} {n}: greedy output {r['text']!r} differs from the reference's {ref[0]!r}")
        if expect_tier is not None:
            got = kv.get(f"{expect_tier}_tokens", 0) if expect_tier != "none" else kv.get("computed_tokens")
            want = n if expect_tier != "none" else n + self.args.suffix_tokens
            row["clean"] = got == want
            skipped = (row["skipped_by_cost_blocks"] or 0) * BS
            if got != want and expect_tier == "disk" and skipped > 0 and got + skipped >= want:
                # the cost model chose to recompute (part of) the prefix: reading it from this
                # disk was estimated slower than prefilling it (issue 6, item 2)
                row["clean"] = True
                row["recomputed_by_cost_model_tokens"] = int(skipped)
                self.result["notes"].append(f"{case} {n}: the cost model recomputed {int(skipped)} of the {n} "
                                            f"prefix tokens instead of reading them from disk")
            elif got != want:
                self.anomaly(f"{case} {n}: expected {want} tokens from {expect_tier}, got usage {kv} "
                             f"(cached {row['cached_tokens']})")
        log(f"  {case:12s} {n:6d}: TTFT {row['ttft_s']} s (server {row['server_ttft_s']}), gpu {row['gpu_tokens']} "
            f"host {row['host_tokens']} disk {row['disk_tokens']} computed {row['computed_tokens']}, "
            f"restore {row['restore_s']} s {row['restore_gbps']} GB/s")
        self.result["rows"].append(row)
        self.save()
        return row

    # -- the reference: every measured prompt, uncached, on a server without a store
    def run_reference(self, sizes):
        n_max = max(sizes)
        kv_mem = self.kv_mem(self.warmup_tokens(n_max) + self.prompt_tokens(n_max))
        srv = Server(self.args, "reference", ["--kv-mem", kv_mem, "--kv-host", "0"],
                     self.args.timeout)
        ref = []
        try:
            self.warm_up(srv, self.warmup_tokens(n_max))
            for n in sizes:
                for case, (prefix, _, suffix) in self.prompts(n).items():
                    r = self.complete(srv, prefix + suffix)
                    kv = (r["usage"] or {}).get("kv_cache") or {}
                    if kv.get("computed_tokens") != n + self.args.suffix_tokens:
                        self.anomaly(f"reference {case} {n}: not fully computed: {kv}")
                    self.reference[(case, n)] = (r["text"], r["ttft_s"])
                    ref.append({"case": case, "prefix_tokens": n, "ttft_s": r["ttft_s"], "output": r["text"]})
                    log(f"  reference {case:12s} {n:6d}: TTFT {r['ttft_s']} s (uncached, no store)")
        finally:
            srv.stop()
        self.result["reference"] = {"server": " ".join(srv.cmd[1:]), "start_s": round(srv.start_s, 3), "rows": ref}
        self.save()

    def warmup_tokens(self, n):
        """One full prefill chunk (or the whole prompt when shorter), unless given."""
        if self.args.warmup_tokens > 0:
            return self.args.warmup_tokens
        return min(n + self.args.suffix_tokens, self.args.step_tokens)

    # -- (a) uncached, (b) gpu, (c) host, (f) precomputed: one server with a host tier
    def run_in_process(self, n, case):
        """(a) uncached, (b) gpu, (c) host or (f) precomputed, each on a fresh server with a host
        tier: the server's prefix predictor brings recurring prefixes back into the GPU cache
        while idle, evicting other holders, so cases sharing a server would change each other's
        state (see the notes in bench/RESULTS.md)."""
        prefix, earlier, suffix = self.prompts(n)[case]
        tok, w = self.prompt_tokens(n), self.warmup_tokens(n)
        label = f"{case}-{n}"
        # the GPU cache holds the warm-up and the case's prompts (gpu: two requests sharing the
        # prefix); the host tier what leaves it (host: the warm-up and the prefix)
        room = w + tok + (self.args.suffix_tokens + self.args.output_tokens if case == "gpu" else 0)
        srv = Server(self.args, label, ["--kv-mem", self.kv_mem(room), "--kv-host", self.kv_host(room)],
                     self.args.timeout)
        info = {"server": " ".join(srv.cmd[1:]), "start_s": round(srv.start_s, 3)}
        try:
            info["kv_capacity_tokens"] = srv.capacity_tokens()
            self.warm_up(srv, w)
            if case == "uncached":
                self.measure(srv, case, n, prefix, suffix, "none")
            elif case == "gpu":  # an earlier request with the same prefix, then the measured one
                self.complete(srv, prefix + earlier)
                self.measure(srv, case, n, prefix, suffix, "gpu")
            elif case == "host":  # the prefix computed, then the whole KV cache taken by another request
                self.complete(srv, prefix + earlier)
                before = srv.metrics()
                info["eviction"] = self.evict_all(srv)
                self.wait_exports(srv, before, int(info["eviction"]["cached_blocks_before"]))
                self.measure(srv, case, n, prefix, suffix, "host")
            elif case == "precomputed":  # registered while idle, computed by the server, then used
                t = time.monotonic()
                st, data = srv.request("POST", "/v1/contexts", {"model": MODEL, "name": f"bench-{n}", "prompt": prefix})
                if st != 201:
                    raise RuntimeError(f"POST /v1/contexts: HTTP {st}: {data[:300]!r}")
                cid = json.loads(data)["id"]
                while True:
                    c = srv.get_json(f"/v1/contexts/{cid}")
                    if c["status"] == "ready":
                        break
                    if c["status"] == "failed" or time.monotonic() - t > self.args.timeout:
                        raise RuntimeError(f"context {cid}: {c}")
                    time.sleep(0.02)
                info["precompute"] = {"registered_to_ready_s": round(time.monotonic() - t, 4), "context": c}
                row = self.measure(srv, case, n, prefix, suffix, "gpu")
                row["precompute_s"] = c.get("compute_s")
            info["server_bandwidths"] = self.server_bandwidths(srv)
            info["kv_metrics_at_end"] = self.kv_metrics(srv)
        finally:
            srv.stop()
            info["log_tail"] = srv.log_tail(1500)
        self.result["servers"][label] = info
        self.save()

    @staticmethod
    def kv_metrics(srv):
        """The server's KV counters and gauges (store tiers, exports, write-back, restores,
        contexts, prefetches), to read the rows against."""
        return {k.replace(f'{{model="{MODEL}"}}', ""): v for k, v in srv.metrics().items()
                if (k.startswith(("zerostart_kv_", "zerostart_contexts_", "zerostart_prefix_cache_"))
                    and "_bucket" not in k)}

    def server_bandwidths(self, srv):
        """What the server measured (GET /admin/pool): host->device per device, storage reads."""
        try:
            pool = srv.get_json("/admin/pool")
        except (RuntimeError, ValueError) as e:
            return {"error": str(e)}
        return {k: pool.get(k) for k in pool if k not in ("segments",)}

    # -- (d) disk, page cache dropped, and (e) after a restart: two servers on one --kv-disk
    def run_restart(self, n):
        """(e) restart and (d) disk. A first server computes both prefixes (the second prompt
        evicts the first, whose blocks go to host memory and on to disk while it prefills), waits
        until the disk write-back queue is empty, and gets SIGTERM (it saves its GPU prefix
        cache to the store and flushes to disk). A second server on the same --kv-disk, with
        room for both prompts, measures (e) and then, with the page cache dropped, (d)."""
        p = self.prompts(n)
        tok, w = self.prompt_tokens(n), self.warmup_tokens(n)
        kvdir = os.path.join(self.args.workdir, f"kv-disk-{n}")
        shutil.rmtree(kvdir, ignore_errors=True)
        info = {"kv_disk": kvdir, "kv_disk_fs": fs_type(self.args.workdir)}
        first = Server(self.args, f"restart-{n}-first", ["--kv-mem", self.kv_mem(tok + BS), "--kv-host",
                                                          self.kv_host(2 * tok + BS), "--kv-disk", kvdir], self.args.timeout)
        try:
            self.warm_up(first, BS)
            for case in ("disk", "restart"):
                prefix, earlier, _ = p[case]
                self.complete(first, prefix + earlier)
            # wait for the write-back of the evicted prefix: watch the files (the server's store
            # gauges are refreshed by scheduler steps only, so they stay stale while it is idle)
            t = time.monotonic()
            exported = first.gauge("zerostart_kv_exported_blocks_total")
            while len(glob.glob(os.path.join(kvdir, "*", "*", "*.kvb"))) < exported and time.monotonic() - t < 600:
                time.sleep(0.05)
            info["first_write_back_wait_s"] = round(time.monotonic() - t, 3)
            info["first_kv_metrics_before_sigterm"] = self.kv_metrics(first)
        finally:
            rc = first.stop()
        files = glob.glob(os.path.join(kvdir, "*", "*", "*.kvb"))
        info.update(first_server=" ".join(first.cmd[1:]), first_exit_code=rc,
                    shutdown_s=None if first.stop_s is None else round(first.stop_s, 3),
                    block_files=len(files), block_file_bytes=sum(os.path.getsize(f) for f in files))
        want = 2 * ((n + self.args.suffix_tokens) // BS)
        if rc != 0 or len(files) < want:
            self.anomaly(f"restart {n}: first server exit code {rc}, {len(files)} block files on disk, "
                         f"expected at least {want}")
        log(f"[restart-{n}] write-back done in {info['first_write_back_wait_s']} s, SIGTERM -> exit "
            f"{info['shutdown_s']} s, {len(files)} block files")
        second = Server(self.args, f"restart-{n}-second", ["--kv-mem", self.kv_mem(w + 2 * tok), "--kv-host",
                                                           self.kv_host(w + 2 * tok), "--kv-disk", kvdir], self.args.timeout)
        try:
            info["second_server"] = " ".join(second.cmd[1:])
            info["second_server_start_s"] = round(second.start_s, 3)  # spawn -> listening
            m = second.wait_for("the disk tier's index", lambda m: second.gauge("zerostart_kv_store_disk_blocks", m) >= len(files))
            info["second_store_ready_s"] = round(time.monotonic() - second.t_spawn, 3)
            info["second_disk_blocks"] = second.gauge("zerostart_kv_store_disk_blocks", m)
            self.warm_up(second, w)
            prefix, _, suffix = p["restart"]
            row = self.measure(second, "restart", n, prefix, suffix, "disk")
            row.update(server_start_s=info["second_server_start_s"], page_cache_dropped=False)
            prefix, _, suffix = p["disk"]
            dropped = drop_caches() if self.args.drop_caches != "no" else False
            if not dropped:
                self.result["notes"].append(f"disk {n}: the page cache was not dropped"
                                            + (" (--drop-caches no)" if self.args.drop_caches == "no" else " (not permitted)")
                                            + ": this row measures block files the OS may still cache")
            row = self.measure(second, "disk", n, prefix, suffix, "disk")
            row.update(server_start_s=info["second_server_start_s"], page_cache_dropped=dropped)
            info["second_kv_metrics_at_end"] = self.kv_metrics(second)
        finally:
            second.stop()
            info["log_tail"] = second.log_tail(1500)
        # ceiling: reading block files (at most 256, probe's limit) with the page cache dropped
        info["disk_read_ceiling"] = self.probe_disk(files)
        self.result["ceilings"][f"kv_block_files_read_{n}"] = info["disk_read_ceiling"]
        self.result["servers"][f"restart-{n}"] = info
        self.save()
        shutil.rmtree(kvdir, ignore_errors=True)

    def probe_disk(self, files):
        files = sorted(files)[:256]
        if not files:
            return None
        best = None
        for kind, threads, chunk in (("--disk", 16, "4M"), ("--cache", 4, "64M")):
            dropped = drop_caches() if self.args.drop_caches != "no" else False
            r = subprocess.run([self.args.zerostart, "probe", kind, "--threads", str(threads), "--chunk", chunk, *files],
                               capture_output=True, text=True)
            if r.returncode != 0:
                log(f"probe {kind}: {r.stderr.strip()}")
                continue
            v = next(iter(json.loads(r.stdout).values()))
            v.update(method="O_DIRECT" if kind == "--disk" else "buffered", page_cache_dropped=dropped, files=len(files))
            if best is None or v["gbps"] > best["gbps"]:
                best = v
        return best

    # -- the chat
    def run_chat(self):
        a = self.args
        rng = random.Random("chat")
        users = [" ".join(rng.choice(WORDS) for _ in range(a.chat_turn_tokens)) for _ in range(a.chat_turns)]
        longest = int((a.chat_turn_tokens + a.chat_reply_tokens + 16) * a.chat_turns * 1.3) + 64
        kv_mem = self.kv_mem(longest)
        cached = self.chat_on("chat-store", ["--kv-mem", kv_mem, "--kv-host", self.kv_host(3 * longest)], users, None)
        uncached = self.chat_on("chat-nostore", ["--kv-mem", kv_mem, "--kv-host", "0"], users, cached)
        for r in self.result["rows"]:  # the comparison, on the store's rows too
            if r["case"].startswith("turn_") and r["case"].endswith("_cached"):
                i = int(r["case"].split("_")[1]) - 1
                if i < len(uncached):
                    r["output_matches_reference"] = r["output"] == uncached[i]
        self.save()

    def chat_on(self, label, extra, users, with_store):
        """The conversation on one server. with_store None: the server with the store (its
        replies become the history); else the replies of that run, replayed as the history and
        compared with this server's."""
        a = self.args
        srv = Server(a, label, extra, a.timeout)
        info = {"server": " ".join(srv.cmd[1:]), "start_s": round(srv.start_s, 3)}
        replies, history, prev = [], [{"role": "system", "content": SYSTEM}], 0
        try:
            info["kv_capacity_tokens"] = srv.capacity_tokens()
            self.warm_up(srv, a.chat_turn_tokens)
            for i, text in enumerate(users):
                ev = self.evict_all(srv) if a.chat_evict else None
                history.append({"role": "user", "content": text})
                before = srv.metrics()
                r = stream(srv, "/v1/chat/completions", {"messages": history, "max_tokens": a.chat_reply_tokens,
                                                         "temperature": 0, "ignore_eos": True})
                after = srv.metrics()
                u = r["usage"] or {}
                case = f"turn_{i + 1}_{'cached' if with_store is None else 'uncached'}"
                row = {"case": case, "prefix_tokens": prev, "ttft_s": round(r["ttft_s"], 6) if r["ttft_s"] else None,
                       "server_ttft_s": server_ttft(before, after), "prompt_tokens": u.get("prompt_tokens"),
                       **usage_fields(u),
                       "output": r["text"], "server": label}
                if ev:
                    row["evicted_before"] = ev
                if r["ttft_s"] is None:
                    self.anomaly(f"{case}: no text in the reply")
                reply = r["text"] if with_store is None else with_store[i]
                if with_store is not None:
                    row["output_matches_reference"] = r["text"] == with_store[i]
                    if r["text"] != with_store[i]:
                        self.anomaly(f"{case}: reply {r['text']!r} differs from the store server's {with_store[i]!r}")
                replies.append(r["text"])
                history.append({"role": "assistant", "content": reply})
                prev = (u.get("prompt_tokens") or 0) + (u.get("completion_tokens") or 0)
                log(f"  {case:18s} prompt {row['prompt_tokens']}: TTFT {row['ttft_s']} s, gpu {row['gpu_tokens']} "
                    f"host {row['host_tokens']} computed {row['computed_tokens']}")
                self.result["rows"].append(row)
                self.save()
            info["kv_metrics_at_end"] = self.kv_metrics(srv)
        finally:
            srv.stop()
            info["log_tail"] = srv.log_tail(1500)
        self.result["servers"][label] = info
        self.save()
        return replies

    def ceilings(self):
        c = {"h2d_pinned_gbps": None}
        if self.args.device.startswith("cuda"):
            r = subprocess.run([self.args.zerostart, "probe", "--h2d", "4G"], capture_output=True, text=True)
            if r.returncode == 0:
                c["h2d_pinned_gbps"] = json.loads(r.stdout)["h2d_pinned"]["gbps"]
            else:
                c["h2d_error"] = r.stderr.strip()[-500:]
        return c


# --- summary -------------------------------------------------------------------------------------

def summarise(result):
    """Ratios (to the uncached case of the same prefix; chat turns to the first turn of the same
    server) and the targets of issue 6, evaluated at the longest prefix measured."""
    rows = result["rows"]
    by = {(r["case"], r["prefix_tokens"]): r for r in rows}
    for r in rows:
        base = by.get(("uncached", r["prefix_tokens"]))
        if base and base["ttft_s"] and r["ttft_s"] is not None and not r["case"].startswith("turn_"):
            r["ratio_to_uncached"] = round(r["ttft_s"] / base["ttft_s"], 4)
    targets = {}
    for kind in ("cached", "uncached"):
        turns = sorted((r for r in rows if r["case"].startswith("turn_") and r["case"].endswith("_" + kind)),
                       key=lambda r: int(r["case"].split("_")[1]))
        if not turns or not turns[0]["ttft_s"]:
            continue
        for r in turns:
            if r["ttft_s"]:
                r["ratio_to_first_turn"] = round(r["ttft_s"] / turns[0]["ttft_s"], 4)
        if kind == "cached":
            worst = max(r.get("ratio_to_first_turn", 0) for r in turns)
            targets["chat_turns_vs_first_with_store"] = {"worst_ratio": worst, "target": 1.5, "met": worst <= 1.5}
    sizes = sorted({r["prefix_tokens"] for r in rows if r["case"] == "uncached"})
    # (c) and (f) at the longest prefix (the issue: 32k), (e) at every prefix
    goals = [(case, max(sizes), 0.15) for case in ("host", "precomputed")] if sizes else []
    goals += [("restart", n, 0.20) for n in sizes]
    for case, n, bar in goals:
        v = by.get((case, n), {}).get("ratio_to_uncached")
        targets[f"{case}_vs_uncached_at_{n}"] = {"ratio": v, "target": bar, "met": None if v is None else v <= bar}
    compared = [r["output_matches_reference"] for r in rows if "output_matches_reference" in r]
    targets["greedy_outputs_identical"] = {"compared": len(compared), "met": all(compared) if compared else None}
    result["targets"] = targets


def print_table(result):
    def cell(v, w, fmt=""):
        return f"{'-' if v is None else format(v, fmt):>{w}}"

    print(f"{'case':18s} {'prefix':>7s} {'TTFT s':>9s} {'ratio':>7s} {'gpu':>6s} {'host':>6s} {'disk':>6s} "
          f"{'computed':>8s} {'GB/s':>7s} same-output")
    for r in result["rows"]:
        ratio = r.get("ratio_to_uncached", r.get("ratio_to_first_turn"))
        print(f"{r['case']:18s} {r['prefix_tokens']:7d} {cell(r['ttft_s'], 9, '.4f')} {cell(ratio, 7, '.3f')} "
              f"{cell(r['gpu_tokens'], 6)} {cell(r['host_tokens'], 6)} {cell(r['disk_tokens'], 6)} "
              f"{cell(r['computed_tokens'], 8)} {cell(r['restore_gbps'], 7, '.2f')} {r.get('output_matches_reference', '')}")
    print("targets:", json.dumps(result["targets"]))
    for a in result["anomalies"]:
        print("anomaly:", a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zerostart", required=True, help="the zerostart binary")
    ap.add_argument("--model", help="model directory (--cpu: default a `synth --shape small` model in --workdir)")
    ap.add_argument("--device", default=None, help="cuda:0 (default) or cpu (--cpu)")
    ap.add_argument("--prefixes", default=None, help="prefix lengths in tokens (default 8192,32768; --cpu 256,1024)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--kv-mem", default="auto", help="--kv-mem of every server (default: sized per server for what its case keeps)")
    ap.add_argument("--kv-host", default="auto", help="--kv-host of the servers with a store (default: sized per server)")
    ap.add_argument("--cpu", action="store_true", help="smoke run on the CPU: small prefixes and chat turns, --device cpu")
    ap.add_argument("--device-name", default="", help="the machine, for the output")
    ap.add_argument("--workdir", default=None, help="server logs and the --kv-disk directories (a real disk, not tmpfs)")
    ap.add_argument("--suffix-tokens", type=int, default=64, help="tokens after the prefix in every measured prompt")
    ap.add_argument("--output-tokens", type=int, default=None, help="greedy tokens per request (default 8; --cpu 4)")
    ap.add_argument("--step-tokens", type=int, default=8192, help="the servers' --step-tokens (prefill chunk)")
    ap.add_argument("--warmup-tokens", type=int, default=None,
                    help="warm-up prompt before measuring (default: min(prompt, --step-tokens); --cpu 128)")
    ap.add_argument("--chat-turns", type=int, default=10)
    ap.add_argument("--chat-turn-tokens", type=int, default=None, help="words per user message (default 500; --cpu 64)")
    ap.add_argument("--chat-reply-tokens", type=int, default=None, help="reply tokens per turn (default 16; --cpu 8)")
    ap.add_argument("--chat-evict", type=int, default=1, help="1: take the whole KV cache before every turn")
    ap.add_argument("--drop-caches", choices=("auto", "no"), default="auto",
                    help="drop the page cache for the disk case and the disk probe (auto: when permitted)")
    ap.add_argument("--threads", type=int, default=0, help="the servers' --threads (CPU backend)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per HTTP request")
    ap.add_argument("--cases", default="prefix,restart,chat", help="parts to run: prefix,restart,chat")
    ap.add_argument("--server-arg", action="append", default=[], help="extra argument for every server (repeat)")
    args = ap.parse_args()
    # a time limit's SIGTERM: unwind, so that every server is stopped and the results saved
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cpu = args.cpu
    args.device = args.device or ("cpu" if cpu else "cuda:0")
    args.prefixes = args.prefixes or ("256,1024" if cpu else "8192,32768")
    args.output_tokens = args.output_tokens or (4 if cpu else 8)
    args.warmup_tokens = args.warmup_tokens if args.warmup_tokens is not None else (128 if cpu else 0)
    args.chat_turn_tokens = args.chat_turn_tokens or (64 if cpu else 500)
    args.chat_reply_tokens = args.chat_reply_tokens or (8 if cpu else 16)
    args.workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="zs-kv-bench-"))
    os.makedirs(args.workdir, exist_ok=True)
    if args.model is None:
        if not cpu:
            ap.error("--model is required without --cpu")
        args.model = os.path.join(args.workdir, "model-small")
        if not os.path.exists(os.path.join(args.model, "config.json")):
            subprocess.run([args.zerostart, "synth", args.model, "--shape", "small"], check=True, stdout=subprocess.DEVNULL)
    sizes = [int(x) for x in args.prefixes.split(",") if x]
    parts = set(args.cases.split(","))

    result = {"device": args.device_name or ("CPU smoke run (not the H100 benchmark)" if cpu else args.device),
              "date": datetime.date.today().isoformat(), "rows": [],
              "smoke": cpu, "command": " ".join(sys.argv), "model": os.path.abspath(args.model),
              "zerostart_device": args.device, "block_size": BS, "suffix_tokens": args.suffix_tokens,
              "output_tokens": args.output_tokens, "step_tokens": args.step_tokens,
              "chat": {"turns": args.chat_turns, "user_words": args.chat_turn_tokens, "reply_tokens": args.chat_reply_tokens,
                       "evict_before_turns": bool(args.chat_evict)},
              "workdir": args.workdir, "workdir_fs": fs_type(args.workdir),
              # how the CUDA backend moves KV blocks (docs/kvstore.md)
              "kv_transfer": os.environ.get("ZS_KV_TRANSFER", "auto"),
              "servers": {}, "notes": [], "anomalies": []}
    b = Bench(args, result)
    result["kv_bytes_per_token"] = b.bpt
    ensure_positions(args.model, max(sizes) + args.suffix_tokens + args.output_tokens, result)
    b.cfg = model_config(args.model)
    b.ctx_limit = b.cfg["max_position_embeddings"]
    result["ceilings"] = b.ceilings()
    b.save()
    try:
        if "prefix" in parts or "restart" in parts:
            log("== reference: every measured prompt, uncached, on a server without a store")
            b.run_reference(sizes)
        for n in sizes:
            for case in ("uncached", "gpu", "host", "precomputed"):
                if "prefix" in parts:
                    log(f"== prefix {n}: {case}")
                    b.run_in_process(n, case)
        if "chat" in parts:
            log("== chat")
            b.run_chat()
        for n in sizes:  # last: they drop the page cache, so later servers would load their weights cold
            if "restart" in parts:
                log(f"== prefix {n}: restart, disk")
                b.run_restart(n)
    finally:
        summarise(result)
        b.save()
    print_table(result)


if __name__ == "__main__":
    main()
