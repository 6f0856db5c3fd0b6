"""Element rounding: how a real number becomes the nearest point of a small float grid.

Every element format in this project (E2M1, E4M3, E5M2) is a sign bit plus a magnitude code whose
values increase with the code. Rounding a magnitude therefore means choosing a position in a
sorted table of non-negative grid values. The three rules differ only at (or below) midpoints.
See spec/01-elements.md.
"""
from __future__ import annotations

import enum

import numpy as np


class Rounding(enum.Enum):
    """How a magnitude between two grid points is rounded (all rules saturate at the grid's max)."""

    RNE = "rne"
    """Nearest, ties to the even code (mantissa bit 0). IEEE default; OCP MX v1.0 requires it.
    torchao, triton_kernels (current), PTX cvt.rn, ml_dtypes, Quark HIP, aiter."""

    AWAY = "away"
    """Nearest, ties away from zero. microxcaling's default round="nearest"
    (mx/elemwise_ops.py::_round_mantissa), older triton_kernels, Quark's Triton path."""

    ZERO = "zero"
    """Truncate toward zero (largest grid point <= magnitude). microxcaling round="floor"."""

    MX_NEAREST = "mx-nearest"
    """microxcaling's round="nearest" arithmetic, literally: sign(s) * floor(fl32(|s|/q + 0.5)) * q
    with q the grid step at |s| (mx/elemwise_ops.py::_round_mantissa). Equals AWAY except (1) the
    float32 add can round up onto the next integer: for E2M1 only |s| = 0x3E7FFFFF (the float just
    below 0.25) becomes 0.5; (2) torch.sign(+-0) = 0, so a scaled value that is exactly +-0 encodes
    as +0 (a negative value that rounds to zero keeps its sign)."""


def parse_rounding(rounding) -> Rounding:
    """'rne' | 'away' | 'zero' | Rounding -> Rounding; ValueError naming the argument otherwise."""
    if isinstance(rounding, Rounding):
        return rounding
    names = [r.value for r in Rounding]
    if not isinstance(rounding, str) or rounding not in names:
        raise ValueError(f"rounding: unknown value {rounding!r}; expected one of {names}")
    return Rounding(rounding)


def round_magnitude(m: np.ndarray, grid: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Index into ``grid`` of the rounded magnitude.

    m:    non-negative magnitudes (float32 or float64; +inf allowed, no NaN), any shape
    grid: sorted non-negative grid values (float64), grid[0] == 0, e.g. E2M1 [0, .5, 1, ..., 6]
    returns int64 indices of the same shape as ``m``; magnitudes above grid[-1] saturate to the
    last index. All comparisons are exact: m and every grid midpoint are exact in float64.
    """
    m = np.asarray(m, dtype=np.float64)
    top = len(grid) - 1
    if rounding is Rounding.MX_NEAREST:
        return _mx_nearest(m, grid)
    if rounding is Rounding.ZERO:
        # number of grid points <= m, minus one  ->  the largest grid point not above m
        return np.minimum(np.searchsorted(grid, m, side="right") - 1, top)
    mids = (grid[1:] + grid[:-1]) / 2                 # midpoint i lies between codes i and i+1
    i = np.searchsorted(mids, m, side="left")         # = number of midpoints strictly below m
    i_clip = np.minimum(i, top - 1)
    tie = (i < top) & (m == mids[i_clip])             # exactly on midpoint i
    if rounding is Rounding.RNE:
        i = np.where(tie & (i % 2 == 1), i + 1, i)    # of codes i, i+1 pick the even one
    elif rounding is Rounding.AWAY:
        i = np.where(tie, i + 1, i)                   # pick the larger magnitude
    else:  # pragma: no cover - parse_rounding guards this
        raise ValueError(f"rounding: unsupported {rounding!r}")
    return np.minimum(i, top)


def _mx_nearest(m: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Rounding.MX_NEAREST on magnitudes: floor(fl32(m/q + 0.5)) * q, q = step of the grid at m."""
    top = len(grid) - 1
    below = np.minimum(np.searchsorted(grid, m, side="right") - 1, top - 1)   # grid point <= m
    q = grid[below + 1] - grid[below]                                         # its step
    with np.errstate(invalid="ignore", over="ignore"):
        t = (m / q).astype(np.float32)                  # exact: q is a power of two, t < 2^24
        r = np.floor(t + np.float32(0.5)).astype(np.float64) * q   # the float32 add may round
    r = np.minimum(r, grid[-1])                          # saturate (also +inf)
    return np.searchsorted(grid, r, side="left")         # r is a grid point: its index
