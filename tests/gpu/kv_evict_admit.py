#!/usr/bin/env python3
"""GPU check of admission after an eviction to the KV store (run by tests/gpu/run.sh).

On CUDA a prefix-cache holder leaving the GPU is copied to the store asynchronously and its
blocks stay taken until the copy lands. A request that needs the whole KV cache, arriving
when the only other blocks belong to such a holder, must wait for that copy and run; before
the fix in admit() it was refused with "the request needs N KV blocks but the cache holds M".
The check: prompt A fills most of the cache and stays cached; prompt B (other tokens) needs
more than what is left; B must succeed, A's blocks must have been exported, and A asked again
must come back from the host tier with the same greedy output as the first time.

    python3 tests/gpu/kv_evict_admit.py ZEROSTART_BINARY MODEL_DIR [DEVICE, default cuda:0]
Standard library only."""
import sys

from gpu_server import BS, Server, check_args


def main():
    binary, model, device = check_args()
    with Server(binary, model, "--name", "m", "--device", device, "--kv-mem", "8M", "--kv-host", "64M",
                "--keep-alive", "0", "--warmup", "off") as srv:
        if srv.port is None:
            print(srv.tail())
            return fail("server did not start")
        status, _ = srv.post({"model": "m", "prompt": [5, 6, 7], "max_tokens": 1})  # loads the model
        if status != 200:
            return fail(f"first request: HTTP {status}")
        blocks = int(srv.metric("zerostart_kv_blocks_total"))
        if blocks < 8:
            return fail(f"the KV cache holds {blocks} blocks: too few for the check")
        a = [10 + i % 200 for i in range((blocks * 2 // 3) * BS + 1)]
        b = [20 + i % 180 for i in range((blocks - 2) * BS)]  # needs the whole cache but A's blocks
        sa, ra = srv.post({"model": "m", "prompt": a, "max_tokens": 4, "temperature": 0})
        sb, rb = srv.post({"model": "m", "prompt": b, "max_tokens": 2, "temperature": 0})
        exported = srv.metric("zerostart_kv_exported_blocks_total")
        sa2, ra2 = srv.post({"model": "m", "prompt": a, "max_tokens": 4, "temperature": 0})
        print(f"cache {blocks} blocks; A {len(a)} tokens -> {sa}; B {len(b)} tokens -> {sb} {rb.get('error', '')}; "
              f"exported {exported:.0f} blocks; A again -> {sa2}, usage {ra2.get('usage', {}).get('kv_cache')}")
        if sa != 200 or sb != 200 or sa2 != 200:
            return fail("a request was refused")
        if exported < (len(a) - 1) // BS:
            return fail(f"A's {(len(a) - 1) // BS} full blocks were not exported ({exported:.0f})")
        if ra["choices"][0]["text"] != ra2["choices"][0]["text"]:
            return fail("A restored from the host tier gave another greedy output")
        host = (ra2.get("usage", {}).get("kv_cache") or {}).get("host_tokens", 0)
        if host <= 0:
            return fail("A's prefix did not come back from the host tier")
        return 0


def fail(msg):
    print(f"kv_evict_admit: {msg}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
