"""``flashinfer-trtllm``: vLLM's conversion for flashinfer's TensorRT-LLM-gen MXFP4 MoE (SM100).

vLLM 0.33 ``convert_gpt_oss_weight_to_mxfp4_moe_kernel_format`` (TRTLLM_BACKENDS branch), per expert:

1. **Row-pair swap** of w13 (weights, scales, bias): trtllm-gen's swiglu wants ``[up_j, gate_j]`` where
   the checkpoint has ``[gate_j, up_j]``; rows 2j and 2j+1 trade places.
2. **Row shuffle for epilogue tile 128** (flashinfer ``get_shuffle_matrix_a_row_indices``): in every
   block of 32 rows, source row ``r`` goes to row ``(r % 4) * 8 + r // 4``; equivalently output row
   ``p`` of the block reads source row ``(p % 8) * 4 + p // 8``. Applied to the rows of weights,
   scales and biases of both w13 and w2 (the *w2* variant for w13 too: the pair swap already did
   what ``reorder_rows_for_gated_act_gemm`` would).
3. **128x4 block-scale interleave** of the (shuffled) scales (flashinfer ``block_scale_interleave``,
   CUTLASS/tcgen05 "SWIZZLED_128x4"): each tile of 128 rows x 4 K-groups is 512 contiguous bytes,
   row m, group g of a tile at byte ``16*(m % 32) + 4*((m % 128) // 32) + g % 4``; tiles are ordered
   row-tile-major: ``tile(m // 128, g // 4)`` starts at ``((m // 128) * (G / 4) + g // 4) * 512``.

Biases become float32. vLLM then views the scale buffer as ``(E, N, K/32)`` float8_e4m3fn (the bytes
are still UE8M0); that reshape only works without padding, so rows must be a multiple of 128 and the
K-groups a multiple of 4: H and I multiples of 128 (vLLM pads gpt-oss to I=2944, H=3072).
"""
from __future__ import annotations

import numpy as np

from ._core import TensorPlan, cached_index_map, check_multiple, identity_index_map

NAME = "flashinfer-trtllm"
EPILOGUE_TILE_M = 128
TEST_SHAPES = [(1, 128, 128), (3, 256, 128), (2, 128, 384)]
GPT_OSS_SHAPE = (3072, 2944)          # (H, I) after vLLM's TRTLLM padding of 2880


def check_shapes(H: int, I: int) -> None:
    hint = "pad the weights first (vLLM pads gpt-oss to H=3072, I=2944)"
    check_multiple(H, 128, NAME, "hidden_size H (w2 rows and w13 scale K-groups*32*4)", hint)
    check_multiple(I, 128, NAME, "intermediate_size I (w2 scale K-groups*32*4)", hint)


def pair_swap_rows(M: int) -> np.ndarray:
    """Row order after swapping rows 2j and 2j+1: new row p reads old row p ^ 1."""
    return np.arange(M, dtype=np.int64) ^ 1


def shuffle_rows(M: int, epilogue_tile_m: int = EPILOGUE_TILE_M) -> np.ndarray:
    """flashinfer's row shuffle: new row p reads old row ``rows[p]`` (blocks of 32 when the epilogue
    tile is a multiple of 128, else 16; the block is read as 8 rows x (block/8) columns, transposed)."""
    block = 32 if epilogue_tile_m % 128 == 0 else 16
    if M % block:
        raise ValueError(f"{NAME}: row count must be a multiple of {block}, got {M}")
    p = np.arange(M, dtype=np.int64)
    base, q = p // block * block, p % block
    return base + (q % 8) * (block // 8) + q // 8


def interleave_128x4(idx: np.ndarray) -> np.ndarray:
    """(E, M, G) -> (E, M, G) in the 128x4 order (M % 128 == 0, G % 4 == 0): a reordering of bytes
    whose memory order is tiles (m // 128, g // 4), inside a tile (m % 32, (m % 128) // 32, g % 4)."""
    E, M, G = idx.shape
    t = idx.reshape(E, M // 128, 4, 32, G // 4, 4)       # (E, m1, m2, m3, g1, g2): m = m1*128 + m2*32 + m3
    return t.transpose(0, 1, 4, 3, 2, 5).reshape(E, M, G)  # (E, m1, g1, m3, m2, g2)


def _rows(name: str, M: int) -> np.ndarray:
    rows = shuffle_rows(M)
    return pair_swap_rows(M)[rows] if name == "w13" else rows   # swap first, then shuffle


def plan(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    plans = {}
    for name, N, K in (("w13", 2 * I, H), ("w2", H, I)):
        rows = cached_index_map((NAME, name + "_rows", N), lambda: _rows(name, N))
        w = cached_index_map((NAME, name + "_weight", N, K),
                             lambda: identity_index_map((E, N, K // 2))[:, rows, :])
        s = cached_index_map((NAME, name + "_weight_scale", N, K),
                             lambda: interleave_128x4(identity_index_map((E, N, K // 32))[:, rows, :]))
        b = identity_index_map((E, N))[:, rows]
        swap = "pair-swapped ([up_j, gate_j]) then " if name == "w13" else ""
        plans[name + "_weight"] = TensorPlan(w, view=f"(E, N, K/2) uint8, rows {swap}shuffled in blocks of 32")
        plans[name + "_weight_scale"] = TensorPlan(
            s, view=f"(E, N, K/32) bytes (viewed as float8_e4m3fn), rows {swap}shuffled, then 128x4 tiles")
        plans[name + "_bias"] = TensorPlan(b, unit="element", view=f"float32 (E, N), rows {swap}shuffled")
    return plans
