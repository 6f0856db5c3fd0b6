"""``triton-hopper``: what vLLM's ``_swizzle_mxfp4`` hands triton_kernels' ``matmul_ogs`` on SM90.

vLLM (0.33, CUDA capability 9.x, torch >= 2.8.1) takes each weight ``w (E, N, K/2)`` and its scales
``s (E, N, K/32)`` (N = output rows: 2I for w13, H for w2; K = the reduced axis), transposes both so
the quantised axis is dim 1 (``mx_axis=1``), and converts them to

* ``HopperMXValueLayout(mx_axis=1)`` -- bytes regrouped so one thread's ``ld.global.v4`` fetches the
  elements of 4 mma tiles along K, then the 8 FP4 codes of every 4-byte word *bit-twiddled* so two
  bf16 values drop out of each shift-and-mask (a 14-instruction upcast);
* ``HopperMXScaleLayout(mx_axis=1, num_warps=8)`` -- scales regrouped per warp, after vLLM pads the
  K-groups to a multiple of 4 with zero bytes (the fix for vLLM #47303: the kernel reads scale
  tiles 4 groups wide).

Biases become float32 (already float32 in MoEWeights). Gate/up rows stay interleaved (the fused
swiglu reads even columns as gate). Reproduces triton_kernels ``tensor_details/layout_details/
hopper_value.py`` and ``hopper_scale.py`` (layouts taking ``shape`` in ``__init__``; checked byte
for byte, see spec/30-layouts.md).
"""
from __future__ import annotations

import numpy as np

from ._core import TensorPlan, arange_padded, float32_bias_plans, round_up, weight_scale_plans

NAME = "triton-hopper"
NUM_WARPS = 8


# --- values -------------------------------------------------------------------------------------
def value_index_map(E: int, N: int, Kb: int) -> np.ndarray:
    """Index map of the value buffer: source (E, N, Kb) bytes (Kb = K/2) -> (E, Np/4, 4*Kbp).

    Np = N rounded up to 16, Kbp = Kb rounded up to 32 (a 16 x 64-element mma super-tile).
    Row m and byte column kb are split as
        m  = r0*16 + w0*8 + t0*2 + s0        (rest, warp tile 2, threads 4, "scott trick" 2)
        kb = r1*32 + kt*8 + w1*4 + t1        (rest, k tile 4, warp tile 2, threads 4)
    and the buffer is ordered (r0, t0 | r1, s0, t1, kt, w1, w0): buffer row r0*4 + t0, column
    r1*128 + s0*64 + t1*16 + kt*4 + w1*2 + w0.
    """
    Np, Kbp = round_up(N, 16), round_up(Kb, 32)
    idx = arange_padded((E, N, Kb), (E, Np, Kbp))
    idx = idx.reshape(E, Np // 16, 2, 4, 2, Kbp // 32, 4, 2, 4)    # (E, r0, w0, t0, s0, r1, kt, w1, t1)
    idx = idx.transpose(0, 1, 3, 5, 4, 8, 6, 7, 2)                 # (E, r0, t0, r1, s0, t1, kt, w1, w0)
    return idx.reshape(E, Np // 4, 4 * Kbp)


# Bit twiddle of one 16-bit half-word holding four 4-bit codes (slot 0..3 = bytes 0..3 of the word;
# the low half takes their low nibbles, the high half their high nibbles). DEST[slot][b] is where
# bit b of that slot's code lands. Slots 0-2 put sign at a bf16 sign-ish bit and the 3 e/m bits
# next to the bf16 exponent LSBs (shifted by 0/3/6); slot 3 fills the remaining 4 holes.
DEST = (
    (6, 7, 8, 15),     # slot 0: b0->6,  b1->7,  b2->8,  sign->15
    (3, 4, 5, 12),     # slot 1: same, shifted right by 3
    (0, 1, 2, 9),      # slot 2: same, shifted right by 6
    (13, 10, 11, 14),  # slot 3: the leftover bits
)


# As a permutation of the 32 bits of a little-endian word: source bit 8*slot + 4*half + b (bit b of
# the low (half 0) or high (half 1) nibble of byte `slot`) goes to bit DEST[slot][b] + 16*half.
TWIDDLE_BITS = tuple(DEST[slot][b] + 16 * half for slot in range(4) for half in (0, 1) for b in range(4))
UNTWIDDLE_BITS = tuple(TWIDDLE_BITS.index(d) for d in range(32))      # the inverse permutation


def _byte_tables(bits: tuple) -> np.ndarray:
    """(4, 256) uint32: table[j][v] = the word bits that byte j of value v sets, moved by ``bits``.
    A bit permutation of a word is then the OR of four table look-ups (one per byte)."""
    table = np.zeros((4, 256), np.uint32)
    for j in range(4):
        for v in range(256):
            for i in range(8):
                if (v >> i) & 1:
                    table[j, v] |= np.uint32(1 << bits[8 * j + i])
    return table


_TWIDDLE_TABLE, _UNTWIDDLE_TABLE = _byte_tables(TWIDDLE_BITS), _byte_tables(UNTWIDDLE_BITS)


def _permute_word_bits(buf: np.ndarray, table: np.ndarray) -> np.ndarray:
    if buf.dtype != np.uint8:
        raise TypeError(f"{NAME}: weight buffer: expected dtype uint8, got {buf.dtype}")
    b = buf.reshape(buf.shape[:-1] + (-1, 4))                       # (..., n, 4) bytes of each word
    word = table[0][b[..., 0]] | table[1][b[..., 1]] | table[2][b[..., 2]] | table[3][b[..., 3]]
    return word.astype("<u4").view(np.uint8).reshape(buf.shape)


def twiddle(buf: np.ndarray) -> np.ndarray:
    """Bytes (..., 4n) -> bit-twiddled bytes (..., 4n): each 4-byte little-endian word's bits moved
    by ``TWIDDLE_BITS``."""
    return _permute_word_bits(buf, _TWIDDLE_TABLE)


def untwiddle(buf: np.ndarray) -> np.ndarray:
    """Inverse of :func:`twiddle`."""
    return _permute_word_bits(buf, _UNTWIDDLE_TABLE)


# --- scales -------------------------------------------------------------------------------------
def scale_index_map(E: int, N: int, G: int, num_warps: int = NUM_WARPS) -> np.ndarray:
    """Index map of the scale buffer: source (E, N, G) bytes (G = K/32) -> (E, Np/32, 32*Gp).

    Gp = G rounded up to 4 (vLLM's pad; the layout itself only needs 2), Np = N rounded up to
    2*num_warps*2*8 = 256. Row m and K-group g are split as
        m = a*256 + b*128 + w*16 + c*8 + d,    g = k*2 + f
    and the buffer is ordered (a, w | k, b, d, f, c): buffer row a*8 + w, column
    k*64 + b*32 + d*4 + f*2 + c.
    """
    align_m = 2 * num_warps * 2 * 8
    Np, Gp = round_up(N, align_m), round_up(G, 4)
    idx = arange_padded((E, N, G), (E, Np, Gp))
    idx = idx.reshape(E, Np // align_m, 2, num_warps, 2, 8, Gp // 2, 2)   # (E, a, b, w, c, d, k, f)
    idx = idx.transpose(0, 1, 3, 6, 2, 5, 7, 4)                             # (E, a, w, k, b, d, f, c)
    return idx.reshape(E, Np // 32, 32 * Gp)


def plan(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    """TensorPlans for every tensor; index maps come from the cache."""
    return {**weight_scale_plans(NAME, E, H, I, value_index_map, scale_index_map,
                                 "kernel sees the transpose of the last two axes: (E, 4*Kbp, Np/4)",
                                 "kernel sees the transpose of the last two axes: (E, 32*Gp, Np/32)",
                                 encode=twiddle, decode=untwiddle),
            **float32_bias_plans(E, H, I)}
