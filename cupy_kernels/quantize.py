"""GPU block quantization with the spec's names and signatures: quantize (MXFP4), quantize_mxfp8.

Same arguments and the same bytes as :func:`mxfp4ref.quantize` / :func:`mxfp4ref.quantize_mxfp8`
for every scale rule, rounding and preset (the spec's :func:`mxfp4ref.quantize.resolve_config`
turns them into a QuantConfig; kernels/quantize.cu implements every QuantConfig field). Differences:
the input is a GPU array (see cupy_kernels/_args.py), float64 is not accepted, and bfloat16 may come
as uint16 bits with ``dtype="bfloat16"``. Outputs are CuPy arrays; ``.get()`` gives the spec's
NumPy tensor object.

Kernel choice: the last axis with block_size 32 and a 16-byte aligned input takes a vectorized kernel
(bfloat16 -> MXFP4: ``mx_quantize_bf16``, one thread per block with bf16x2 arithmetic; otherwise
``mx_quantize_fast``, four lanes per block); everything else the scalar one-thread-per-block
``mx_quantize_naive`` (``naive=True`` forces it: the tests compare both).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from mxfp4ref._checks import check_axis
from mxfp4ref.config import ElemFormat, QuantConfig
from mxfp4ref.quantize import check_block_axis, resolve_config

from ._args import float_input, grid_for
from ._conventions import conv_flags
from ._loader import cupy, get_kernel

KERNEL_FILE = "quantize.cu"
_IN = {"float32": 0, "float16": 1, "bfloat16": 2}
_ELEM = {ElemFormat.E2M1: 0, ElemFormat.E4M3: 1, ElemFormat.E5M2: 2}
NAMES = tuple([f"mx_quantize_naive<{i}>" for i in range(3)]
              + [f"mx_quantize_fast<{i}, {e}>" for e in range(3) for i in range(3)]
              + ["mx_quantize_bf16"])
THREADS = 256


@dataclasses.dataclass(frozen=True)
class MXFP4Tensor:
    """MXFP4 on the GPU: fields as mxfp4ref.quantize.MXFP4Tensor, arrays are cupy.ndarray."""
    packed: object
    scales: object
    axis: int
    shape: tuple
    block_size: int = 32
    config: QuantConfig | None = None

    def dequantize(self, dtype=np.float32, *, naive: bool = False):
        from .dequantize import dequantize
        return dequantize(self.packed, self.scales, self.axis, dtype=dtype,
                          block_size=self.block_size, naive=naive)

    def get(self):
        """The spec's NumPy MXFP4Tensor (copies to the host)."""
        from mxfp4ref.quantize import MXFP4Tensor as HostTensor
        return HostTensor(self.packed.get(), self.scales.get(), self.axis, self.shape,
                          self.block_size, self.config)


@dataclasses.dataclass(frozen=True)
class MXFP8Tensor:
    """MXFP8 on the GPU: fields as mxfp4ref.mxfp8.MXFP8Tensor, arrays are cupy.ndarray."""
    data: object
    scales: object
    axis: int
    shape: tuple
    fmt: str
    block_size: int = 32

    def get(self):
        from mxfp4ref.mxfp8 import MXFP8Tensor as HostTensor
        return HostTensor(self.data.get(), self.scales.get(), self.axis, self.shape, self.fmt,
                          self.block_size)


def _launch(arr, in_dtype: str, codes, scales, ax: int, cfg: QuantConfig, naive: bool,
            variant: str = "auto") -> None:
    """Enqueue the quantize kernel. variant (benchmarks): "auto"; "lanes" = the 4-lanes-per-block
    kernel even for bfloat16 (auto picks the one-thread-per-block bf16x2 kernel for bfloat16 MXFP4)."""
    shape = arr.shape
    outer = math.prod(shape[:ax])
    L = shape[ax]
    inner = math.prod(shape[ax + 1:])
    n = outer * L * inner
    if n == 0:
        return
    flags = np.int32(conv_flags(cfg))
    i = _IN[in_dtype]
    fast = (not naive and inner == 1 and cfg.block_size == 32 and arr.data.ptr % 16 == 0)
    with arr.device:
        if fast and in_dtype == "bfloat16" and cfg.elem is ElemFormat.E2M1 and variant == "auto":
            nblocks = n // 32
            k = get_kernel(KERNEL_FILE, "mx_quantize_bf16", NAMES)
            k((grid_for(nblocks, THREADS * 2),), (THREADS,), (arr, codes, scales, np.int64(nblocks), flags))
        elif fast:
            e = _ELEM[cfg.elem]
            nchunks = n // 8
            if e == 0:                                       # chunks per thread: the kernel's U
                per_thread = 4 if i == 0 else 8
            else:
                per_thread = 2 if i == 0 else 4
            k = get_kernel(KERNEL_FILE, f"mx_quantize_fast<{i}, {e}>", NAMES)
            k((grid_for(nchunks, THREADS * per_thread),), (THREADS,),
              (arr, codes, scales, np.int64(nchunks), flags))
        else:
            nthreads = outer * (L // cfg.block_size) * inner
            k = get_kernel(KERNEL_FILE, f"mx_quantize_naive<{i}>", NAMES)
            k((grid_for(nthreads, THREADS, cap=1 << 16),), (THREADS,),
              (arr, codes, scales, np.int64(outer), np.int64(L), np.int64(inner),
               np.int32(cfg.block_size), flags))


def _quantize_any(x, axis, cfg_of, need_even: bool, dtype, naive: bool, codes_div: int):
    arr, in_dtype = float_input(x, "x", dtype)
    if arr.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    ax = check_axis(axis, arr.ndim, "axis")
    cfg = cfg_of()
    check_block_axis(arr.shape, ax, cfg.block_size, need_even=need_even)
    cp = cupy()
    with arr.device:
        cshape = list(arr.shape)
        cshape[ax] //= codes_div
        sshape = list(arr.shape)
        sshape[ax] //= cfg.block_size
        codes = cp.empty(tuple(cshape), cp.uint8)
        scales = cp.empty(tuple(sshape), cp.uint8)
    _launch(arr, in_dtype, codes, scales, ax, cfg, naive)
    return codes, scales, ax, tuple(arr.shape), cfg


def quantize(x, axis: int = -1, *, scale_rule=None, rounding=None, block_size: int = 32, preset=None,
             dtype=None, naive: bool = False) -> MXFP4Tensor:
    """MXFP4-quantize a GPU array along ``axis``: the bytes of :func:`mxfp4ref.quantize`.

    x: float32 / float16 / bfloat16 GPU array (uint16 bits need dtype='bfloat16'), C-contiguous.
    """
    packed, scales, ax, shape, cfg = _quantize_any(
        x, axis, lambda: resolve_config(scale_rule, rounding, block_size, preset), True, dtype, naive, 2)
    return MXFP4Tensor(packed, scales, ax, shape, cfg.block_size, cfg)


def quantize_mxfp8(x, axis: int = -1, *, fmt: str = "e4m3", scale_rule=None, rounding=None,
                   block_size: int = 32, preset=None, dtype=None, naive: bool = False) -> MXFP8Tensor:
    """MXFP8 (E4M3 / E5M2) activation quantization: the bytes of :func:`mxfp4ref.quantize_mxfp8`."""
    from mxfp4ref.mxfp8 import MXFP8_PRESETS, parse_fmt

    def cfg_of():
        elem = parse_fmt(fmt)
        if preset is not None and preset not in MXFP8_PRESETS:
            raise ValueError(f"preset: {preset!r} is not defined for MXFP8; expected one of "
                             f"{list(MXFP8_PRESETS)}")
        return resolve_config(scale_rule, rounding, block_size, preset, elem=elem)

    data, scales, ax, shape, cfg = _quantize_any(x, axis, cfg_of, False, dtype, naive, 1)
    return MXFP8Tensor(data, scales, ax, shape, fmt, cfg.block_size)
