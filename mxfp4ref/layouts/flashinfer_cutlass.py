"""``flashinfer-cutlass-sm90``: vLLM's conversion for flashinfer's CUTLASS MXFP4 x BF16 MoE on Hopper.

vLLM 0.33 (FLASHINFER_CUTLASS_MXFP4_BF16):

1. **De-interleave and swap** w13 (weights, scales, bias): gate rows ``::2`` and up rows ``1::2`` are
   split and stacked as ``[up; gate]`` -- new row j < I is old row 2j+1 (up j), new row I + j is old
   row 2j (gate j). The w13 bias goes through float32 and back to **bf16**; w2's bias stays bf16 as
   loaded. (MoEWeights biases are float32; they must be bf16-exact here.)
2. **Weights**: flashinfer ``interleave_moe_weights_for_sm90_mixed_gemm(w, "fp4")`` (TensorRT-LLM's
   ``interleave_fp4_weights_for_sm90_mixed_gemm`` CUDA kernel). Per expert, rows in groups of 16
   (two halves of 8: h), byte columns in groups of 32 (4 "mma" quarters of 8 bytes, each 2 x 4): the 4
   source bytes (row r, col c), (r+8, c), (r, c+4), (r+8, c+4) become one 4-byte word, stored at
   row ``r + 8*(mma % 2)``, byte column ``16*(mma // 2) + 4*(c % 4)``; then the word's 32 bits are
   reordered by the *same* bit twiddle as triton-hopper (fp4 bits next to bf16 exponent bits).
3. **Scales**: flashinfer ``interleave_moe_scales_for_sm90_mixed_gemm(s)`` (pure torch, uint8, group
   32): each 64-row x 4-group (= 128 K) block is folded into 16 x 16 bytes: row m = 16*q + f,
   group g = 4*b + t of the block go to ``[f][4*q + t]``; blocks ordered (m // 64, g // 4). Buffer
   shape (E, N/64, K/128, 16, 16).

Constraints (kernel checks and the scale fold): H and I multiples of 128 (vLLM pads gpt-oss to 2944).
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from ._core import TensorPlan, bf16_codec, cached_index_map, check_multiple, identity_index_map
from .triton_hopper import twiddle, untwiddle

NAME = "flashinfer-cutlass-sm90"
TEST_SHAPES = [(1, 128, 128), (3, 256, 128), (2, 128, 384)]
GPT_OSS_SHAPE = (2944, 2944)          # (H, I) after vLLM's CUTLASS padding of 2880


def check_shapes(H: int, I: int) -> None:
    hint = "pad the weights first (vLLM pads gpt-oss to H=I=2944)"
    check_multiple(H, 128, NAME, "hidden_size H (w13 scale groups fold 128 K; w2 rows fold by 64)", hint)
    check_multiple(I, 128, NAME, "intermediate_size I (w2 scale groups fold 128 K)", hint)


def up_gate_rows(I: int) -> np.ndarray:
    """New row p of w13 reads old (interleaved) row: up j = 2j+1 first, then gate j = 2j."""
    j = np.arange(I, dtype=np.int64)
    return np.concatenate([2 * j + 1, 2 * j])


def weight_index_map(E: int, N: int, Kb: int, rows: np.ndarray) -> np.ndarray:
    """(E, N, Kb) source bytes, rows first reordered by ``rows`` -> (E, N, Kb) buffer before the twiddle."""
    idx = identity_index_map((E, N, Kb))[:, rows, :]
    idx = idx.reshape(E, N // 16, 2, 8, Kb // 32, 2, 2, 2, 4)   # (E, g, h, r, p, mh, ml, c, l4)
    idx = idx.transpose(0, 1, 6, 3, 4, 5, 8, 7, 2)              # (E, g, ml, r, p, mh, l4, c, h)
    return idx.reshape(E, N, Kb)


def scale_index_map(E: int, N: int, G: int, rows: np.ndarray) -> np.ndarray:
    """(E, N, G) source bytes, rows reordered -> (E, N/64, G/4, 16, 16) folded blocks."""
    idx = identity_index_map((E, N, G))[:, rows, :]
    idx = idx.reshape(E, N // 64, 4, 16, G // 4, 4)             # (E, m64, q, f, b, t)
    idx = idx.transpose(0, 1, 4, 3, 2, 5)                       # (E, m64, b, f, q, t)
    return idx.reshape(E, N // 64, G // 4, 16, 16)


to_bf16, from_bf16 = bf16_codec(NAME)


def plan(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    plans = {}
    for name, N, K in (("w13", 2 * I, H), ("w2", H, I)):
        rows = up_gate_rows(I) if name == "w13" else np.arange(N, dtype=np.int64)
        w = cached_index_map((NAME, name + "_weight", N, K), lambda: weight_index_map(E, N, K // 2, rows))
        s = cached_index_map((NAME, name + "_weight_scale", N, K), lambda: scale_index_map(E, N, K // 32, rows))
        order = "rows [up; gate], " if name == "w13" else ""
        plans[name + "_weight"] = TensorPlan(w, encode=twiddle, decode=untwiddle,
                                             view=f"(E, N, K/2) uint8, {order}16x32-byte tiles, bit-twiddled words")
        plans[name + "_weight_scale"] = TensorPlan(s, view=f"(E, N/64, K/128, 16, 16) uint8, {order}folded 64x4 blocks")
        plans[name + "_bias"] = TensorPlan(identity_index_map((E, N))[:, rows], unit="element", encode=to_bf16, dtype=ml_dtypes.bfloat16,
                                           decode=from_bf16, view=f"bfloat16 (E, N), {order.rstrip(', ')}")
    return plans
