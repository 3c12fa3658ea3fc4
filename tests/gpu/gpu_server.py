"""A zerostart server for the GPU checks (tests/gpu/*.py): start on a free port, requests,
metrics, stop. Standard library only."""
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time

BS = 16  # the engine's KV block size (tokens)


def check_args():
    """ZEROSTART_BINARY MODEL_DIR [DEVICE, default cuda:0] from the command line."""
    return sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "cuda:0"


class Server:
    def __init__(self, binary, model, *args, startup_s=120):
        self.log = tempfile.NamedTemporaryFile(prefix="zs-gpu-check-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([binary, "serve", model, "--port", "0", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.monotonic() + startup_s
        while self.port is None and time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(rb"listening on http://[^:]+:(\d+)", open(self.log.name, "rb").read())
            self.port = int(m.group(1)) if m else None
            time.sleep(0.05)

    def tail(self, n=2000):
        return open(self.log.name, errors="replace").read()[-n:]

    def post(self, body, path="/v1/completions"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, json.loads(data)

    def metric(self, name):
        """The sum of a metric's samples over its labels."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        """SIGTERM (the server saves its GPU prefix cache to the KV store), then the exit status."""
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)
        return rc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.returncode is None:
            self.stop()
