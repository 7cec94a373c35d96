"""Minimal safetensors reader/writer for the PyTorch reference scripts (no `safetensors` package
on Debian): an 8-byte little-endian header length, a JSON header, then raw little-endian data."""

import json
import struct

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32}


def read_safetensors(path):
    """Every tensor of the file as a float64 torch tensor, by name."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        data = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype=DTYPES[entry["dtype"]])
        out[name] = torch.tensor(data.astype(np.float64).reshape(entry["shape"]))
    return out


def write_safetensors(path, tensors):
    """Write torch tensors as F64, names sorted, data 8-byte aligned."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().numpy().astype("<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * ((8 - (8 + len(head)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))
