"""Tensor- and expert-parallel slices of an MoE layer, as vLLM's gpt-oss loader cuts them.

Tensor parallel (``GptOssModel._load_weights_mxfp4`` in vllm/model_executor/models/gpt_oss.py):
the intermediate channels are dealt out in whole MX blocks. With I/32 blocks and tp ranks,

    P      = ceil((I / 32) / tp) * 32                 channels per rank
    rank r owns global channels [r*P, min((r+1)*P, I))  (the last ranks may own fewer, or none)

w13 rows 2*start .. 2*end (gate/up pairs, interleaved), w2 columns start .. end (bytes start/2 ..,
scale blocks start/32 ..), w13 bias likewise; w2 bias goes to rank 0 whole and is zero on the others
(it must be added once after the all-reduce sum). Expert parallel: each rank keeps whole experts
(no intermediate slicing), all their tensors including w2 bias. See spec/13-checkpoints-and-sharding.md.
"""
from __future__ import annotations

import numpy as np

from .weights import MX_BLOCK, GateUpLayout, MoEWeights


def _check_rank(tp_size, tp_rank) -> None:
    if not isinstance(tp_size, (int, np.integer)) or isinstance(tp_size, bool) or tp_size < 1:
        raise ValueError(f"tp_size: expected a positive int, got {tp_size!r}")
    if not isinstance(tp_rank, (int, np.integer)) or isinstance(tp_rank, bool) or not 0 <= tp_rank < tp_size:
        raise ValueError(f"tp_rank: expected an int in [0, {tp_size}), got {tp_rank!r}")


def tp_channel_range(intermediate_size: int, tp_size: int, tp_rank: int) -> tuple[int, int, int]:
    """(start, end, P): rank ``tp_rank`` owns global intermediate channels [start, end); P per rank."""
    _check_rank(tp_size, tp_rank)
    if intermediate_size % MX_BLOCK:
        raise ValueError(f"intermediate_size: expected a multiple of {MX_BLOCK}, got {intermediate_size}")
    per_rank = -(-(intermediate_size // MX_BLOCK) // tp_size) * MX_BLOCK     # P = ceil(blocks/tp)*32
    start = min(tp_rank * per_rank, intermediate_size)
    end = min((tp_rank + 1) * per_rank, intermediate_size)
    return start, end, per_rank


def shard_tensor_parallel(weights: MoEWeights, tp_size: int, tp_rank: int, *, pad: bool = True) -> MoEWeights:
    """Rank ``tp_rank``'s part of the layer.

    pad=True (default): I_local = P on every rank, the rank's channels first and zeros after (vLLM's
    zero-initialised per-rank buffer; a rank with no channels is all zeros). pad=False: exactly the
    rank's channels (ValueError for a rank that owns none). Either way the sum over ranks of the
    ranks' outputs is the full layer's output."""
    if not isinstance(weights, MoEWeights):
        raise TypeError(f"weights: expected MoEWeights, got {type(weights).__name__}")
    start, end, per_rank = tp_channel_range(weights.intermediate_size, tp_size, tp_rank)
    if not pad and end == start:
        raise ValueError(f"tp_rank: rank {tp_rank} of {tp_size} owns no intermediate channels "
                         f"(I={weights.intermediate_size}, P={per_rank}); use pad=True")
    w = weights.with_gate_up("interleaved")              # pairs stay together when slicing rows
    E, H = w.num_experts, w.hidden_size
    n_local = per_rank if pad else end - start
    s, t = start, end                                    # channel range; w13 rows 2s..2t

    def fill(shape, dtype, part):                        # zeros of `shape`, `part` top-left
        out = np.zeros(shape, dtype)
        out[tuple(slice(0, n) for n in part.shape)] = part
        return out

    w13 = fill((E, 2 * n_local, H // 2), np.uint8, w.w13_weight[:, 2 * s:2 * t])
    s13 = fill((E, 2 * n_local, H // MX_BLOCK), np.uint8, w.w13_weight_scale[:, 2 * s:2 * t])
    w2 = fill((E, H, n_local // 2), np.uint8, w.w2_weight[:, :, s // 2:t // 2])
    s2 = fill((E, H, n_local // MX_BLOCK), np.uint8, w.w2_weight_scale[:, :, s // MX_BLOCK:t // MX_BLOCK])
    b13 = None if w.w13_bias is None else fill((E, 2 * n_local), np.float32, w.w13_bias[:, 2 * s:2 * t])
    b2 = None
    if w.w2_bias is not None:                            # whole on rank 0, zeros elsewhere
        b2 = w.w2_bias.copy() if tp_rank == 0 else np.zeros_like(w.w2_bias)
    local = MoEWeights(w13, s13, w2, s2, b13, b2, gate_up=GateUpLayout.INTERLEAVED)
    return local.with_gate_up(weights.gate_up)


def check_expert_map(expert_map, num_experts: int) -> np.ndarray:
    """Validate an expert map: int32 (E_global,), -1 or a local index; local indices 0..L-1 once each."""
    if not isinstance(expert_map, np.ndarray) or expert_map.dtype != np.int32:
        got = expert_map.dtype if isinstance(expert_map, np.ndarray) else type(expert_map).__name__
        raise TypeError(f"expert_map: expected a numpy int32 array, got {got}")
    if expert_map.shape != (num_experts,):
        raise ValueError(f"expert_map: expected shape ({num_experts},), got {expert_map.shape}")
    local = np.sort(expert_map[expert_map >= 0])
    if (expert_map < -1).any() or not np.array_equal(local, np.arange(local.size)):
        raise ValueError("expert_map: expected -1 (expert on another rank) or local indices "
                         f"0..L-1 each exactly once, got {expert_map.tolist()}")
    return expert_map


def shard_expert_parallel(weights: MoEWeights, expert_map: np.ndarray) -> MoEWeights:
    """The experts this rank holds, in local-index order: local expert l = global g with map[g] == l."""
    if not isinstance(weights, MoEWeights):
        raise TypeError(f"weights: expected MoEWeights, got {type(weights).__name__}")
    expert_map = check_expert_map(expert_map, weights.num_experts)
    local = np.flatnonzero(expert_map >= 0)
    order = local[np.argsort(expert_map[local])]         # global ids, by local index
    if order.size == 0:
        raise ValueError("expert_map: this rank holds no experts")
    take = lambda a: None if a is None else np.ascontiguousarray(a[order])
    return MoEWeights(take(weights.w13_weight), take(weights.w13_weight_scale), take(weights.w2_weight),
                      take(weights.w2_weight_scale), take(weights.w13_bias), take(weights.w2_bias),
                      gate_up=weights.gate_up)
