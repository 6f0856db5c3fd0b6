"""The MXFP4 MoE layer's parameters, under vLLM's names and shapes.

One layer of E experts, hidden size H, expert intermediate size I (both multiples of 32, the MX block):

    w13_weight        (E, 2I, H/2)  uint8   packed FP4 codes of [gate; up] (see ``gate_up``), K = H
    w13_weight_scale  (E, 2I, H/32) uint8   E8M0 scale per 32 consecutive H elements
    w2_weight         (E, H, I/2)   uint8   packed FP4 codes of the down projection, K = I
    w2_weight_scale   (E, H, I/32)  uint8
    w13_bias          (E, 2I) float32 or None
    w2_bias           (E, H)  float32 or None

Packing and scales are the ones of the format core (spec/02, spec/03): along the last axis element 2i is
the low nibble of byte i; element k's value is E2M1[code] * 2**(scale[k // 32] - 127).
See spec/10-moe-weights-and-padding.md.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .._checks import check_choice
from ..quantize import dequantize

MX_BLOCK = 32


class GateUpLayout(str, enum.Enum):
    """Where the gate and up rows of w13 sit (compares equal to its string value)."""

    INTERLEAVED = "interleaved"
    """Row 2j is gate j, row 2j+1 is up j: the gpt-oss checkpoint (``mlp1_weight``) and vLLM's
    gpt-oss path (Triton/Marlin kernels read ``h[..., ::2]`` as gate, ``h[..., 1::2]`` as up)."""

    CONCATENATED = "concatenated"
    """Rows 0..I-1 are gate, rows I..2I-1 are up ([w1; w3]): vLLM's ``silu_and_mul`` convention and
    non-gpt-oss MXFP4 checkpoints (e.g. Quark OCP-MX, DeepSeek-V4)."""


def gate_up_indices(intermediate_size: int, gate_up) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (gate_idx, up_idx), each int64 (I,), of the gate and up rows inside w13."""
    check_choice(gate_up, "gate_up", [m.value for m in GateUpLayout])
    j = np.arange(intermediate_size, dtype=np.int64)
    if GateUpLayout(gate_up) is GateUpLayout.INTERLEAVED:
        return 2 * j, 2 * j + 1
    return j, intermediate_size + j


def split_gate_up(h: np.ndarray, gate_up) -> tuple[np.ndarray, np.ndarray]:
    """Split a (..., 2I) gate_up activation into (gate, up), each (..., I), by the layout."""
    h = np.asarray(h)
    if h.ndim < 1 or h.shape[-1] % 2:
        raise ValueError(f"split_gate_up: h must have an even last dimension (2I), got shape {h.shape}")
    gate_idx, up_idx = gate_up_indices(h.shape[-1] // 2, gate_up)
    return h[..., gate_idx], h[..., up_idx]


def dequantize_rows(packed: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(R, K/2) packed uint8 + (R, K/32) scale bytes -> (R, K) float32, exactly E2M1 * 2**(b-127).

    The product is exact in float32 except where it overflows (|value| * 2**127 >= 2**128 gives inf:
    |code value| >= 2 with scale byte 254) and scale byte 0xFF, which is NaN (OCP MX v1.0; gpt-oss's
    ldexp decoding gives 2**128 * value there instead, i.e. inf or 0)."""
    return dequantize(packed, scales, axis=-1, dtype=np.float32)     # the format core's decode


def _check_array(a, name: str, dtype, shape: tuple) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"MoEWeights.{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.dtype(dtype):
        raise TypeError(f"MoEWeights.{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"MoEWeights.{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"MoEWeights.{name}: expected a C-contiguous array (use np.ascontiguousarray)")
    view = a.view()
    view.setflags(write=False)                                       # read-only view; the caller's array is untouched
    return view


@dataclass(frozen=True, eq=False)
class MoEWeights:
    """One MXFP4 MoE layer's weights (vLLM names). Arrays are kept as read-only views, not copied.

    Construction checks every dtype, shape and contiguity and raises TypeError/ValueError naming the
    field, the expected and the received value. E, H and I are read from ``w13_weight`` (E, 2I, H/2).
    """

    w13_weight: np.ndarray          # (E, 2I, H/2)  uint8
    w13_weight_scale: np.ndarray    # (E, 2I, H/32) uint8
    w2_weight: np.ndarray           # (E, H, I/2)   uint8
    w2_weight_scale: np.ndarray     # (E, H, I/32)  uint8
    w13_bias: np.ndarray | None = None   # (E, 2I) float32
    w2_bias: np.ndarray | None = None    # (E, H)  float32
    gate_up: str = "interleaved"

    def __post_init__(self):
        check_choice(self.gate_up, "MoEWeights.gate_up", [m.value for m in GateUpLayout])
        object.__setattr__(self, "gate_up", GateUpLayout(self.gate_up))
        w13 = self.w13_weight
        if not isinstance(w13, np.ndarray):
            raise TypeError(f"MoEWeights.w13_weight: expected a numpy.ndarray, got {type(w13).__name__}")
        if w13.ndim != 3:
            raise ValueError(f"MoEWeights.w13_weight: expected a 3-D array (E, 2I, H/2), got shape {w13.shape}")
        E, two_i, half_h = w13.shape
        H = 2 * half_h
        if E < 1:
            raise ValueError(f"MoEWeights.w13_weight: expected at least one expert, got E={E}")
        if two_i % (2 * MX_BLOCK) or two_i == 0:
            raise ValueError(f"MoEWeights.w13_weight: dimension 1 is 2I; expected I to be a positive "
                             f"multiple of {MX_BLOCK}, got 2I={two_i}")
        if H % MX_BLOCK or H == 0:
            raise ValueError(f"MoEWeights.w13_weight: dimension 2 is H/2; expected H to be a positive "
                             f"multiple of {MX_BLOCK}, got H={H}")
        I = two_i // 2
        shapes = {
            "w13_weight": (np.uint8, (E, 2 * I, H // 2)),
            "w13_weight_scale": (np.uint8, (E, 2 * I, H // MX_BLOCK)),
            "w2_weight": (np.uint8, (E, H, I // 2)),
            "w2_weight_scale": (np.uint8, (E, H, I // MX_BLOCK)),
            "w13_bias": (np.float32, (E, 2 * I)),
            "w2_bias": (np.float32, (E, H)),
        }
        for name, (dtype, shape) in shapes.items():
            a = getattr(self, name)
            if a is None and name.endswith("bias"):
                continue
            object.__setattr__(self, name, _check_array(a, name, dtype, shape))

    # ---- sizes ---------------------------------------------------------------------------------
    @property
    def num_experts(self) -> int:
        return self.w13_weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return 2 * self.w13_weight.shape[2]

    @property
    def intermediate_size(self) -> int:
        return self.w13_weight.shape[1] // 2

    @property
    def has_bias(self) -> bool:
        return self.w13_bias is not None or self.w2_bias is not None

    def _check_expert(self, e) -> int:
        if not isinstance(e, (int, np.integer)) or isinstance(e, bool):
            raise TypeError(f"e: expected an int expert index, got {type(e).__name__}")
        if not 0 <= e < self.num_experts:
            raise ValueError(f"e: expert index must be in [0, {self.num_experts}), got {e}")
        return int(e)

    # ---- dequantized views of one expert (float32, exact) --------------------------------------
    def w13_dequantized(self, e: int) -> np.ndarray:
        """Expert e's gate_up weight, float32 (2I, H), rows in ``self.gate_up`` order."""
        e = self._check_expert(e)
        return dequantize_rows(self.w13_weight[e], self.w13_weight_scale[e])

    def w2_dequantized(self, e: int) -> np.ndarray:
        """Expert e's down weight, float32 (H, I)."""
        e = self._check_expert(e)
        return dequantize_rows(self.w2_weight[e], self.w2_weight_scale[e])

    def gate_up_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (gate_idx, up_idx) into w13 for this layout, each int64 (I,)."""
        return gate_up_indices(self.intermediate_size, self.gate_up)

    def gate_rows(self, e: int) -> np.ndarray:
        """Expert e's gate weight, float32 (I, H) (row j feeds intermediate channel j)."""
        return self.w13_dequantized(e)[self.gate_up_indices()[0]]

    def up_rows(self, e: int) -> np.ndarray:
        """Expert e's up weight, float32 (I, H)."""
        return self.w13_dequantized(e)[self.gate_up_indices()[1]]

    def with_gate_up(self, gate_up) -> "MoEWeights":
        """The same layer with w13's rows (weight, scale, bias) reordered into layout ``gate_up``."""
        check_choice(gate_up, "gate_up", [m.value for m in GateUpLayout])
        if GateUpLayout(gate_up) is self.gate_up:
            return self
        gate_idx, up_idx = self.gate_up_indices()
        # position p of the new layout takes old row `order[p]`
        new_gate, new_up = gate_up_indices(self.intermediate_size, gate_up)
        order = np.empty(2 * self.intermediate_size, np.int64)
        order[new_gate], order[new_up] = gate_idx, up_idx
        take = lambda a: None if a is None else np.ascontiguousarray(a[:, order])
        return MoEWeights(take(self.w13_weight), take(self.w13_weight_scale), self.w2_weight,
                          self.w2_weight_scale, take(self.w13_bias), self.w2_bias, gate_up)

    def __repr__(self) -> str:
        return (f"MoEWeights(E={self.num_experts}, H={self.hidden_size}, I={self.intermediate_size}, "
                f"bias={self.has_bias}, gate_up={self.gate_up.value!r})")
