"""Writing safetensors test files: through the reference `safetensors` package (every dtype,
via TensorSpec) and by hand for layouts the reference writer never produces (unaligned
offsets, gaps)."""
import json
import struct

import numpy as np
from safetensors._safetensors_rust import TensorSpec, serialize_file

# zerostart dtype name -> (reference TensorSpec dtype, item size)
DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1), "I64": ("int64", 8),
    "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1), "BOOL": ("bool", 1),
}


def random_bytes(rng, dtype, shape):
    n = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][1]
    if dtype == "BOOL":
        return rng.integers(0, 2, size=n, dtype=np.uint8).tobytes()
    return rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()


def write_reference(path, tensors, metadata=None):
    """tensors: {name: (dtype, shape, bytes)} written by the reference serializer."""
    keep = []
    specs = {}
    for name, (dtype, shape, data) in tensors.items():
        buf = np.frombuffer(data, dtype=np.uint8).copy() if data else np.zeros(1, np.uint8)
        keep.append(buf)
        specs[name] = TensorSpec(dtype=DTYPES[dtype][0], shape=list(shape),
                                 data_ptr=buf.ctypes.data, data_len=len(data))
    serialize_file(specs, str(path), metadata)


def write_raw(path, entries, data, pad_to=8):
    """entries: {name: (dtype, shape, begin, end)}; data: the data region bytes."""
    header = {name: {"dtype": d, "shape": list(s), "data_offsets": [b, e]}
              for name, (d, s, b, e) in entries.items()}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % pad_to)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
