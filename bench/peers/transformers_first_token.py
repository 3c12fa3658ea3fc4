"""Baseline for the start-up benchmark: a fresh Python process that loads the model with
transformers (from_pretrained, device_map="cuda") and streams a generation; reports the
monotonic time of the first streamed token."""
import json
import sys
import threading
import time

import torch
from transformers import AutoModelForCausalLM, TextIteratorStreamer, AutoTokenizer

model_dir = sys.argv[1]
tok = AutoTokenizer.from_pretrained(model_dir)
try:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda:0")
except TypeError:
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, device_map="cuda:0")
inputs = tok("Hello world", return_tensors="pt").to("cuda:0")
streamer = TextIteratorStreamer(tok, skip_prompt=True)
th = threading.Thread(target=model.generate, kwargs=dict(**inputs, max_new_tokens=4, do_sample=False,
                                                          streamer=streamer))
th.start()
first = None
for text in streamer:
    if first is None:
        first = time.monotonic()
th.join()
print(json.dumps({"first_token_mono": first}), flush=True)
