"""Routing: router logits -> (topk_weights float32 (T, k), topk_ids int32 (T, k)). See spec/11-routing.md.

Two steps, each defined so that a GPU kernel can reproduce the result bit for bit:

1. SELECTION on the logits themselves (float32 values, exact comparisons): the k largest logits of a
   row, ties to the LOWER expert index. Softmax and sigmoid are increasing, so this is the set that
   vLLM's ``topk_softmax`` (which selects on fp32 probabilities) and triton_kernels' ``topk`` (which
   selects on the raw logits) both pick, except where vLLM's fp32 rounding merges two different logits
   into one probability (spec/11, "Known divergence").
2. WEIGHTS in float64 with a fixed order of operations, rounded once to float32 at the end:
   ``m = max`` of the row, ``e_i = exp(x_i - m)``, sums left to right in ascending EXPERT ID order,
   one division. Only ``exp`` is not an IEEE-exact operation; see spec/11 for what that means.

The weight of a (token, expert) pair does not depend on ``order``: ``order`` only permutes the k slots.
"""
from __future__ import annotations

import enum

import ml_dtypes
import numpy as np

from .._checks import check_choice


class Scoring(str, enum.Enum):
    """How a row of logits becomes routing weights (compares equal to its string value)."""

    SOFTMAX = "softmax"
    """Softmax over all E experts, then top-k, then (renormalize=True) divide by the k weights' sum:
    vLLM's ``fused_topk`` / ``topk_softmax`` (RoutingMethodType.RenormalizeNaive)."""

    TOPK_SOFTMAX = "topk_softmax"
    """Top-k on the raw logits, then softmax over the k selected logits: gpt-oss ``MLPBlock`` and
    triton_kernels ``routing(sm_first=False)``. With this module's arithmetic it gives the same bits as
    SOFTMAX with renormalize=True (the max of the k selected logits is the row max)."""

    SIGMOID = "sigmoid"
    """1 / (1 + exp(-x)) per expert, top-k, optional renormalization: vLLM's ``scoring_func="sigmoid"``
    (without grouped top-k or correction bias)."""


class Order(str, enum.Enum):
    """Order of the k slots of a token in the output."""

    WEIGHT = "weight"
    """Descending weight (= descending logit), equal logits by ascending expert id: vLLM topk_softmax."""

    ID = "id"
    """Ascending expert id: triton_kernels ``topk`` re-sorts its selection this way."""


_LOGIT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


def _check_logits(router_logits) -> np.ndarray:
    if not isinstance(router_logits, np.ndarray):
        raise TypeError(f"router_logits: expected a numpy.ndarray, got {type(router_logits).__name__}")
    if router_logits.dtype not in _LOGIT_DTYPES:
        raise TypeError(f"router_logits: expected dtype float32, float16 or bfloat16, "
                        f"got {router_logits.dtype}")
    if router_logits.ndim != 2:
        raise ValueError(f"router_logits: expected shape (num_tokens, num_experts), "
                         f"got shape {router_logits.shape}")
    x = router_logits.astype(np.float32)                       # exact for all three dtypes
    bad = ~np.isfinite(x)
    if bad.any():
        t, e = np.argwhere(bad)[0]
        raise ValueError(f"router_logits: expected finite values, got {x[t, e]} at token {t}, expert {e} "
                         f"({int(bad.sum())} non-finite in total)")
    return x


def check_topk_ids(topk_ids) -> None:
    """TypeError/ValueError unless topk_ids is a 2-D int32/int64 ndarray (num_tokens, top_k)."""
    if not isinstance(topk_ids, np.ndarray):
        raise TypeError(f"topk_ids: expected a numpy.ndarray, got {type(topk_ids).__name__}")
    if topk_ids.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise TypeError(f"topk_ids: expected dtype int32 or int64, got {topk_ids.dtype}")
    if topk_ids.ndim != 2:
        raise ValueError(f"topk_ids: expected shape (num_tokens, top_k), got shape {topk_ids.shape}")


def select_topk(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Expert ids (T, k) int32 of the k largest logits per row, ties to the lower id, in
    descending-logit order. logits: (T, E) float32, finite.

    A stable sort on the negated logits is exactly "larger value first, then lower index first"
    (negation is exact and -0.0 == 0.0 compare equal, as on a GPU)."""
    order = np.argsort(-logits, axis=1, kind="stable")       # (T, E)
    return order[:, :top_k].astype(np.int32)


def _weights_float64(x: np.ndarray, ids: np.ndarray, scoring: Scoring, renormalize: bool) -> np.ndarray:
    """The routing weights (T, k) in float64 for the selected ids, before the final float32 rounding."""
    x64 = x.astype(np.float64)                                         # (T, E) exact
    if scoring is Scoring.SIGMOID:
        with np.errstate(over="ignore"):                               # exp -> inf gives exactly 0
            s = 1.0 / (1.0 + np.exp(-x64))                             # (T, E)
        sel = np.take_along_axis(s, ids, axis=1)                       # (T, k)
        if not renormalize:
            return sel
        denom = _sum_in_id_order(sel, ids)                             # (T, 1)
        if not (denom > 0).all():
            t = int(np.nonzero(~(denom[:, 0] > 0))[0][0])
            raise ValueError(f"router_logits: token {t}'s {ids.shape[1]} selected sigmoid scores all "
                             f"underflow to 0 (logits below about -745); renormalize=True cannot divide by 0")
        return sel / denom
    m = x64.max(axis=1, keepdims=True)                                 # (T, 1) exact
    e = np.exp(x64 - m)                                                # (T, E)  every e_i in (0, 1]
    sel = np.take_along_axis(e, ids, axis=1)                           # (T, k)
    if scoring is Scoring.TOPK_SOFTMAX or renormalize:
        return sel / _sum_in_id_order(sel, ids)                        # e_i / (sum of the k selected)
    return sel / _sum_left_to_right(e)                                 # e_i / (sum over all E)


def _sum_left_to_right(v: np.ndarray) -> np.ndarray:
    """Row sums (T, 1) of v (T, n) in float64, strictly v[:,0] + v[:,1] + ... (no pairwise summation)."""
    acc = np.zeros((v.shape[0], 1), np.float64)
    for j in range(v.shape[1]):
        acc = acc + v[:, j:j + 1]
    return acc


def _sum_in_id_order(sel: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row sums (T, 1) of the selected values, added in ascending expert-id order (whatever the slots' order)."""
    by_id = np.take_along_axis(sel, np.argsort(ids, axis=1, kind="stable"), axis=1)
    return _sum_left_to_right(by_id)


def route(router_logits: np.ndarray, top_k: int, *, renormalize: bool = True, scoring: str = "softmax",
          order: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """Router logits (T, E) float32/float16/bfloat16 -> (topk_weights float32 (T, k), topk_ids int32 (T, k)).

    scoring: "softmax" (vLLM), "topk_softmax" (gpt-oss; always normalized, so renormalize must stay True),
    "sigmoid". order: "weight" (descending, ties by ascending id) or "id" (ascending expert id).
    Non-finite logits (NaN, +-inf) raise ValueError: a router's output is finite, and NaN has no rank.
    """
    x = _check_logits(router_logits)
    T, E = x.shape
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool):
        raise TypeError(f"top_k: expected an int, got {type(top_k).__name__}")
    if not 1 <= top_k <= E:
        raise ValueError(f"top_k: expected 1 <= top_k <= num_experts ({E}), got {top_k}")
    check_choice(scoring, "scoring", [s.value for s in Scoring])
    check_choice(order, "order", [o.value for o in Order])
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize: expected a bool, got {type(renormalize).__name__}")
    scoring = Scoring(scoring)
    if scoring is Scoring.TOPK_SOFTMAX and not renormalize:
        raise ValueError("renormalize: scoring='topk_softmax' always sums to 1 over the k slots; "
                         "renormalize=False has no meaning there (use scoring='softmax')")

    ids = select_topk(x, int(top_k))                                   # (T, k) descending logit
    if Order(order) is Order.ID:
        ids = np.sort(ids, axis=1)                                     # (T, k) ascending id
    weights = _weights_float64(x, ids, scoring, bool(renormalize)).astype(np.float32)
    return np.ascontiguousarray(weights), np.ascontiguousarray(ids)


# ---- expert parallelism: which experts live on this rank -------------------------------------------

class Placement(str, enum.Enum):
    """How vLLM's ``determine_expert_map`` spreads E experts over ep_size ranks."""

    LINEAR = "linear"
    """Contiguous ranges; the first E % ep_size ranks own one extra expert (vLLM's default)."""

    ROUND_ROBIN = "round_robin"
    """Rank r owns experts r, r + ep_size, r + 2*ep_size, ... (vLLM ``expert_placement_strategy``)."""


def make_expert_map(global_num_experts: int, ep_size: int, ep_rank: int,
                    placement: str = "linear") -> np.ndarray:
    """int32 (global_num_experts,): global expert id -> local id on rank ``ep_rank``, -1 if elsewhere.

    Local ids count 0, 1, ... in ascending global id. vLLM returns None when ep_size == 1; this
    returns the identity map there (every expert local), which means the same thing.
    """
    for name, v in (("global_num_experts", global_num_experts), ("ep_size", ep_size), ("ep_rank", ep_rank)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if global_num_experts < 1:
        raise ValueError(f"global_num_experts: expected >= 1, got {global_num_experts}")
    if not 1 <= ep_size <= global_num_experts:
        raise ValueError(f"ep_size: expected 1 <= ep_size <= global_num_experts ({global_num_experts}), "
                         f"got {ep_size}")
    if not 0 <= ep_rank < ep_size:
        raise ValueError(f"ep_rank: expected 0 <= ep_rank < ep_size ({ep_size}), got {ep_rank}")
    check_choice(placement, "placement", [p.value for p in Placement])
    base, remainder = divmod(int(global_num_experts), int(ep_size))
    local_count = base + 1 if ep_rank < remainder else base
    expert_map = np.full(global_num_experts, -1, dtype=np.int32)
    if Placement(placement) is Placement.LINEAR:
        start = ep_rank * base + min(ep_rank, remainder)
        owned = np.arange(start, start + local_count)
    else:
        owned = np.arange(ep_rank, global_num_experts, ep_size)
    expert_map[owned] = np.arange(local_count, dtype=np.int32)
    return expert_map
