"""GPU MXFP4 dequantization with the spec's name and signature: dequantize.

Same values as :func:`mxfp4ref.dequantize` (E2M1 value * 2^(b-127), byte 0xFF -> NaN, rounded once),
bit for bit, for dtype float32 or bfloat16. CuPy has no bfloat16 dtype: a bfloat16 result is a uint16
CuPy array of the raw bits (view it as torch.bfloat16 with ``torch.from_dlpack(out).view(torch.bfloat16)``).

Kernel choice: the last axis with block_size 32 takes ``mx_dequantize_fast`` (kernels/dequantize.cu);
other layouts ``mx_dequantize_naive`` (``naive=True`` forces it).
"""
from __future__ import annotations

import math

import numpy as np

from mxfp4ref._checks import check_axis
from mxfp4ref.quantize import check_block_axis, check_scales, resolve_config

from ._args import dtype_name, grid_for, same_device, uint8_input
from ._loader import cupy, get_kernel

KERNEL_FILE = "dequantize.cu"
NAMES = ("mx_dequantize_naive<0>", "mx_dequantize_naive<1>",
         "mx_dequantize_fast<0>", "mx_dequantize_fast<1>")
_OUT = {"float32": 0, "bfloat16": 1}
THREADS = 256
CHUNK = {0: 4, 1: 8}            # elements per thread-chunk of mx_dequantize_fast (float32, bfloat16)
UNROLL = {0: 8, 1: 2}           # chunks per thread per grid-stride step (the kernel's U)


def dequantize(packed, scales, axis: int = -1, *, dtype=np.float32, block_size: int = 32,
               naive: bool = False):
    """MXFP4 bytes (GPU arrays) -> float32 (cupy float32) or bfloat16 (cupy uint16 bits) values."""
    packed = uint8_input(packed, "packed")
    scales = uint8_input(scales, "scales")
    if packed.ndim == 0:
        raise ValueError("packed: expected at least one dimension, got a 0-d array")
    ax = check_axis(axis, packed.ndim, "axis")
    out_name = dtype_name(dtype)
    if out_name not in _OUT:
        raise TypeError(f"dtype: expected float32 or bfloat16 on the GPU, got {dtype!r}")
    cfg = resolve_config(block_size=block_size)
    n_logical = 2 * packed.shape[ax]
    shape = tuple(packed.shape[:ax]) + (n_logical,) + tuple(packed.shape[ax + 1:])
    check_block_axis(shape, ax, cfg.block_size, need_even=True, name="packed")
    check_scales(packed, scales, ax, n_logical, cfg.block_size)
    same_device(("packed", packed), ("scales", scales))
    cp = cupy()
    o = _OUT[out_name]
    with packed.device:
        out = cp.empty(shape, cp.float32 if o == 0 else cp.uint16)
        outer = math.prod(shape[:ax])
        inner = math.prod(shape[ax + 1:])
        n = outer * n_logical * inner
        if n == 0:
            return out
        if not naive and inner == 1 and cfg.block_size == 32:
            nchunks = n // CHUNK[o]
            k = get_kernel(KERNEL_FILE, f"mx_dequantize_fast<{o}>", NAMES)
            k((grid_for(nchunks, THREADS * UNROLL[o]),), (THREADS,), (packed, scales, out, np.int64(nchunks)))
        else:
            k = get_kernel(KERNEL_FILE, f"mx_dequantize_naive<{o}>", NAMES)
            k((grid_for(n, THREADS, cap=1 << 16),), (THREADS,),
              (packed, scales, out, np.int64(outer), np.int64(n_logical), np.int64(inner),
               np.int32(cfg.block_size)))
    return out
