"""Helpers for the `zerostart serve` tests: a tiny model directory (random Llama weights from
tiny_model.py, a byte-level BPE tokenizer.json trained with the `tokenizers` package, and a
tokenizer_config.json with a ChatML-style chat template), and a Server class that starts the
binary on a free loopback port (--port 0; the bound port is read from its log) and always
stops it."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import tiny_model

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's what they'd say, isn't it?",
    "In 2024 the server handled 1234567 requests at 99.95% availability; latency p50=12ms.",
    "def encode(self, text: str) -> list[int]:\n    return [self.vocab[t] for t in text]\n",
    "You are a helpful assistant. Answer briefly and politely. Hello, how are you today?",
    "naïve café résumé 大语言模型 東京 😀 🚀 — “quotes”",
] * 4


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=420, show_progress=False,
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=tr)
    return tok


def make_model_dir(root, max_pos=512):
    """Writes the tiny served model under root; returns (model_dir, tokenizer)."""
    tok = build_tokenizer()
    cfg = tiny_model.make_config("llama")
    cfg["vocab_size"] = tok.get_vocab_size(with_added_tokens=True)
    cfg["max_position_embeddings"] = max_pos
    cfg["bos_token_id"] = None
    cfg["eos_token_id"] = tok.token_to_id("<|im_end|>")
    d = tiny_model.write_model(str(root), "llama", "f32", config=cfg)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE, "eos_token": "<|im_end|>",
                   "bos_token": None}, f)
    return d, tok


def render_chat(messages):
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)


class Server:
    """A running `zerostart serve`; use as a context manager or call stop()."""

    def __init__(self, binary, model_dir, *args, env=None, log_path=None, startup_s=120):
        self.log_path = log_path or os.path.join(os.path.dirname(model_dir), f"serve-{os.getpid()}-{id(self)}.log")
        self.log_f = open(self.log_path, "wb")
        cmd = [str(binary), "serve"] + ([str(model_dir)] if model_dir else []) + \
              ["--port", "0", "--host", "127.0.0.1"] + [str(a) for a in args]
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log_f, stderr=subprocess.STDOUT, env=e)
        self.port = None
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            m = re.search(rb"listening on http://[^:]+:(\d+)", open(self.log_path, "rb").read())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + self.log())
        self.url = f"http://127.0.0.1:{self.port}"
        self.returncode = None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, timeout=60):
        """SIGTERM, wait; SIGKILL if it hangs. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_f.close()
        self.returncode = self.proc.returncode
        return self.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def get(self, path, headers=None):
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def post(self, path, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, headers=h, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def metrics(self):
        """Parsed /metrics: {'name{labels}': value}."""
        st, _, body = self.get("/metrics")
        assert st == 200
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def wait_metric(self, key, pred, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.metrics().get(key)
            if v is not None and pred(v):
                return v
            time.sleep(0.05)
        raise AssertionError(f"metric {key} never satisfied the condition: {self.metrics().get(key)}")


def raw_http(port, request_bytes, timeout=60):
    """Sends raw bytes, reads until the server closes; returns the whole response."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request_bytes)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def dechunk(body):
    out, pos = b"", 0
    while True:
        nl = body.index(b"\r\n", pos)
        n = int(body[pos:nl].split(b";")[0], 16)
        if n == 0:
            return out
        out += body[nl + 2:nl + 2 + n]
        assert body[nl + 2 + n:nl + 4 + n] == b"\r\n"
        pos = nl + 4 + n


def serve_binary(request):
    """The release binary, or the ASan one when ZS_SERVE_ASAN=1 (a slower, deeper run)."""
    if os.environ.get("ZS_SERVE_ASAN") == "1":
        return request.getfixturevalue("zerostart_asan")
    return request.getfixturevalue("zerostart")
