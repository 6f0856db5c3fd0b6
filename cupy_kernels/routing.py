"""GPU MoE routing with the spec's name and signature: route (kernels/route.cu).

``route(router_logits, top_k, *, renormalize=True, scoring="softmax", order="weight")`` returns
(topk_weights float32 (T, k), topk_ids int32 (T, k)) as CuPy arrays, equal bit for bit to
:func:`mxfp4ref.moe.routing.route` (selection on exact logits, ties to the lower id; weights in
float64 in the spec's order of operations, rounded once; see kernels/route.cu for the one caveat,
exp). router_logits: GPU float32 / float16 / bfloat16 (uint16 bits with dtype='bfloat16').
``route_and_align`` adds align_block_size of the ids (align's count phase fused into routing).
GPU limits: num_experts <= 256, top_k <= 32 (ValueError beyond). Kernels: 8 lanes per token for
top_k <= 8 (not softmax without renormalization) above LATENCY_MAX_TOKENS tokens (or when align's
counts are fused in), else (or ``naive=True``) one warp per token. Both give the same bits; the
one-warp kernel has the shorter latency for few tokens (its whole selection is k warp reductions,
where the 8-lane kernel first walks 16 logits per lane one after the other at 128 experts).
Non-finite logits: ValueError, as in the spec (the check costs one device-to-host read; ``check=False``
skips it).
"""
from __future__ import annotations

import numpy as np

from ._args import float_input, grid_for
from ._loader import cupy, get_kernel

KERNEL_FILE = "route.cu"
_PL = (1, 2, 4, 8)
_K = (1, 2, 4, 8)
_LEAN_K = 8                 # mx_route_lean's K (route.cu's MXK_LEAN instantiations): top_k up to it
NAMES = (tuple(f"mx_route<{i}, {p}>" for i in range(3) for p in _PL)
         + tuple(f"mx_route_fast<{i}, {kk}>" for i in range(3) for kk in _K)
         + tuple(f"mx_route_lean<{i}, {p}, {_LEAN_K}>" for i in range(3) for p in _PL))
_IN = {"float32": 0, "float16": 1, "bfloat16": 2}
_SCORING = {"softmax": 0, "topk_softmax": 1, "sigmoid": 2}
MAX_EXPERTS = 32 * _PL[-1]
MAX_TOP_K = 32
THREADS = 256
TOKENS_PER_ROW = 128            # fused align counts: tokens per counts row (a 1024-thread block's pass)
# Up to this many tokens (and no fused counts) launch() takes the one-warp kernel: same bits, shorter
# latency. moe_forward in a CUDA graph, same run, 8-lanes vs one-warp (us): H100, 120b T = 1 / 2 / 4 /
# 16 / 64 / 256: 34.6 / 33.4, 57.3 / 55.7, 101.4 / 99.0, 264.1 / 262.3, 589.5 / 587.0, 697.0 / 694.4;
# 20b 33.8 / 32.9 ... 311.9 / 310.7; H200, T = 1: 120b 30.2 / 28.6, 20b 29.1 / 28.6 (cupy_kernels/BENCHMARKS.md v15)
LATENCY_MAX_TOKENS = 256


def route(router_logits, top_k: int, *, renormalize: bool = True, scoring: str = "softmax",
          order: str = "weight", dtype=None, check: bool = True, naive: bool = False):
    """(topk_weights, topk_ids) of mxfp4ref.moe.routing.route, computed on the GPU.
    naive=True: always the one-warp-per-token reference kernel (else the 8-lanes-per-token kernel
    wherever it applies: more than LATENCY_MAX_TOKENS tokens, top_k <= 8 and not softmax without
    renormalization)."""
    return _route(router_logits, top_k, renormalize, scoring, order, dtype, check, naive, False)[:2]


def route_and_align(router_logits, top_k: int, block_size: int, *, renormalize: bool = True,
                    scoring: str = "softmax", order: str = "weight", expert_map=None,
                    pad_sorted_ids: bool = False, dtype=None, check: bool = True):
    """route, then align_block_size of its ids over num_experts = router_logits.shape[1]:
    (topk_weights, topk_ids, sorted_token_ids, expert_ids, num_tokens_post_padded), each equal to the
    spec's. Where the 8-lanes routing kernel applies, it also counts the ids per expert (align's
    first kernel), so the pair is two kernels instead of three."""
    from .align import align_block_size
    w, i, counts, row_ids = _route(router_logits, top_k, renormalize, scoring, order, dtype, check, False, True)
    aligned = align_block_size(i, block_size, int(router_logits.shape[1]), expert_map,
                               pad_sorted_ids=pad_sorted_ids, check=check,
                               _counted=None if counts is None else (counts, row_ids))
    return (w, i) + tuple(aligned)


def _route(router_logits, top_k, renormalize, scoring, order, dtype, check, naive, want_counts):
    """route's checks and launch; want_counts: also the per-row expert counts where the fast kernel
    applies -> (weights, ids, counts or None, ids per counts row)."""
    from mxfp4ref._checks import check_choice
    cp = cupy()
    x, in_dtype = float_input(router_logits, "router_logits", dtype)
    if x.ndim != 2:
        raise ValueError(f"router_logits: expected shape (num_tokens, num_experts), got shape {x.shape}")
    T, E = x.shape
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool):
        raise TypeError(f"top_k: expected an int, got {type(top_k).__name__}")
    if not 1 <= top_k <= E:
        raise ValueError(f"top_k: expected 1 <= top_k <= num_experts ({E}), got {top_k}")
    check_choice(scoring, "scoring", list(_SCORING))
    check_choice(order, "order", ["weight", "id"])
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize: expected a bool, got {type(renormalize).__name__}")
    if scoring == "topk_softmax" and not renormalize:
        raise ValueError("renormalize: scoring='topk_softmax' always sums to 1 over the k slots; "
                         "renormalize=False has no meaning there (use scoring='softmax')")
    if E > MAX_EXPERTS:
        raise ValueError(f"router_logits: the GPU kernel supports num_experts <= {MAX_EXPERTS}, got {E}")
    if top_k > MAX_TOP_K:
        raise ValueError(f"top_k: the GPU kernel supports top_k <= {MAX_TOP_K}, got {top_k}")
    with x.device:
        weights = cp.empty((T, top_k), cp.float32)
        ids = cp.empty((T, top_k), cp.int32)
        bad = cp.zeros((1,), cp.int32)
        counts = None
        if want_counts and T > 0 and fast_applies(int(top_k), _SCORING[scoring], bool(renormalize)):
            counts = cp.empty((-(-T // TOKENS_PER_ROW), E), cp.int32)
        launch(x, in_dtype, int(top_k), _SCORING[scoring], bool(renormalize), order == "id",
               weights, ids, bad, naive=bool(naive), counts=counts)
        flag = int(bad.get()[0]) if check else 0
        if flag & 1:
            raise ValueError("router_logits: expected finite values, got NaN or +-inf")
        if flag & 2:
            raise ValueError(f"router_logits: some token's {top_k} selected sigmoid scores all underflow to 0 "
                             f"(logits below about -745); renormalize=True cannot divide by 0")
    return weights, ids, counts, TOKENS_PER_ROW * int(top_k)


def fast_applies(top_k: int, scoring: int, renormalize: bool) -> bool:
    """Whether the 8-lanes-per-token kernel computes this routing."""
    return top_k <= _K[-1] and (scoring != _SCORING["softmax"] or renormalize)


def lean_applies(T: int, top_k: int, scoring: int, renormalize: bool, order_id: bool) -> bool:
    """Whether launch(..., lean=True) runs mx_route_lean: softmax with renormalization in selection order,
    top_k <= 8, where the one-warp kernel runs (T <= LATENCY_MAX_TOKENS)."""
    return (scoring == _SCORING["softmax"] and renormalize and not order_id and top_k <= _LEAN_K
            and T <= LATENCY_MAX_TOKENS)


def launch(x, in_dtype: str, top_k: int, scoring: int, renormalize: bool, order_id: bool,
           weights, ids, bad, naive: bool = False, counts=None, lean: bool = False) -> None:
    """Enqueue the routing kernel (no checks, no synchronization: for benchmarks and graphs). The
    8-lanes kernel where it applies and T > LATENCY_MAX_TOKENS or counts are wanted, else one warp per token.
    counts: int32 (ceil(T / TOKENS_PER_ROW), E): also write each row of tokens' expert histogram (the
    fast kernel only; align.launch(..., counted=TOKENS_PER_ROW * top_k) then skips its count kernel).
    lean=True (moe_forward): where lean_applies, mx_route_lean: the same bits, without the non-finite check
    (``bad`` is not written)."""
    T, E = x.shape
    if T == 0:
        return
    if not naive and fast_applies(top_k, scoring, renormalize) and (T > LATENCY_MAX_TOKENS or counts is not None):
        kk = next(v for v in _K if v >= top_k)
        k = get_kernel(KERNEL_FILE, f"mx_route_fast<{_IN[in_dtype]}, {kk}>", NAMES)
        threads = THREADS if counts is None else 32 * TOKENS_PER_ROW // 4
        tokens = threads // 32 * 4          # 8 lanes per token
        k((grid_for(T, tokens, cap=1 << 16),), (threads,),
          (x, np.int32(T), np.int32(E), np.int32(top_k), np.int32(scoring), np.int32(renormalize),
           np.int32(order_id), weights, ids, bad, counts if counts is not None else np.uintp(0)),
          shared_mem=0 if counts is None else E * 4)
        return
    if counts is not None:
        raise ValueError("counts: only the 8-lanes-per-token kernel writes them (top_k <= 8, not softmax "
                         "without renormalization, naive=False)")
    pl = next(p for p in _PL if 32 * p >= E)
    if lean and lean_applies(T, top_k, scoring, renormalize, order_id):     # one warp per token, no loop
        name = f"mx_route_lean<{_IN[in_dtype]}, {pl}, {_LEAN_K}>"
        args = (x, np.int32(T), np.int32(E), np.int32(top_k), weights, ids)
    else:
        name, args = f"mx_route<{_IN[in_dtype]}, {pl}>", (x, np.int32(T), np.int32(E), np.int32(top_k),
                                                          np.int32(scoring), np.int32(renormalize),
                                                          np.int32(order_id), weights, ids, bad)
    k = get_kernel(KERNEL_FILE, name, NAMES)
    k((grid_for(T, THREADS // 32, cap=1 << 16),), (THREADS,), args)
