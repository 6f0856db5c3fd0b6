"""``align_block_size``: vLLM's ``moe_align_block_size`` contract (spec/11-routing.md, "Block alignment").

The fused-MoE GEMM works on blocks of ``block_size`` (token, expert) rows that all use ONE expert. The
routed pairs are therefore sorted by expert and each expert's list is padded to a multiple of the block:

    topk_ids (T, k) -> flat index f = t*k + slot, numel = T*k
    sorted_token_ids  int32 (max_num_tokens_padded,)  expert 0's flat indices, padded with the sentinel
                      numel to a block multiple, then expert 1's, ...; unused tail = sentinel
    expert_ids        int32 (ceil(max_num_tokens_padded / block_size),)  the expert of each block;
                      blocks past num_tokens_post_padded are 0; with expert_map: expert_map[expert_ids]
    num_tokens_post_padded  int32 (1,)  sum over experts of round_up(count_e, block_size)

    max_num_tokens_padded = numel + num_experts*(block_size - 1)   (round_up to block_size if
                            pad_sorted_ids), and min(that, numel*block_size) when numel < num_experts.

Order inside an expert: ascending flat index (vLLM's golden test uses a stable sort; its CUDA kernel
for large inputs places tokens with atomics, so only the SET per expert is guaranteed there).
"""
from __future__ import annotations

import numpy as np

from .routing import check_topk_ids


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def max_num_tokens_padded(numel: int, block_size: int, num_experts: int, pad_sorted_ids: bool = False) -> int:
    """Length of ``sorted_token_ids``, as vLLM 0.33's ``moe_align_block_size`` allocates it."""
    size = numel + num_experts * (block_size - 1)
    if pad_sorted_ids:
        size = _round_up(size, block_size)
    if numel < num_experts:                      # at most numel experts are non-empty
        size = min(numel * block_size, size)
    return size


def _check_args(topk_ids, block_size, num_experts, expert_map):
    check_topk_ids(topk_ids)
    for name, v in (("block_size", block_size), ("num_experts", num_experts)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{name}: expected >= 1, got {v}")
    if topk_ids.size and (topk_ids.min() < 0 or topk_ids.max() >= num_experts):
        bad = topk_ids[(topk_ids < 0) | (topk_ids >= num_experts)][0]
        raise ValueError(f"topk_ids: expected global expert ids in [0, {num_experts}), got {bad}")
    if expert_map is not None:
        if not isinstance(expert_map, np.ndarray) or expert_map.dtype != np.int32:
            got = expert_map.dtype if isinstance(expert_map, np.ndarray) else type(expert_map).__name__
            raise TypeError(f"expert_map: expected an int32 numpy.ndarray, got {got}")
        if expert_map.shape != (num_experts,):
            raise ValueError(f"expert_map: expected shape ({num_experts},), got {expert_map.shape}")


def align_block_size(topk_ids: np.ndarray, block_size: int, num_experts: int,
                     expert_map: np.ndarray | None = None, *, pad_sorted_ids: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted_token_ids int32, expert_ids int32, num_tokens_post_padded int32 (1,)); see the module doc.

    topk_ids: (T, k) int32/int64 GLOBAL expert ids in [0, num_experts). expert_map: int32 (num_experts,)
    global -> local id or -1; applied to expert_ids at the end, as vLLM does (blocks of experts on other
    ranks get -1 and are skipped by the GEMM)."""
    _check_args(topk_ids, block_size, num_experts, expert_map)
    flat = topk_ids.reshape(-1).astype(np.int64)                        # (numel,)
    numel = flat.size
    size = max_num_tokens_padded(numel, block_size, num_experts, pad_sorted_ids)
    sorted_token_ids = np.full(size, numel, dtype=np.int32)             # sentinel everywhere
    expert_ids = np.zeros(-(-size // block_size), dtype=np.int32)       # unused blocks: expert 0

    counts = np.bincount(flat, minlength=num_experts)                   # (E,)
    by_expert = np.argsort(flat, kind="stable")                         # flat indices grouped by expert
    pos = 0                                                             # write position in sorted ids
    taken = 0                                                           # read position in by_expert
    for e in range(num_experts):
        n = int(counts[e])
        if n == 0:
            continue
        sorted_token_ids[pos:pos + n] = by_expert[taken:taken + n]
        padded = _round_up(n, block_size)
        expert_ids[pos // block_size:(pos + padded) // block_size] = e
        pos += padded
        taken += n
    if expert_map is not None:
        expert_ids = expert_map[expert_ids]
    return sorted_token_ids, expert_ids.astype(np.int32), np.array([pos], dtype=np.int32)
