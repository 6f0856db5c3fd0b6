"""FP4 E2M1 elements: 1 sign bit, 2 exponent bits (bias 1), 1 mantissa bit; no Inf, no NaN.

Code ``s e e m``: bit 3 is the sign, codes 0..7 are the magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6,
and 0x8 is -0.0. See spec/01-elements.md.
"""
from __future__ import annotations

import numpy as np

from ._checks import require_dtype
from .dtypes import FLOAT_DTYPES, sign_bits
from .rounding import Rounding, parse_rounding, round_magnitude

# The whole format in one table, in code order (code -> value).
E2M1_VALUES = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)
E2M1_VALUES.setflags(write=False)

E2M1_GRID = E2M1_VALUES[:8].astype(np.float64)   # magnitudes, index == code
E2M1_MAX = 6.0          # largest magnitude
E2M1_EMAX = 2           # exponent of the largest power of two (4 = 2**2); OCP's emax_elem
E2M1_MBITS = 1          # explicit mantissa bits
E2M1_SIGN = 0x8


def decode_e2m1(codes: np.ndarray) -> np.ndarray:
    """Codes (uint8, 0..15, any shape) -> float32 values by table lookup."""
    codes = require_dtype(codes, "codes", np.uint8)
    if codes.size and codes.max() > 0xF:
        raise ValueError(f"codes: expected 4-bit codes 0..15, got max {int(codes.max())}")
    return E2M1_VALUES[codes]


def encode_e2m1(x: np.ndarray, rounding: str | Rounding = "rne") -> np.ndarray:
    """Round real values to E2M1 codes (uint8 0..15), one rounding, saturating at +-6.

    x: float16 / bfloat16 / float32 / float64 array, any shape. Every one of these converts to
    float64 exactly and every E2M1 midpoint is exact in float64, so a float64 input is rounded
    ONCE, directly (ml_dtypes' astype(float4_e2m1fn) goes through float32 and can round twice).
    +-inf saturates to +-6 (code 0x7 / 0xF); the sign bit is kept, so -0.0 and -0.1 give 0x8.
    NaN has no E2M1 encoding: ValueError (the block quantizer has its own, preset-defined rule).
    """
    x = require_dtype(x, "x", *FLOAT_DTYPES)
    rnd = parse_rounding(rounding)
    x64 = x.astype(np.float64)
    if np.isnan(x64).any():
        raise ValueError("x: E2M1 has no NaN; got NaN in the input (quantize() defines per preset "
                         "what a NaN element becomes)")
    mag_code = round_magnitude(np.abs(x64), E2M1_GRID, rnd)
    sign = sign_bits(x)
    if rnd is Rounding.MX_NEAREST:
        sign = np.where(x64 == 0, 0, sign)           # torch.sign(+-0.0) == 0
    return (mag_code | (sign << 3)).astype(np.uint8)

