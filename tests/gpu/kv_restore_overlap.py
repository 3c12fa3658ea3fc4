#!/usr/bin/env python3
"""GPU check of a restore from disk that takes blocks in while the rest are read (run by
tests/gpu/run.sh).

A server computes prompt A and is stopped (SIGTERM saves its GPU prefix cache to the disk
tier). A second server on the same --kv-disk reads block files slowly (--kv-read-delay-ms, a
testing aid): A must come back from disk with the first server's greedy output, and blocks
must have been copied into the KV cache (cudaMemcpyAsync on the compute stream) while later
ones were still being read (zerostart_kv_restore_overlapped_blocks_total).

    python3 tests/gpu/kv_restore_overlap.py ZEROSTART_BINARY MODEL_DIR [DEVICE, default cuda:0]
Standard library only."""
import shutil
import sys
import tempfile

from gpu_server import BS, Server, check_args


def main():
    binary, model, device = check_args()
    kvdir = tempfile.mkdtemp(prefix="zs-kv-overlap-")
    args = ("--name", "m", "--device", device, "--kv-mem", "16M", "--kv-host", "64M", "--kv-disk", kvdir,
            "--keep-alive", "0", "--warmup", "off")
    a = [10 + (7 * i) % 900 for i in range(40 * BS + 1)]  # 40 full blocks before the last token
    body = {"model": "m", "prompt": a, "max_tokens": 8, "temperature": 0}
    try:
        with Server(binary, model, *args) as srv:
            if srv.port is None:
                print(srv.tail())
                return fail("first server did not start")
            s1, r1 = srv.post(body)
            if s1 != 200:
                return fail(f"first server: HTTP {s1} {r1}")
            if srv.stop() != 0:
                return fail("first server did not exit cleanly")
        with Server(binary, model, *args, "--kv-read-delay-ms", "50") as srv:
            if srv.port is None:
                print(srv.tail())
                return fail("second server did not start")
            s2, r2 = srv.post(body)
            kv = (r2.get("usage") or {}).get("kv_cache") or {}
            overlapped = srv.metric("zerostart_kv_restore_overlapped_blocks_total")
            print(f"A {len(a)} tokens: first {r1['choices'][0]['text']!r}; after restart -> {s2} "
                  f"{r2.get('choices', [{}])[0].get('text')!r}, kv {kv}, overlapped {overlapped:.0f} blocks")
            if s2 != 200:
                return fail(f"second server: HTTP {s2} {r2}")
            if kv.get("disk_tokens", 0) != 40 * BS:
                return fail("A's prefix did not come back from the disk tier")
            if r1["choices"][0]["text"] != r2["choices"][0]["text"]:
                return fail("A restored from disk gave another greedy output")
            if overlapped < 16:
                return fail("no block was taken in while the restore still read")
        return 0
    finally:
        shutil.rmtree(kvdir, ignore_errors=True)


def fail(msg):
    print(f"kv_restore_overlap: {msg}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
