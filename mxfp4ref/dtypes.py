"""Input dtypes the spec accepts and how each becomes float32.

* float32: used as is.
* float16, bfloat16 (``ml_dtypes.bfloat16`` arrays): widened to float32, which is exact.
* float64: accepted only when every value is exactly a float32 (then the conversion is exact);
  otherwise a ValueError asks the caller to round explicitly (``x.astype(np.float32)``).
  Quantizing a float64 would otherwise round twice (float64 -> float32 -> E2M1) without saying so,
  and no implementation we reproduce accepts float64 anyway.
See spec/01-elements.md.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

FLOAT_DTYPES = (np.float16, ml_dtypes.bfloat16, np.float32, np.float64)
FLOAT_DTYPE_NAMES = "float16, bfloat16 (ml_dtypes), float32 or float64"


def sign_bits(x: np.ndarray) -> np.ndarray:
    """0/1 sign bit of each element (of -0.0 and of NaN too), as int64."""
    return np.signbit(x).astype(np.int64)


def f32_bits(x: np.ndarray) -> np.ndarray:
    """float32 array -> its bit patterns as int64 (non-negative, < 2**32)."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)


def bits_f32(b: np.ndarray) -> np.ndarray:
    """Bit patterns (int, < 2**32) -> float32."""
    return np.asarray(b, dtype=np.int64).astype(np.uint32).view(np.float32)


def to_float32(x, name: str = "x") -> np.ndarray:
    """Validate a floating input and return it as float32, exactly (see the module docstring)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of {FLOAT_DTYPE_NAMES}, "
                        f"got {type(x).__name__}")
    if x.dtype not in [np.dtype(d) for d in FLOAT_DTYPES]:
        raise TypeError(f"{name}: expected dtype {FLOAT_DTYPE_NAMES}, got {x.dtype}")
    if x.dtype == np.float64:
        x32 = x.astype(np.float32)
        same = (x32.astype(np.float64) == x) | (np.isnan(x) & np.isnan(x32))
        if not same.all():
            bad = np.flatnonzero(~same.ravel())[0]
            raise ValueError(
                f"{name}: float64 input must be exactly representable in float32 (quantizing it "
                f"would round twice); element {bad} = {x.ravel()[bad]!r} is not. "
                f"Round it yourself first: x.astype(np.float32)")
        return x32
    return x.astype(np.float32)
