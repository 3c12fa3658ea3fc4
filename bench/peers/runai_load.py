"""Peer loader: runai-model-streamer SafetensorsStreamer streaming to host, then to cuda."""
import sys
import time

from common import cuda_ready, report, shard_files

import torch
from runai_model_streamer import SafetensorsStreamer

cuda_ready()  # CUDA context outside load_s, as zerostart's load_s excludes set-up
t0 = time.monotonic()
tensors = {}
with SafetensorsStreamer() as streamer:
    streamer.stream_files(shard_files(sys.argv[1]))
    for name, t in streamer.get_tensors():
        tensors[name] = t.to("cuda:0", non_blocking=True)
n = sum(t.numel() * t.element_size() for t in tensors.values())
report(t0, n)
