"""E8M0 block scales: 8 exponent bits, bias 127, no sign, no mantissa.

Byte ``b`` means 2**(b - 127) for b in 0..254; 0x00 is 2**-127 (an fp32 *subnormal*, 0x00400000),
0xFF is NaN. There is no zero and no infinity. See spec/01-elements.md.
"""
from __future__ import annotations

import numpy as np

from ._checks import require_dtype

E8M0_BIAS = 127
E8M0_NAN = 0xFF


def decode_e8m0(byte: np.ndarray) -> np.ndarray:
    """Scale bytes (uint8, any shape) -> float32 2**(b-127), exactly; 0xFF -> NaN."""
    byte = require_dtype(byte, "byte", np.uint8)
    b = byte.astype(np.int64)
    out = np.ldexp(np.float64(1.0), b - E8M0_BIAS)      # exact in float64, exact in float32 too
    out = np.where(b == E8M0_NAN, np.nan, out)
    return out.astype(np.float32)


def encode_e8m0(exponent) -> np.ndarray:
    """Unbiased integer exponents e in [-127, 127] (any int dtype or Python ints) -> uint8 e + 127.

    The byte 0xFF (NaN) has no exponent; ask for it explicitly with ``np.uint8(0xFF)``.
    """
    e = np.asarray(exponent)
    if e.dtype.kind not in "iu":
        raise TypeError(f"exponent: expected integers, got dtype {e.dtype}")
    e = e.astype(np.int64)
    if e.size and (e.min() < -E8M0_BIAS or e.max() > E8M0_BIAS):
        raise ValueError(f"exponent: expected values in [-127, 127], got range "
                         f"[{int(e.min())}, {int(e.max())}]")
    return (e + E8M0_BIAS).astype(np.uint8)
