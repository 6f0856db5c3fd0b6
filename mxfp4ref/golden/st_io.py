"""Read and write safetensors files from NumPy, bfloat16 included.

safetensors is the field's tensor container (readable from PyTorch, JAX, NumPy). Its NumPy binding
writes ``ml_dtypes.bfloat16`` arrays with dtype ``BF16`` but (safetensors 0.8) cannot read them back
(``KeyError: 'BF16'``). The file format is small enough to read ourselves:

    [8 bytes little-endian u64 N][N bytes JSON header, space padded][raw little-endian tensor bytes]

header = {name: {"dtype": "BF16"|"F32"|..., "shape": [...], "data_offsets": [begin, end]}, ...}
with offsets relative to the end of the header. Writing goes through ``safetensors.numpy.save`` so
the bytes are exactly what the reference library produces (it is deterministic: the same tensors give
the same bytes).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

# safetensors dtype name <-> numpy dtype (only the ones a bundle uses, plus the common rest).
ST_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16), "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32), "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64), "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype(np.float32), "F64": np.dtype(np.float64),
}
NP_TO_ST: dict[np.dtype, str] = {v: k for k, v in ST_DTYPES.items()}

# Short dtype names used in manifest.json and messages (numpy's names; bf16 spelled out).
def dtype_name(dt) -> str:
    """numpy dtype -> the name the manifest uses ("bfloat16", "float32", "uint8", ...)."""
    return np.dtype(dt).name


def dtype_from_name(name: str) -> np.dtype:
    """Inverse of :func:`dtype_name`."""
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class SafetensorsError(ValueError):
    """A file is not a readable safetensors file (truncated, bad header, unknown dtype)."""


def save_file(tensors: dict[str, np.ndarray], path) -> None:
    """Write ``tensors`` (name -> C-contiguous ndarray) to ``path`` with safetensors' own writer."""
    from safetensors.numpy import save

    arrays = {}
    for name, a in tensors.items():
        a = np.asarray(a)
        if a.dtype not in NP_TO_ST:
            raise TypeError(f"tensors[{name!r}]: dtype {a.dtype} has no safetensors equivalent")
        arrays[name] = np.ascontiguousarray(a)
    Path(path).write_bytes(save(arrays))


def read_header(path) -> tuple[dict, int]:
    """Return (header dict without __metadata__, byte offset where the data starts)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: truncated: {size} bytes, not even a header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise SafetensorsError(f"{path}: truncated: header says {n} bytes, file has {size - 8}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def load_file(path, names=None) -> dict[str, np.ndarray]:
    """Read tensors from a safetensors file (all, or only ``names``), bf16 included."""
    path = Path(path)
    header, start = read_header(path)
    size = path.stat().st_size
    want = list(header) if names is None else list(names)
    out = {}
    with open(path, "rb") as f:
        for name in want:
            if name not in header:
                raise SafetensorsError(f"{path}: no tensor named {name!r}")
            info = header[name]
            if info.get("dtype") not in ST_DTYPES:
                raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
            dt = ST_DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            b, e = (int(o) for o in info["data_offsets"])
            count = int(np.prod(shape, dtype=np.int64))
            if e - b != count * dt.itemsize:
                raise SafetensorsError(f"{path}: tensor {name!r}: {e - b} bytes for shape {shape} {dt}")
            if start + e > size:
                raise SafetensorsError(f"{path}: truncated: tensor {name!r} ends at byte {start + e}, "
                                       f"file has {size}")
            f.seek(start + b)
            buf = f.read(e - b)
            out[name] = np.frombuffer(buf, dtype=dt.newbyteorder("<")).astype(dt, copy=False).reshape(shape)
    return out
