"""Peer loader: safetensors.torch.load_file(device="cuda") for every shard."""
import sys
import time

from common import cuda_ready, report, shard_files

import torch  # noqa: E402  (imported before timing the load, as any user would)
from safetensors.torch import load_file

cuda_ready()  # CUDA context outside load_s, as zerostart's load_s excludes set-up
t0 = time.monotonic()
n = 0
keep = []
for f in shard_files(sys.argv[1]):
    d = load_file(f, device="cuda:0")
    n += sum(t.numel() * t.element_size() for t in d.values())
    keep.append(d)
report(t0, n)
