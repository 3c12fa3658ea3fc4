"""Peer loader: fastsafetensors SafeTensorsFileLoader (no GDS: pread through bounce buffers)."""
import sys
import time

from common import cuda_ready, report, shard_files

import torch
from fastsafetensors import SafeTensorsFileLoader, SingleGroup

cuda_ready()  # CUDA context outside load_s, as zerostart's load_s excludes set-up
t0 = time.monotonic()
loader = SafeTensorsFileLoader(SingleGroup(), device="cuda:0", nogds=True)
loader.add_filenames({0: shard_files(sys.argv[1])})
fb = loader.copy_files_to_device()
tensors = {k: fb.get_tensor(k) for k in loader.get_keys()}
n = sum(t.numel() * t.element_size() for t in tensors.values())
report(t0, n)
