"""Peer loader: transformers AutoModelForCausalLM.from_pretrained(device_map="cuda")."""
import sys
import time

from common import cuda_ready, report

import torch
from transformers import AutoModelForCausalLM

cuda_ready()  # CUDA context outside load_s, as zerostart's load_s excludes set-up
t0 = time.monotonic()
try:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16, device_map="cuda:0")
except TypeError:
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.bfloat16, device_map="cuda:0")
n = sum(p.numel() * p.element_size() for p in model.parameters())
report(t0, n)
