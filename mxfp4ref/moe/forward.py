"""The fused MoE forward pass, expert by expert. See spec/12-forward-and-error-bound.md.

For every token t and slot s with global expert g = topk_ids[t, s] and local expert e (expert_map[g], or
g without a map; -1 = not on this rank, contributes nothing), with gamma = topk_weights[t, s]:

    h   = W13[e] x_t + b13[e]                         (2I,)  gate_up pre-activation
    a   = act(h)                                      (I,)   gate/up split by weights.gate_up
    y   = W2[e] a + b2[e]                             (H,)   the expert's row
    out_t = sum_s gamma * y                           (H,)
with apply_router_weight_on_input=True, gamma multiplies a instead of y (triton_kernels matmul_ogs:
gammas on the first GEMM scale its fused-activation output; b2 is then NOT scaled).

Pipelines (named enum members):
  exact: float64 on the exactly dequantized weights; x as given (float32 or bfloat16 values, exact).
  bf16:  rounds where vLLM's Triton (matmul_ogs) backend rounds; see Pipeline.BF16.
Only one expert's dequantized weights are alive at a time.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .._checks import check_choice
from ..quantize import dequantize
from .activations import SWIGLU_ALPHA, SWIGLU_LIMIT, Activation, apply_activation
from .routing import check_topk_ids
from .weights import MoEWeights

BF16 = ml_dtypes.bfloat16


class Pipeline(str, enum.Enum):
    """Arithmetic of fused_moe."""

    EXACT = "exact"
    """float64 throughout on exactly dequantized weights: the ground truth (error ~ H * 2**-53 relative)."""

    BF16 = "bf16"
    """vLLM Triton backend rounding points: x -> bf16; fp32 GEMM1 accumulator (modelled as the float64
    product rounded to fp32) + fp32 bias; activation in fp32; -> bf16 intermediate; fp32 GEMM2 + fp32
    bias; * bf16(gamma) in fp32; -> bf16 per (token, expert) row; fp32 sum of a token's rows in slot
    order; -> bf16 output (triton_kernels matmul_ogs + reduce, make_routing_data's bf16 gammas)."""


@dataclass(frozen=True)
class MoEIntermediates:
    """Every stage of fused_moe per (token, slot); entries of slots with ``valid`` False are 0.

    gate_up (T, k, 2I), activation (T, k, I), rows (T, k, H): the pre-activation h, the activation
    (times gamma when the router weight is applied on input) and the expert row (times gamma otherwise),
    each in the pipeline's values (float64 for exact; float32 holding the bf16 or fp32 values for bf16).
    local_ids (T, k) int64: the local expert of each slot or -1."""

    gate_up: np.ndarray
    activation: np.ndarray
    rows: np.ndarray
    valid: np.ndarray
    local_ids: np.ndarray


def local_expert_ids(topk_ids, weights: MoEWeights, expert_map=None, global_num_experts=None) -> np.ndarray:
    """(T, k) int64 local expert of each slot, -1 where the slot has no expert on this rank.

    topk_ids: (T, k) int32/int64 global ids in [-1, G) (-1 = slot already dropped). G is
    global_num_experts, defaulting to len(expert_map) or weights.num_experts."""
    check_topk_ids(topk_ids)
    E = weights.num_experts
    if expert_map is not None:
        if not isinstance(expert_map, np.ndarray) or expert_map.dtype != np.int32 or expert_map.ndim != 1:
            got = f"{expert_map.dtype} {expert_map.shape}" if isinstance(expert_map, np.ndarray) \
                else type(expert_map).__name__
            raise TypeError(f"expert_map: expected a 1-D int32 numpy.ndarray, got {got}")
        if expert_map.size and (expert_map.min() < -1 or expert_map.max() >= E):
            raise ValueError(f"expert_map: expected local ids in [-1, {E}) (weights hold {E} experts), "
                             f"got values in [{expert_map.min()}, {expert_map.max()}]")
    G = global_num_experts
    if G is None:
        G = E if expert_map is None else expert_map.size
    if not isinstance(G, (int, np.integer)) or isinstance(G, bool) or G < 1:
        raise ValueError(f"global_num_experts: expected a positive int, got {G!r}")
    if expert_map is None and G != E:
        raise ValueError(f"global_num_experts: without expert_map it must equal weights.num_experts ({E}), "
                         f"got {G}")
    if expert_map is not None and expert_map.size != G:
        raise ValueError(f"expert_map: expected shape ({G},) (global_num_experts), got {expert_map.shape}")
    ids = topk_ids.astype(np.int64)
    if ids.size and (ids.min() < -1 or ids.max() >= G):
        bad = ids[(ids < -1) | (ids >= G)][0]
        raise ValueError(f"topk_ids: expected expert ids in [-1, {G}) (global_num_experts), got {bad}")
    if expert_map is None:
        return ids
    return np.where(ids >= 0, expert_map[np.maximum(ids, 0)].astype(np.int64), -1)


def _check_inputs(x, weights, topk_weights, topk_ids):
    if not isinstance(weights, MoEWeights):
        raise TypeError(f"weights: expected MoEWeights, got {type(weights).__name__}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in (np.dtype(np.float32), np.dtype(BF16)):
        raise TypeError(f"x: expected dtype float32 or bfloat16, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != weights.hidden_size:
        raise ValueError(f"x: expected shape (num_tokens, {weights.hidden_size}), got {x.shape}")
    if not np.isfinite(x.astype(np.float32)).all():
        raise ValueError("x: expected finite values, got NaN or inf")
    if not isinstance(topk_weights, np.ndarray) or topk_weights.dtype != np.float32:
        got = topk_weights.dtype if isinstance(topk_weights, np.ndarray) else type(topk_weights).__name__
        raise TypeError(f"topk_weights: expected a float32 numpy.ndarray, got {got}")
    if not isinstance(topk_ids, np.ndarray) or topk_weights.shape != topk_ids.shape \
            or topk_weights.shape[:1] != x.shape[:1]:
        got = topk_ids.shape if isinstance(topk_ids, np.ndarray) else type(topk_ids).__name__
        raise ValueError(f"topk_weights/topk_ids: expected equal shapes ({x.shape[0]}, top_k), "
                         f"got {topk_weights.shape} and {got}")


def _bias(b, e, n) -> np.ndarray:
    return np.zeros(n, np.float32) if b is None else b[e]


def _round_bf16(a: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (round to nearest even) and return the values as float32."""
    return a.astype(np.float32).astype(BF16).astype(np.float32)


def expert_forward(x_rows: np.ndarray, gammas: np.ndarray, weights: MoEWeights, e: int, *, activation: str,
                   on_input: bool, pipeline: Pipeline, alpha: float, limit: float | None):
    """One expert on its routed rows: x_rows (n, H), gammas (n,) -> (h (n, 2I), a (n, I), y (n, H)).

    a carries gamma when on_input, y carries gamma otherwise (so sum of y over slots is the output)."""
    layout = weights.gate_up.value
    I2, H = 2 * weights.intermediate_size, weights.hidden_size
    w13 = dequantize(weights.w13_weight[e], weights.w13_weight_scale[e], dtype=np.float64)  # (2I, H) exact
    b13 = _bias(weights.w13_bias, e, I2).astype(np.float64)                 # (2I,)
    if pipeline is Pipeline.EXACT:
        g = gammas.astype(np.float64)[:, None]                             # (n, 1)
        h = x_rows.astype(np.float64) @ w13.T + b13                         # (n, 2I)
        del w13
        a = apply_activation(h, activation, layout, alpha=alpha, limit=limit)   # (n, I)
        if on_input:
            a = a * g
        w2 = dequantize(weights.w2_weight[e], weights.w2_weight_scale[e], dtype=np.float64)  # (H, I)
        y = a @ w2.T + _bias(weights.w2_bias, e, H).astype(np.float64)      # (n, H)
        return h, a, (y if on_input else y * g)
    # --- bf16 pipeline: values float32, rounded where the Triton backend rounds ---
    g = _round_bf16(gammas)[:, None]                                        # (n, 1) bf16 gammas
    xb = _round_bf16(x_rows).astype(np.float64)                             # (n, H)
    acc1 = (xb @ w13.T).astype(np.float32)                                  # fp32 accumulator
    del w13
    h = acc1 + _bias(weights.w13_bias, e, I2)                               # fp32 + fp32 bias
    a = apply_activation(h, activation, layout, alpha=alpha, limit=limit)   # fp32 epilogue
    if on_input:
        a = a * g
    a = _round_bf16(a)                                                      # bf16 intermediate
    w2 = dequantize(weights.w2_weight[e], weights.w2_weight_scale[e], dtype=np.float64)
    y = (a.astype(np.float64) @ w2.T).astype(np.float32) + _bias(weights.w2_bias, e, H)
    if not on_input:
        y = y * g
    return h, a, _round_bf16(y)                                             # bf16 row


def fused_moe(x: np.ndarray, weights: MoEWeights, topk_weights: np.ndarray, topk_ids: np.ndarray, *,
              activation: str = "swigluoai", expert_map: np.ndarray | None = None,
              apply_router_weight_on_input: bool = False, global_num_experts: int | None = None,
              pipeline: str = "exact", alpha: float = SWIGLU_ALPHA, limit: float | None = SWIGLU_LIMIT,
              return_intermediates: bool = False):
    """The MoE layer's output (T, H): float64 for pipeline="exact", bfloat16 for "bf16".

    x (T, H) float32 or bfloat16; topk_weights (T, k) float32; topk_ids (T, k) int32/int64 global ids
    (-1 = dropped slot). alpha/limit are swigluoai's (limit=None: no clamps). With
    return_intermediates=True returns (out, MoEIntermediates)."""
    _check_inputs(x, weights, topk_weights, topk_ids)
    check_choice(activation, "activation", [a.value for a in Activation])
    check_choice(pipeline, "pipeline", [p.value for p in Pipeline])
    pipeline = Pipeline(pipeline)
    local = local_expert_ids(topk_ids, weights, expert_map, global_num_experts)   # (T, k)
    T, k = local.shape
    H, I = weights.hidden_size, weights.intermediate_size
    dt = np.float64 if pipeline is Pipeline.EXACT else np.float32
    rows = np.zeros((T, k, H), dt)                                          # per (token, slot) rows
    inter = None
    if return_intermediates:
        inter = (np.zeros((T, k, 2 * I), dt), np.zeros((T, k, I), dt))
    for e in np.unique(local[local >= 0]):                                  # ascending local expert
        tok, slot = np.nonzero(local == e)                                  # its routed (token, slot)s
        h, a, y = expert_forward(x[tok], topk_weights[tok, slot], weights, int(e), activation=activation,
                                 on_input=bool(apply_router_weight_on_input), pipeline=pipeline,
                                 alpha=alpha, limit=limit)
        rows[tok, slot] = y
        if inter is not None:
            inter[0][tok, slot], inter[1][tok, slot] = h, a
    if pipeline is Pipeline.EXACT:
        out = rows.sum(axis=1)                                              # (T, H) float64
    else:
        acc = np.zeros((T, H), np.float32)
        for s in range(k):                                                  # fp32, slot order
            acc = acc + rows[:, s]
        out = acc.astype(BF16)
    if not return_intermediates:
        return out
    return out, MoEIntermediates(inter[0], inter[1], rows, local >= 0, local)
