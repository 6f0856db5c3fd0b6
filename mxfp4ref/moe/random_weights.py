"""Synthetic but realistic MXFP4 MoE weights, identical on every machine for a given seed.

Realistic: float weights with a per-row spread of magnitudes are *quantized* (``mxfp4ref.quantize``),
so scale bytes vary per row and block and codes follow the quantizer's rounding, as in a checkpoint.

Deterministic: every random number comes from the raw 64-bit stream of ``numpy.random.PCG64(seed)``
(a stream NumPy guarantees to keep), turned into floats with integer operations and single,
correctly rounded float64 operations only (no log/exp/cos, whose last bit may differ between libm
builds). Draws, in this order:

    for e in 0 .. E-1:
        2I   raw words -> w13 row magnitudes m_r            (row order as stored, gate/up interleaved)
        2I*H raw words -> w13 elements, row-major            w = z * m_r / sqrt(H)
        H    raw words -> w2 row magnitudes
        H*I  raw words -> w2 elements, row-major              w = z * m_r / sqrt(I)
    if bias: E*2I raw words -> w13_bias, then E*H -> w2_bias   b = bf16(z / 2), stored as float32

A row magnitude is ldexp(1 + f, j): j = top 2 bits - 2 in {-2, -1, 0, 1}, f = next 51 bits / 2**51,
so magnitudes spread log-uniformly-ish over [0.25, 4). An element z is the Irwin-Hall sum of the
word's four 16-bit fields, centred and scaled to unit variance (|z| <= 2*sqrt(3)). Weights are made
interleaved; ``gate_up="concatenated"`` reorders the same rows, so both layouts hold the same layer.
See spec/10-moe-weights-and-padding.md.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from .weights import MoEWeights

_U16 = np.uint64(0xFFFF)
# Irwin-Hall with n = 4 uniform 16-bit fields: mean 4 * 65535/2, variance 4 * (65536**2 - 1)/12.
_IH_MEAN = 2.0 * 65535.0
_IH_INV_STD = 1.0 / np.sqrt(4.0 * (65536.0 ** 2 - 1.0) / 12.0)


def unit_normalish(raw: np.ndarray) -> np.ndarray:
    """uint64 words -> float64 values with mean 0, variance 1 (Irwin-Hall of four 16-bit fields)."""
    s = (raw & _U16) + ((raw >> np.uint64(16)) & _U16) + ((raw >> np.uint64(32)) & _U16) + (raw >> np.uint64(48))
    return (s.astype(np.float64) - _IH_MEAN) * _IH_INV_STD


def row_magnitudes(raw: np.ndarray) -> np.ndarray:
    """uint64 words -> float64 magnitudes ldexp(1 + f, j), j in {-2..1}, in [0.25, 4)."""
    j = (raw >> np.uint64(62)).astype(np.int64) - 2
    f = ((raw >> np.uint64(11)) & np.uint64((1 << 51) - 1)).astype(np.float64) * 2.0 ** -51
    return np.ldexp(1.0 + f, j)


def _float_rows(bg: np.random.PCG64, rows: int, cols: int) -> np.ndarray:
    """One matrix: row magnitudes, then elements; float32 (rows, cols)."""
    m = row_magnitudes(bg.random_raw(rows))                                 # (rows,)
    z = unit_normalish(bg.random_raw(rows * cols)).reshape(rows, cols)      # (rows, cols)
    return (z * (m / np.sqrt(float(cols)))[:, None]).astype(np.float32)


def words_per_expert(hidden_size: int, intermediate_size: int) -> int:
    """Raw 64-bit words one expert draws: w13 (2I magnitudes + 2I*H elements), w2 (H + H*I)."""
    H, I = hidden_size, intermediate_size
    return 2 * I + 2 * I * H + H + H * I


def random_expert(seed: int, e: int, hidden_size: int, intermediate_size: int, *,
                  preset: str = "ocp", backend: str = "numpy"):
    """Expert ``e`` of ``random_moe_weights(E, H, I, seed=seed)``, drawn from its own stream position.

    Returns (w13 (2I, H/2), w13 scales (2I, H/32), w2 (H, I/2), w2 scales (H, I/32)), all uint8.
    Experts can be made independently and in any order (e.g. in worker processes)."""
    from .. import quantize          # the format core's quantizer (imported late: no import cycle)

    H, I = int(hidden_size), int(intermediate_size)
    bg = np.random.PCG64(int(seed))
    bg.advance(int(e) * words_per_expert(H, I))
    q13 = quantize(_float_rows(bg, 2 * I, H), axis=-1, preset=preset, backend=backend)
    q2 = quantize(_float_rows(bg, H, I), axis=-1, preset=preset, backend=backend)
    return q13.packed, q13.scales, q2.packed, q2.scales


def random_biases(seed: int, num_experts: int, hidden_size: int, intermediate_size: int):
    """(w13_bias (E, 2I), w2_bias (E, H)) float32 holding bf16 values: the stream after the last expert."""
    E, H, I = int(num_experts), int(hidden_size), int(intermediate_size)
    bg = np.random.PCG64(int(seed))
    bg.advance(E * words_per_expert(H, I))
    to_bf16 = lambda z: (z / 2).astype(ml_dtypes.bfloat16).astype(np.float32)
    b13 = to_bf16(unit_normalish(bg.random_raw(E * 2 * I)).reshape(E, 2 * I))
    b2 = to_bf16(unit_normalish(bg.random_raw(E * H)).reshape(E, H))
    return b13, b2


def check_sizes(num_experts, hidden_size, intermediate_size, seed) -> None:
    """ValueError naming the argument unless E >= 1, H and I positive multiples of 32, seed >= 0."""
    for name, v, mult in (("num_experts", num_experts, 1), ("hidden_size", hidden_size, 32),
                          ("intermediate_size", intermediate_size, 32)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1 or v % mult:
            raise ValueError(f"{name}: expected a positive int multiple of {mult}, got {v!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")


def assemble(E: int, H: int, I: int, experts, biases, gate_up: str) -> MoEWeights:
    """MoEWeights from an iterable of E :func:`random_expert` results (consumed one at a time, so a
    generator keeps one expert in flight) and optional :func:`random_biases`."""
    w13 = np.empty((E, 2 * I, H // 2), np.uint8)
    s13 = np.empty((E, 2 * I, H // 32), np.uint8)
    w2 = np.empty((E, H, I // 2), np.uint8)
    s2 = np.empty((E, H, I // 32), np.uint8)
    for e, parts in enumerate(experts):
        w13[e], s13[e], w2[e], s2[e] = parts
    b13, b2 = biases if biases is not None else (None, None)
    return MoEWeights(w13, s13, w2, s2, b13, b2, gate_up="interleaved").with_gate_up(gate_up)


def random_moe_weights(num_experts: int, hidden_size: int, intermediate_size: int, *, seed: int,
                       bias: bool = True, preset: str = "ocp", gate_up: str = "interleaved",
                       backend: str = "numpy") -> MoEWeights:
    """A random MoE layer (E, H, I) quantized with ``mxfp4ref.quantize(..., preset=preset)``.

    ``backend`` is the quantizer's ("numba" gives the same bytes, faster: a gpt-oss-120b layer takes
    minutes with either, most of it in quantize)."""
    check_sizes(num_experts, hidden_size, intermediate_size, seed)
    E, H, I = int(num_experts), int(hidden_size), int(intermediate_size)
    experts = (random_expert(seed, e, H, I, preset=preset, backend=backend) for e in range(E))
    return assemble(E, H, I, experts, random_biases(seed, E, H, I) if bias else None, gate_up)
