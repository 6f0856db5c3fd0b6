"""How the checker prints one element: bits in hex plus the decoded value.

A kernel author needs both: the hex says which bits differ, the value says how far off it is.
For ``fp4x2`` bytes both nibbles are shown (low nibble = element 2i, high nibble = element 2i+1),
for ``e8m0`` scale bytes the power of two.
"""
from __future__ import annotations

import numpy as np

from ..e2m1 import E2M1_VALUES

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def bits(a: np.ndarray) -> np.ndarray:
    """Reinterpret any array as unsigned integers of the same width (for bit-exact comparison)."""
    a = np.ascontiguousarray(a)
    if a.dtype.kind in "iu":
        return a                     # integers compare as they are
    return a.view(_UINT[a.dtype.itemsize])   # floats and bools: their bit patterns


def _fp(v: float) -> str:
    return repr(float(v)) if np.isfinite(v) else str(float(v))


def show(value, encoding: str) -> str:
    """One element as text, e.g. ``0x3A (lo 0xA=-1.0, hi 0x3=+1.5)`` or ``0x7F (2^0)``."""
    v = np.asarray(value)
    if encoding == "fp4x2":
        b = int(v)
        lo, hi = b & 0xF, b >> 4
        return f"0x{b:02X} (lo 0x{lo:X}={E2M1_VALUES[lo]:+g}, hi 0x{hi:X}={E2M1_VALUES[hi]:+g})"
    if encoding == "e8m0":
        b = int(v)
        return f"0x{b:02X} ({'NaN' if b == 0xFF else f'2^{b - 127}'})"
    if encoding == "hex":
        return f"0x{int(v):02X}"
    if encoding == "int":
        return str(int(v))
    if encoding == "bool":
        return str(bool(v))
    width = v.dtype.itemsize * 2
    return f"0x{int(bits(v.reshape(1))[0]):0{width}X} ({_fp(v.astype(np.float64))})"


def nibble_note(expected: int, got: int) -> str:
    """Which nibble(s) of an fp4x2 byte differ, e.g. ``hi nibble differs``; for swapped nibbles say so."""
    e_lo, e_hi, g_lo, g_hi = expected & 0xF, expected >> 4, got & 0xF, got >> 4
    if e_lo == g_hi and e_hi == g_lo:
        return "nibbles swapped"
    parts = [n for n, d in (("lo", e_lo != g_lo), ("hi", e_hi != g_hi)) if d]
    return " and ".join(parts) + " nibble" + ("s differ" if len(parts) == 2 else " differs")
