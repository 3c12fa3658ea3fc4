"""Shared by the peer loader scripts: report when the weights are resident on the GPU, on
the same monotonic clock the benchmark driver (bench/load.py) started the process with."""
import json
import time


def cuda_ready():
    import torch
    torch.zeros(1, device="cuda:0")
    torch.cuda.synchronize()


def report(t_load_start, nbytes, **extra):
    import torch
    torch.cuda.synchronize()
    t = time.monotonic()
    print(json.dumps({"resident_mono": t, "load_s": t - t_load_start, "bytes": nbytes, **extra}), flush=True)


def shard_files(model_dir):
    import glob
    import os
    return sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
