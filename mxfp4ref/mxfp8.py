"""MXFP8: FP8 elements (E4M3 or E5M2) with one E8M0 scale per block of 32, one byte per element.

Same scale rules as MXFP4 with the element format's emax (E4M3: 8, max 448; E5M2: 15, max 57344),
same kernel (mxfp4ref/blocks.py) with ``cfg.elem`` set. Elements saturate to the format's max
(as torchao's clamp-then-cast does); a NaN element becomes the format's NaN (0x7F / 0xFF).
Used for activation quantization (vLLM's MXFP8 x MXFP4 MoE path). See spec/03-scale-rules.md.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import blocks
from ._checks import check_axis, require_dtype
from .config import ElemFormat
from .dtypes import to_float32
from .quantize import (cast_output, check_block_axis, check_out_dtype, from_rows,
                       resolve_config, to_rows)

FMTS = {"e4m3": ElemFormat.E4M3, "e5m2": ElemFormat.E5M2}
# Presets whose conventions are defined for MXFP8 too (the others are MXFP4 kernels).
MXFP8_PRESETS = ("ocp", "torchao-floor", "torchao-ceil", "torchao-even", "torchao-rceil")


def parse_fmt(fmt) -> ElemFormat:
    if isinstance(fmt, str) and fmt in FMTS:
        return FMTS[fmt]
    raise ValueError(f"fmt: unknown value {fmt!r}; expected one of {list(FMTS)}")


@dataclasses.dataclass(frozen=True)
class MXFP8Tensor:
    """data: uint8 FP8 codes, the input's shape; scales: uint8 E8M0, ``axis`` divided by block_size."""
    data: np.ndarray
    scales: np.ndarray
    axis: int
    shape: tuple
    fmt: str
    block_size: int = 32

    def dequantize(self, dtype=np.float32) -> np.ndarray:
        return dequantize_mxfp8(self.data, self.scales, self.axis, fmt=self.fmt, dtype=dtype,
                                block_size=self.block_size)


def quantize_mxfp8(x: np.ndarray, axis: int = -1, *, fmt: str = "e4m3", scale_rule=None,
                   rounding=None, block_size: int = 32, preset=None) -> MXFP8Tensor:
    """Quantize to MXFP8 along ``axis``; arguments as :func:`mxfp4ref.quantize` plus ``fmt``.

    preset: one of MXFP8_PRESETS (the others describe MXFP4-only kernels: ValueError).
    """
    elem = parse_fmt(fmt)
    x32 = to_float32(x, "x")
    if x32.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    ax = check_axis(axis, x32.ndim, "axis")
    if preset is not None and preset not in MXFP8_PRESETS:
        raise ValueError(f"preset: {preset!r} is not defined for MXFP8; expected one of "
                         f"{list(MXFP8_PRESETS)}")
    cfg = resolve_config(scale_rule, rounding, block_size, preset, elem=elem)
    check_block_axis(x32.shape, ax, cfg.block_size, need_even=False)
    moved_shape = np.moveaxis(x32, ax, -1).shape
    codes, sbytes = blocks.quantize_blocks(to_rows(x32, ax), cfg)
    return MXFP8Tensor(from_rows(codes, moved_shape, ax), from_rows(sbytes, moved_shape, ax), ax,
                       tuple(x32.shape), fmt, cfg.block_size)


def dequantize_mxfp8(data: np.ndarray, scales: np.ndarray, axis: int = -1, *, fmt: str = "e4m3",
                     dtype=np.float32, block_size: int = 32) -> np.ndarray:
    """FP8 code value * 2^(scale - 127); scale 0xFF -> NaN; rounded once to ``dtype``."""
    elem = parse_fmt(fmt)
    data = require_dtype(data, "data", np.uint8)
    scales = require_dtype(scales, "scales", np.uint8)
    if data.ndim == 0:
        raise ValueError("data: expected at least one dimension, got a 0-d array")
    ax = check_axis(axis, data.ndim, "axis")
    out_dtype = check_out_dtype(dtype)
    cfg = resolve_config(block_size=block_size, elem=elem)
    check_block_axis(data.shape, ax, cfg.block_size, need_even=False, name="data")
    expected = list(data.shape)
    expected[ax] = data.shape[ax] // cfg.block_size
    if tuple(scales.shape) != tuple(expected):
        raise ValueError(f"scales: expected shape {tuple(expected)} (data shape {data.shape}, "
                         f"blocks of {cfg.block_size} along axis {ax}), got {scales.shape}")
    moved_shape = np.moveaxis(data, ax, -1).shape
    y = blocks.dequantize_blocks_f64(to_rows(data, ax), to_rows(scales, ax), cfg)
    with np.errstate(over="ignore"):
        return cast_output(from_rows(y, moved_shape, ax), out_dtype)
