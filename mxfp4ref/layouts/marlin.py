"""``marlin``: vLLM's MXFP4 MoE weights for the Marlin kernel (weight-only, any SM >= 7.5).

vLLM 0.33 ``prepare_moe_mxfp4_layer_for_marlin`` (16-bit activations), per expert and per w13/w2
with N output rows and K reduced elements (w13: N = 2I, K = H; w2: N = H, K = I):

* **Weights** -- ``gptq_marlin_repack(w.view(int32).T, size_k=K, size_n=N, num_bits=4)``. The bytes
  (N, K/2) read as int32 are GPTQ's (K/8, N) packing (code k of row n at bits 4*(k % 8)). Marlin
  cuts the (K, N) code matrix into 16 x 16 tiles (k-tile-major, then n), hands each tile to the 32
  lanes of a warp in the mma.m16n8k16 B-fragment order (lane t gets n = t//4 and t//4 + 8 and
  k = 2(t%4), 2(t%4)+1, 2(t%4)+8, 2(t%4)+9), takes 4 tiles along N together (1024 codes), reorders
  each lane's 8 codes as [0, 2, 4, 6, 1, 3, 5, 7] (so a shift-by-8 dequant pairs them), and packs 8
  codes per int32 (code i at bits 4i). Buffer: int32 (E, K/16, 2N).
* **Scales** -- e8m0 bytes -> bf16 -> ``marlin_permute_scales`` on the (K/32, N) transpose (an 8x8
  transpose of every 64 consecutive scales; when K == 32, the 32-entry "single" permutation) ->
  ``mxfp4_marlin_process_scales``: swap the middle pair of every 4 ([0, 2, 1, 3]) -> back to e8m0.
  All 256 bytes survive the bf16 round trip, so this is a byte permutation. Buffer: (E, K/32, N).
* **Biases** -- ``bias.to(bf16)`` then ``marlin_permute_bias`` (the "single" permutation of every 32).
  MoEWeights biases are float32: they must be bf16-exact here.
* Gate/up rows stay interleaved (vLLM runs ``swigluoai_and_mul`` on the output).

**Divergence (decode rule):** the Marlin kernel turns a scale byte b into a bf16 by placing it in the
exponent field (bf16 bits ``b << 7``). Byte 0 therefore decodes to **0.0** (OCP: 2**-127) and byte
255 to **+inf** (OCP: NaN); see :func:`kernel_scale_value`. With FP8 activations vLLM also adds 6 to
every byte (not modelled here: 16-bit activations only).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ..packing import pack_fp4, unpack_fp4
from ._core import TensorPlan, bf16_codec, cached_index_map, check_multiple, identity_index_map

NAME = "marlin"
TEST_SHAPES = [(1, 64, 32), (3, 128, 96), (2, 192, 64)]
INTERLEAVE_4BIT = (0, 2, 4, 6, 1, 3, 5, 7)


def check_shapes(H: int, I: int) -> None:
    check_multiple(H, 64, NAME, "hidden_size H (w2 size_n: Marlin tiles N by 64)",
                   "pad the weights first (vLLM pads gpt-oss to H=3072, I=2944)")


def weight_perm() -> np.ndarray:
    """Order of the 1024 codes of 4 consecutive 16x16 tiles (tile-row-major, k*16 + n inside a tile)."""
    out = []
    for lane in range(32):
        n0, k0 = lane // 4, 2 * (lane % 4)
        one_tile = [16 * k + n0 + 8 * half for half in (0, 1) for k in (k0, k0 + 1, k0 + 8, k0 + 9)]
        for tile in range(4):
            codes = [256 * tile + p for p in one_tile]
            out.extend(codes[i] for i in INTERLEAVE_4BIT)
    return np.array(out, dtype=np.int64)


def scale_perm() -> np.ndarray:
    """Every 64 scales: entry 8a + b reads entry 8b + a (an 8 x 8 transpose)."""
    return np.arange(64, dtype=np.int64).reshape(8, 8).T.reshape(-1)


def scale_perm_single() -> np.ndarray:
    """Every 32 scales (or biases): groups of 8 taken as pairs {2i, 2i+1} at offsets 0, 8, 16, 24."""
    return np.array([2 * i + j for i in range(4) for j in (0, 1, 8, 9, 16, 17, 24, 25)], dtype=np.int64)


def weight_index_map(E: int, N: int, K: int) -> np.ndarray:
    """Codes (E, N, K) -> (E, K/16, 16N) codes in Marlin order (packed 8 per int32 afterwards)."""
    idx = identity_index_map((E, N, K)).transpose(0, 2, 1)            # (E, K, N): GPTQ orientation
    idx = idx.reshape(E, K // 16, 16, N // 16, 16).transpose(0, 1, 3, 2, 4)   # 16x16 tiles
    idx = idx.reshape(E, K // 16, N * 16 // 1024, 1024)[..., weight_perm()]
    return idx.reshape(E, K // 16, N * 16)


def scale_index_map(E: int, N: int, G: int) -> np.ndarray:
    """Scale bytes (E, N, G) -> (E, G, N) in Marlin order."""
    idx = identity_index_map((E, N, G)).transpose(0, 2, 1)            # (E, G, N)
    perm = scale_perm() if G > 1 else scale_perm_single()             # group_size < size_k ?
    idx = idx.reshape(E, -1, perm.size)[..., perm]
    idx = idx.reshape(E, -1, 4)[..., [0, 2, 1, 3]]                    # mxfp4_marlin_process_scales
    return idx.reshape(E, G, N)


def pack_int32(codes: np.ndarray) -> np.ndarray:
    """(..., 8m) codes -> (..., m) int32, code i of each 8 at bits 4i: two codes per byte (low nibble
    first, spec/02) and four bytes per little-endian word."""
    return pack_fp4(codes, axis=-1).view("<i4")


def unpack_int32(words: np.ndarray) -> np.ndarray:
    if words.dtype != np.int32:
        raise TypeError(f"{NAME}: weight buffer: expected dtype int32, got {words.dtype}")
    return unpack_fp4(np.ascontiguousarray(words).view(np.uint8), axis=-1)


def kernel_scale_value(byte) -> np.ndarray:
    """The value the Marlin kernel gives scale byte(s) ``byte``: bf16 with bits ``byte << 7``, as float32.

    Equals 2**(byte - 127) for bytes 1..254; byte 0 -> 0.0 and byte 255 -> +inf (divergences)."""
    b = np.asarray(byte, dtype=np.uint8).astype(np.uint16)
    return (b << 7).view(ml_dtypes.bfloat16).astype(np.float32)


to_bf16, from_bf16 = bf16_codec(NAME)


def plan(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    plans = {}
    for name, N, K in (("w13", 2 * I, H), ("w2", H, I)):
        w = cached_index_map((NAME, name + "_weight", N, K), lambda: weight_index_map(E, N, K))
        s = cached_index_map((NAME, name + "_weight_scale", N, K), lambda: scale_index_map(E, N, K // 32))
        b = identity_index_map((E, N)).reshape(E, N // 32, 32)[..., scale_perm_single()].reshape(E, N)
        plans[name + "_weight"] = TensorPlan(w, unit="code", encode=pack_int32, decode=unpack_int32, dtype=np.int32,
                                             view="int32 (E, K/16, 2N): 16x16 tiles, mma lane order, 8 codes per word")
        plans[name + "_weight_scale"] = TensorPlan(s, view="e8m0 bytes (E, K/32, N), Marlin scale order")
        plans[name + "_bias"] = TensorPlan(b, unit="element", encode=to_bf16, decode=from_bf16, dtype=ml_dtypes.bfloat16,
                                           view="bfloat16 (E, N), permuted in groups of 32")
    return plans
