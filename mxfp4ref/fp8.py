"""FP8 elements for MXFP8: E4M3 ("fn": no Inf, one NaN) and E5M2 (IEEE-like, Inf and NaN).

Code layout ``s eeee mmm`` (E4M3, bias 7) and ``s eeeee mm`` (E5M2, bias 15); bit 7 is the sign.
Magnitude codes increase with the value, so rounding is a search in a sorted table
(:func:`mxfp4ref.rounding.round_magnitude`). See spec/01-elements.md.
"""
from __future__ import annotations

import numpy as np


def _fp8_table(ebits: int, mbits: int, bias: int, n_finite: int) -> np.ndarray:
    """Magnitudes of codes 0..n_finite-1 (float64), from the bit fields."""
    codes = np.arange(n_finite)
    e = codes >> mbits
    m = codes & ((1 << mbits) - 1)
    frac = m / (1 << mbits)
    normal = np.ldexp(1.0 + frac, e - bias)
    subnormal = np.ldexp(frac, 1 - bias)
    return np.where(e == 0, subnormal, normal)


# finite magnitudes, index == magnitude code
E4M3_GRID = _fp8_table(4, 3, 7, 0x7F)     # 0x7F is NaN; max 0x7E = 448
E5M2_GRID = _fp8_table(5, 2, 15, 0x7C)    # 0x7C is Inf, 0x7D..0x7F NaN; max 0x7B = 57344
E4M3_NAN = 0x7F
E5M2_NAN = 0x7F
E5M2_INF = 0x7C


def decode_fp8(codes: np.ndarray, fmt: str) -> np.ndarray:
    """uint8 codes -> float64 values (exact). fmt 'e4m3' or 'e5m2'."""
    mag = (codes & 0x7F).astype(np.int64)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    if fmt == "e4m3":
        grid, nan = E4M3_GRID, mag == E4M3_NAN
        inf = np.zeros(mag.shape, bool)
    else:
        grid, nan, inf = E5M2_GRID, mag > E5M2_INF, mag == E5M2_INF
    val = grid[np.minimum(mag, len(grid) - 1)]
    val = np.where(inf, np.inf, val)
    val = np.where(nan, np.nan, val)
    return sign * val
