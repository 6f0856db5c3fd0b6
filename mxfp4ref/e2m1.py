"""FP4 E2M1 elements: 1 sign bit, 2 exponent bits (bias 1), 1 mantissa bit; no Inf, no NaN.

Code ``s e e m``: bit 3 is the sign, codes 0..7 are the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6,
and 0x8 is -0.0. See spec/01-elements.md.
"""
from __future__ import annotations

import numpy as np

from ._checks import require_dtype

# The whole format in one table, in code order (code -> value).
E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)
E2M1_VALUES.setflags(write=False)

E2M1_MAX = 6.0          # largest magnitude
E2M1_EMAX = 2           # exponent of the largest power of two (4 = 2**2); OCP's emax_elem


def decode_e2m1(codes: np.ndarray) -> np.ndarray:
    """Codes (uint8, 0..15, any shape) -> float32 values by table lookup."""
    codes = require_dtype(codes, "codes", np.uint8)
    if codes.size and codes.max() > 0xF:
        raise ValueError(f"codes: expected 4-bit codes 0..15, got max {int(codes.max())}")
    return E2M1_VALUES[codes]
