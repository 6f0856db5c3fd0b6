"""Public MXFP4 API: quantize() -> MXFP4Tensor, dequantize().

Both validate their arguments, move the block axis last, flatten to a float32 (rows, K) matrix and
call the kernel boundary (mxfp4ref/blocks.py) of the chosen backend. See spec/02-packing.md and
spec/03-scale-rules.md.
"""
from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from . import blocks
from ._checks import check_axis, require_dtype
from .config import ElemFormat, QuantConfig
from .dtypes import to_float32
from .packing import pack_fp4, unpack_fp4
from .rounding import parse_rounding
from .scales import parse_scale_rule

BACKENDS = ("numpy", "numba")
OUT_DTYPES = ("float32", "float64", "float16", "bfloat16")


def backend_module(backend):
    """'numpy' -> mxfp4ref.blocks; 'numba' -> mxfp4ref._numba_quant (imported on first use)."""
    if backend == "numpy":
        return blocks
    if backend == "numba":
        return importlib.import_module("mxfp4ref._numba_quant")
    raise ValueError(f"backend: unknown value {backend!r}; expected one of {list(BACKENDS)}")


def resolve_config(scale_rule=None, rounding=None, block_size=32, preset=None,
                   elem: ElemFormat = ElemFormat.E2M1) -> QuantConfig:
    """Arguments of quantize() -> QuantConfig. Without a preset: scale_rule (default 'floor') and
    rounding (default 'rne') with the OCP edge behaviour. With a preset: its config; an explicit
    scale_rule/rounding that disagrees with the preset is a ValueError."""
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) \
            or block_size <= 0:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
    if preset is None:
        return QuantConfig(scale_rule=parse_scale_rule("floor" if scale_rule is None else scale_rule),
                           rounding=parse_rounding("rne" if rounding is None else rounding),
                           elem=elem, block_size=int(block_size))
    from .presets import get_preset
    cfg = get_preset(preset).config
    if scale_rule is not None and parse_scale_rule(scale_rule) is not cfg.scale_rule:
        raise ValueError(f"scale_rule: preset {preset!r} uses {cfg.scale_rule.value!r}, "
                         f"got {scale_rule!r}; pass one or the other")
    if rounding is not None and parse_rounding(rounding) is not cfg.rounding:
        raise ValueError(f"rounding: preset {preset!r} uses {cfg.rounding.value!r}, "
                         f"got {rounding!r}; pass one or the other")
    return dataclasses.replace(cfg, elem=elem, block_size=int(block_size))


def to_rows(x: np.ndarray, ax: int) -> np.ndarray:
    """Move axis ``ax`` last and flatten the rest: (..., K, ...) -> (rows, K), C-contiguous."""
    moved = np.moveaxis(x, ax, -1)
    rows = int(np.prod(moved.shape[:-1], dtype=np.int64))   # explicit: -1 is ambiguous when K == 0
    return np.ascontiguousarray(moved.reshape(rows, moved.shape[-1]))


def from_rows(y: np.ndarray, moved_shape: tuple, ax: int) -> np.ndarray:
    """Inverse of :func:`to_rows`: (rows, K') -> original layout with axis ``ax`` of length K'."""
    out = y.reshape(moved_shape[:-1] + (y.shape[-1],))
    return np.ascontiguousarray(np.moveaxis(out, -1, ax))


def check_block_axis(x_shape, ax: int, block_size: int, need_even: bool, name: str = "x") -> None:
    n = x_shape[ax]
    if n % block_size:
        raise ValueError(f"{name}: the (logical) length along axis {ax} must be a multiple of block_size="
                         f"{block_size}, got {n} (shape {tuple(x_shape)}); pad it yourself "
                         f"(zeros are a neutral choice) or choose another axis")
    if need_even and block_size % 2:
        raise ValueError(f"block_size: MXFP4 packs two codes per byte, so it must be even, "
                         f"got {block_size}")


@dataclasses.dataclass(frozen=True)
class MXFP4Tensor:
    """An MXFP4-quantized array.

    packed: uint8, the input's shape with ``axis`` halved (element 2i low nibble, 2i+1 high).
    scales: uint8 E8M0 bytes, the input's shape with ``axis`` divided by ``block_size``.
    axis:   the (non-negative) block axis. shape: the logical (unpacked) shape.
    config: the QuantConfig that produced it.
    """
    packed: np.ndarray
    scales: np.ndarray
    axis: int
    shape: tuple
    block_size: int = 32
    config: QuantConfig | None = None

    def dequantize(self, dtype=np.float32, backend: str = "numpy") -> np.ndarray:
        return dequantize(self.packed, self.scales, self.axis, dtype=dtype,
                          block_size=self.block_size, backend=backend)


def quantize(x: np.ndarray, axis: int = -1, *, scale_rule=None, rounding=None,
             block_size: int = 32, preset=None, backend: str = "numpy") -> MXFP4Tensor:
    """Quantize ``x`` to MXFP4 in blocks of ``block_size`` consecutive elements along ``axis``.

    x: float16 / bfloat16 / float32 / float64 (float64 only if exactly float32, see dtypes.py).
    scale_rule: 'floor' (default) | 'ceil' | 'even' | 'rceil'; rounding: 'rne' (default) | 'away'
    | 'zero' | 'mx-nearest'; preset: a name from mxfp4ref.presets.PRESETS (fixes both plus every edge case).
    The length along ``axis`` must be a multiple of block_size (no implicit padding).
    """
    x32 = to_float32(x, "x")
    if x32.ndim == 0:
        raise ValueError("x: expected at least one dimension, got a 0-d array")
    ax = check_axis(axis, x32.ndim, "axis")
    cfg = resolve_config(scale_rule, rounding, block_size, preset)
    check_block_axis(x32.shape, ax, cfg.block_size, need_even=True)
    kern = backend_module(backend)
    moved_shape = np.moveaxis(x32, ax, -1).shape
    codes, sbytes = kern.quantize_blocks(to_rows(x32, ax), cfg)     # (rows, K), (rows, K/bs)
    packed = pack_fp4(from_rows(codes, moved_shape, ax), axis=ax)
    scales = from_rows(sbytes, moved_shape, ax)
    return MXFP4Tensor(packed, scales, ax, tuple(x32.shape), cfg.block_size, cfg)


def cast_output(y32_or_64: np.ndarray, dtype) -> np.ndarray:
    import ml_dtypes
    return y32_or_64.astype(ml_dtypes.bfloat16 if np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16)
                            else dtype, copy=False)      # y is a fresh array: no copy needed


def check_out_dtype(dtype):
    import ml_dtypes
    allowed = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16),
               np.dtype(ml_dtypes.bfloat16)]
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d not in allowed:
        raise TypeError(f"dtype: expected one of {list(OUT_DTYPES)}, got {dtype!r}")
    return d


def check_scales(packed: np.ndarray, scales: np.ndarray, ax: int, n_logical: int,
                 block_size: int) -> None:
    expected = list(packed.shape)
    expected[ax] = n_logical // block_size
    if scales.ndim != packed.ndim or tuple(scales.shape) != tuple(expected):
        raise ValueError(f"scales: expected shape {tuple(expected)} (packed shape "
                         f"{tuple(packed.shape)}, {n_logical} elements along axis {ax} in blocks "
                         f"of {block_size}), got {tuple(scales.shape)}")


def dequantize(packed: np.ndarray, scales: np.ndarray, axis: int = -1, *, dtype=np.float32,
               block_size: int = 32, backend: str = "numpy") -> np.ndarray:
    """MXFP4 bytes -> values: code value * 2^(scale - 127), scale byte 0xFF -> NaN (OCP decode).

    dtype float32 (default), float16, bfloat16: the exact product rounded once (overflow -> inf).
    float64: exact, always computed by the NumPy path.
    """
    packed = require_dtype(packed, "packed", np.uint8)
    scales = require_dtype(scales, "scales", np.uint8)
    if packed.ndim == 0:
        raise ValueError("packed: expected at least one dimension, got a 0-d array")
    ax = check_axis(axis, packed.ndim, "axis")
    out_dtype = check_out_dtype(dtype)
    cfg = resolve_config(block_size=block_size)
    n_logical = 2 * packed.shape[ax]
    check_block_axis(tuple(packed.shape[:ax]) + (n_logical,) + tuple(packed.shape[ax + 1:]), ax,
                     cfg.block_size, need_even=True, name="packed")
    check_scales(packed, scales, ax, n_logical, cfg.block_size)
    codes = unpack_fp4(packed, axis=ax)
    moved_shape = np.moveaxis(codes, ax, -1).shape
    c2, s2 = to_rows(codes, ax), to_rows(scales, ax)
    if out_dtype == np.float64:
        y = blocks.dequantize_blocks_f64(c2, s2, cfg)
    else:
        y = backend_module(backend).dequantize_blocks(c2, s2, cfg)
    return cast_output(from_rows(y, moved_shape, ax), out_dtype)
