"""Two FP4 codes per byte.

Rule (OCP MX v1.0, and every implementation surveyed): along the packed axis, logical element
``2i`` sits in the LOW nibble (bits 3..0) of byte ``i`` and element ``2i+1`` in the HIGH nibble
(bits 7..4). See spec/02-packing.md.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_axis, require_dtype


def pack_fp4(codes: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pack 4-bit codes (uint8 values 0..15) two per byte along ``axis``.

    codes: (..., 2n, ...) uint8  ->  (..., n, ...) uint8
    """
    codes = require_dtype(codes, "codes", np.uint8)
    ax = check_axis(axis, codes.ndim, "axis")
    if codes.shape[ax] % 2:
        raise ValueError(f"pack_fp4: codes.shape[{axis}] must be even, got {codes.shape[ax]}")
    if codes.size and codes.max() > 0xF:
        raise ValueError(f"pack_fp4: codes must be 4-bit (0..15), got max {int(codes.max())}")
    c = np.moveaxis(codes, ax, -1)
    low, high = c[..., 0::2], c[..., 1::2]
    packed = (low | (high << 4)).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(packed, -1, ax))


def unpack_fp4(packed: np.ndarray, axis: int = -1) -> np.ndarray:
    """Inverse of :func:`pack_fp4`: (..., n, ...) uint8 -> (..., 2n, ...) uint8 codes 0..15."""
    packed = require_dtype(packed, "packed", np.uint8)
    ax = check_axis(axis, packed.ndim, "axis")
    p = np.moveaxis(packed, ax, -1)
    codes = np.empty(p.shape[:-1] + (2 * p.shape[-1],), np.uint8)
    codes[..., 0::2] = p & 0x0F          # element 2i   <- low nibble
    codes[..., 1::2] = p >> 4            # element 2i+1 <- high nibble
    return np.ascontiguousarray(np.moveaxis(codes, -1, ax))
