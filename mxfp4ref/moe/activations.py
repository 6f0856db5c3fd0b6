"""Gated activations: (..., 2I) gate_up pre-activation -> (..., I). See spec/12-forward-and-error-bound.md.

Each function computes in the input's floating dtype (float64 for the exact pipeline, float32 to model a
kernel's fp32 epilogue) and splits gate/up by ``layout`` (mxfp4ref.moe.weights.GateUpLayout):
"interleaved" (gate = even channels, up = odd; gpt-oss) or "concatenated" ([gate; up]; silu_and_mul).
"""
from __future__ import annotations

import enum
import math

import numpy as np

from .._checks import check_choice
from .weights import GateUpLayout, split_gate_up

SWIGLU_ALPHA = 1.702       # gpt-oss swiglu alpha (sigmoid slope)
SWIGLU_LIMIT = 7.0         # gpt-oss swiglu_limit


class Activation(str, enum.Enum):
    """The gated activations of vLLM's fused MoE that this spec defines."""

    SWIGLUOAI = "swigluoai"
    """g = min(gate, limit), u = clip(up, -limit, limit), out = g*sigmoid(alpha*g)*(u + 1): gpt-oss
    ``swiglu`` / vLLM ``SwigluOAIAndMul`` / triton_kernels' fused swiglu epilogue."""

    SILU = "silu"
    """out = silu(gate) * up: vLLM ``silu_and_mul`` (gate = first half in its native layout)."""

    GELU = "gelu"
    """out = gelu(gate) * up with the exact erf GELU: vLLM ``gelu_and_mul`` (approximate="none")."""


def _check_float(h, name="gate_up") -> np.ndarray:
    if not isinstance(h, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(h).__name__}")
    if h.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {h.dtype}")
    if h.ndim < 1 or h.shape[-1] % 2:
        raise ValueError(f"{name}: expected an even last dimension (2I), got shape {h.shape}")
    return h


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) in z's dtype (overflow of exp to inf gives exactly 0, as on a GPU)."""
    with np.errstate(over="ignore"):
        return np.asarray(1, z.dtype) / (np.asarray(1, z.dtype) + np.exp(-z))


def swigluoai(gate_up: np.ndarray, *, alpha: float = SWIGLU_ALPHA, limit: float | None = SWIGLU_LIMIT,
              layout: str = "interleaved") -> np.ndarray:
    """gpt-oss swiglu: (..., 2I) -> (..., I). ``limit=None`` switches the clamps off (plain "swiglu + 1")."""
    h = _check_float(gate_up)
    check_choice(layout, "layout", [m.value for m in GateUpLayout])
    g, u = split_gate_up(h, layout)                      # (..., I) each
    if limit is not None:
        if not (isinstance(limit, (int, float)) and math.isfinite(limit) and limit > 0):
            raise ValueError(f"limit: expected a positive finite number or None, got {limit!r}")
        g = np.minimum(g, h.dtype.type(limit))           # gate clamped from above only
        u = np.clip(u, -h.dtype.type(limit), h.dtype.type(limit))
    a = h.dtype.type(alpha)
    return g * _sigmoid(a * g) * (u + h.dtype.type(1))


def silu_and_mul(gate_up: np.ndarray, *, layout: str = "concatenated") -> np.ndarray:
    """silu(gate) * up: (..., 2I) -> (..., I)."""
    h = _check_float(gate_up)
    check_choice(layout, "layout", [m.value for m in GateUpLayout])
    g, u = split_gate_up(h, layout)
    return g * _sigmoid(g) * u


def _erf(z: np.ndarray) -> np.ndarray:
    """erf elementwise via math.erf (correctly rounded-ish libm; NumPy has no erf of its own)."""
    return np.vectorize(math.erf, otypes=[np.float64])(z.astype(np.float64)).astype(z.dtype)


def gelu_and_mul(gate_up: np.ndarray, *, layout: str = "concatenated") -> np.ndarray:
    """gelu(gate) * up with gelu(g) = 0.5*g*(1 + erf(g/sqrt(2))): (..., 2I) -> (..., I)."""
    h = _check_float(gate_up)
    check_choice(layout, "layout", [m.value for m in GateUpLayout])
    g, u = split_gate_up(h, layout)
    half, root2 = h.dtype.type(0.5), h.dtype.type(math.sqrt(2.0))
    return half * g * (h.dtype.type(1) + _erf(g / root2)) * u


ACTIVATIONS = {Activation.SWIGLUOAI: swigluoai, Activation.SILU: silu_and_mul, Activation.GELU: gelu_and_mul}


def apply_activation(gate_up: np.ndarray, activation: str, layout: str, *, alpha: float = SWIGLU_ALPHA,
                     limit: float | None = SWIGLU_LIMIT) -> np.ndarray:
    """Dispatch by name; the layout comes from the weights (MoEWeights.gate_up)."""
    check_choice(activation, "activation", [a.value for a in Activation])
    act = Activation(activation)
    if act is Activation.SWIGLUOAI:
        return swigluoai(gate_up, alpha=alpha, limit=limit, layout=layout)
    return ACTIVATIONS[act](gate_up, layout=layout)
