"""Test vectors of the MoE layer: padding, routing with ties, alignment, a tiny layer end to end.
Encoding conventions: see mxfp4ref/golden/vectors.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .vectors import BF16, _raw_normal, floats, hexbytes, ints


def padding_vectors() -> dict:
    """padded_sizes for every backend on gpt-oss shapes (per TP rank) and odd sizes; one pad_weights."""
    from ..moe.padding import Mxfp4Backend, pad_weights, padded_sizes
    from ..moe.weights import MoEWeights

    sizes = [(2880, 2880), (2880, 1440), (2880, 736), (2880, 672), (2880, 384), (2880, 192), (96, 160), (32, 32)]
    table = []
    for b in Mxfp4Backend:
        for h, i in sizes:
            hp, ip = padded_sizes(b.value, h, i)
            table.append({"backend": b.value, "hidden": h, "intermediate": i,
                          "padded_hidden": hp, "padded_intermediate": ip})
    raw = np.random.PCG64(np.random.SeedSequence([0, 5])).random_raw(64 * 16 + 32 * 16)
    byte = (raw & np.uint64(0xFF)).astype(np.uint8)
    w = MoEWeights(w13_weight=byte[:1024].reshape(1, 64, 16),
                   w13_weight_scale=np.full((1, 64, 1), 127, np.uint8),
                   w2_weight=byte[1024:].reshape(1, 32, 16),
                   w2_weight_scale=np.full((1, 32, 1), 126, np.uint8),
                   w13_bias=(np.arange(64, dtype=np.float32).reshape(1, 64) - 32) / 8,
                   w2_bias=(np.arange(32, dtype=np.float32).reshape(1, 32) - 16) / 4)
    p = pad_weights(w, 64, 64)
    example = {"hidden": 32, "intermediate": 32, "gate_up": "interleaved", "padded_hidden": 64,
               "padded_intermediate": 64}
    for name in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale"):
        example[name] = {"shape": list(getattr(w, name).shape), "hex": hexbytes(getattr(w, name)),
                         "padded_shape": list(getattr(p, name).shape), "padded_hex": hexbytes(getattr(p, name))}
    for name in ("w13_bias", "w2_bias"):
        example[name] = {"value": floats(getattr(w, name)), "padded": floats(getattr(p, name))}
    return {"description": "vLLM 0.33.0 backend padding: (H, I per rank) -> padded sizes; padded bytes 0",
            "padded_sizes": table, "pad_weights_example": example}


def routing_logits() -> tuple[list[str], np.ndarray]:
    """(T, 8) bf16 logit rows, many with ties (ties go to the lower expert id)."""
    rows = {
        "distinct": [0.5, -1.0, 2.0, 0.25, 1.5, -3.0, 0.0, 1.0],
        "all equal": [1.0] * 8,
        "tie for first": [3.0, 1.0, 3.0, 0.0, -1.0, 2.0, 2.0, 0.5],
        "tie at the k-th place": [4.0, 2.0, 1.0, 2.0, 2.0, 0.0, -1.0, 2.0],
        "all zero": [0.0] * 8,
        "negative": [-5.0, -4.0, -4.0, -6.0, -7.0, -4.0, -8.0, -5.0],
        "large spread": [30.0, -30.0, 0.0, 29.0, 30.0, -1.0, 1.0, 28.0],
        "bf16 near-ties": [1.0, 1.0078125, 0.9921875, 1.0, 1.0078125, 0.5, 0.5, 2.0],
    }
    z = _raw_normal(13, 4 * 8).reshape(4, 8) * 2
    for i in range(4):
        rows[f"random {i}"] = z[i]
    names = list(rows)
    return names, np.array([rows[n] for n in names], np.float32).astype(BF16)


def routing_vectors() -> dict:
    from ..moe.routing import Order, Scoring, route

    names, logits = routing_logits()
    cases = []
    for scoring in Scoring:
        for renorm in (True, False):
            if scoring is Scoring.TOPK_SOFTMAX and not renorm:
                continue
            for order in Order:
                for k in (1, 2, 4):
                    w, ids = route(logits, k, renormalize=renorm, scoring=scoring.value, order=order.value)
                    cases.append({"scoring": scoring.value, "renormalize": renorm, "order": order.value,
                                  "top_k": k, "topk_ids": ints(ids), "topk_weights": floats(w)})
    return {"description": "route(router_logits bf16 (T, 8), top_k): selection on the logits, ties to the "
                           "lower expert id; weights float32",
            "rows": names, "router_logits_bf16_bits": [f"0x{int(b):04x}" for b in logits.view(np.uint16).ravel()],
            "router_logits": floats(logits.astype(np.float32)), "cases": cases}


def align_vectors() -> dict:
    from ..moe.align import align_block_size

    topk = {
        "4 tokens top-2": np.array([[0, 3], [3, 1], [2, 0], [3, 2]], np.int32),
        "one expert only": np.array([[1], [1], [1], [1], [1]], np.int32),
        "7 tokens top-4 of 8": (np.random.PCG64(np.random.SeedSequence([0, 9])).random_raw(28) % np.uint64(8))
        .astype(np.int32).reshape(7, 4),
    }
    cases = []
    for name, ids in topk.items():
        for bs in (1, 4, 16):
            for ep in (None, (2, 1)):
                emap = None
                if ep is not None:
                    from ..moe.routing import make_expert_map

                    emap = make_expert_map(8, *ep)
                s, e, n = align_block_size(ids, bs, 8, emap)
                cases.append({"name": name, "topk_ids": ints(ids), "block_size": bs, "num_experts": 8,
                              "expert_map": None if emap is None else ints(emap),
                              "sorted_token_ids": ints(s), "expert_ids": ints(e),
                              "num_tokens_post_padded": int(n[0])})
    return {"description": "align_block_size (vLLM moe_align_block_size): sentinel = numel", "cases": cases}


def moe_tiny(out: Path) -> None:
    """A tiny MoE layer end to end: a golden bundle of the ``tiny`` config (8 tokens, routing by id)."""
    from .bundle import write_bundle
    from .generate import GoldenOptions, make_golden

    specs, meta = make_golden(GoldenOptions(config="tiny", tokens=8, seed=0, padding="triton",
                                            routing_order="id", align_block_size=4))
    write_bundle(out, specs, meta)
