"""Argument checks shared by the spec's public functions.

Every check raises ``TypeError`` (wrong type/dtype) or ``ValueError`` (wrong value/shape) with a
message naming the argument, what was expected and what was received.
"""
from __future__ import annotations

import numpy as np


def require_dtype(a, name: str, *dtypes) -> np.ndarray:
    """Return ``a`` as an ndarray whose dtype is one of ``dtypes``; otherwise TypeError."""
    if not isinstance(a, np.ndarray):
        if isinstance(a, (list, tuple, int, float)) or np.isscalar(a):
            a = np.asarray(a)
        else:
            raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    allowed = [np.dtype(d) for d in dtypes]
    if a.dtype not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{name}: expected dtype {want}, got {a.dtype}")
    return a


def check_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """Normalise a possibly negative axis; ValueError if out of range."""
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: {axis} is out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def check_choice(value, name: str, choices) -> None:
    """ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {sorted(map(str, choices))}")
