"""``mxfp4ref golden``: write a golden bundle for one MXFP4 MoE layer (see spec/20-golden-and-check.md)."""
from __future__ import annotations

import argparse
import sys
import time

HELP = "write a golden bundle (inputs, weights, routing, intermediates, outputs, error bound) for one MoE layer"


def _choices(module: str, attr: str) -> list[str] | None:
    """Names from another module, or None (any string accepted) when it cannot be imported."""
    import importlib

    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    return sorted(obj() if callable(obj) else obj)


def _padding_names() -> list[str]:
    from ..moe.padding import ALIASES, Mxfp4Backend

    return [m.value for m in Mxfp4Backend] + sorted(ALIASES)


def register(subparsers) -> None:
    from .generate import GoldenOptions

    d = GoldenOptions()
    p = subparsers.add_parser("golden", help=HELP, description=HELP + ". Deterministic: the same flags give "
                              "the same bytes on every machine.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=d.config, choices=_choices("mxfp4ref.moe.configs", "CONFIGS"),
                   help="model configuration of the layer")
    p.add_argument("--tokens", type=int, default=d.tokens, help="number of tokens T")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the random weights and inputs")
    p.add_argument("--preset", default=d.preset, choices=_choices("mxfp4ref.presets", "PRESETS"),
                   help="quantization preset of the random weights and of the quantizer check")
    p.add_argument("--padding", default=None, metavar="BACKEND", choices=_padding_names(),
                   help="pad the weights as this vLLM MXFP4 backend does (e.g. triton, marlin, "
                        "flashinfer-trtllm-bf16; see spec/10); None = no padding")
    p.add_argument("--routing-order", default=d.routing_order, choices=["weight", "id"],
                   help="order of a token's k slots: descending weight (vLLM fused_topk) or ascending "
                        "expert id (triton_kernels)")
    p.add_argument("--align-block-size", type=int, default=d.align_block_size,
                   help="block size of the moe_align_block_size outputs")
    p.add_argument("--bound", default=d.bound, choices=["worst-case", "probabilistic"],
                   help="error-bound model of the output check: rigorous for any summation order, or "
                        "Higham-Mary probabilistic (lam=7; ~10x tighter at gpt-oss shapes, assumes unbiased "
                        "rounding)")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="read the layer from a gpt-oss safetensors checkpoint instead of random weights")
    p.add_argument("--layer", type=int, default=None, help="layer index in --checkpoint")
    p.add_argument("--ep-size", type=int, default=d.ep_size, help="expert-parallel ranks")
    p.add_argument("--ep-rank", type=int, default=d.ep_rank, help="this rank's index in expert parallelism")
    p.add_argument("--tp-size", type=int, default=d.tp_size, help="tensor-parallel ranks")
    p.add_argument("--tp-rank", type=int, default=d.tp_rank, help="this rank's index in tensor parallelism")
    p.add_argument("--layout", default=None, metavar="BACKEND", choices=_choices("mxfp4ref.layouts", "BACKENDS"),
                   help="also write the weights as this kernel backend's buffers (mxfp4ref.layouts: "
                        f"{', '.join(_choices('mxfp4ref.layouts', 'BACKENDS') or [])}); None = no layout")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory; None = ./golden-CONFIG")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from .bundle import write_bundle
    from .generate import GoldenOptionError, GoldenOptions, make_golden
    from .progress import Progress

    opts = GoldenOptions(config=args.config, tokens=args.tokens, seed=args.seed, preset=args.preset,
                         padding=args.padding, routing_order=args.routing_order,
                         align_block_size=args.align_block_size, checkpoint=args.checkpoint, layer=args.layer,
                         ep_size=args.ep_size, ep_rank=args.ep_rank, tp_size=args.tp_size, tp_rank=args.tp_rank,
                         layout=args.layout, bound=args.bound)
    out = args.out or f"golden-{opts.config}"
    progress = Progress(quiet=args.quiet)
    t0 = time.perf_counter()
    try:
        specs, meta = make_golden(opts, progress)
    except GoldenOptionError as e:
        print(f"mxfp4ref golden: error: {e}", file=sys.stderr)
        return 2
    progress.stage("write bundle", len({s.file for s in specs}) + 1)
    done = [0]

    def tick(_name):
        progress.update(done[0])
        done[0] += 1

    write_bundle(out, specs, meta, progress=tick)
    progress.update(done[0] + 1)
    total = sum(s.data.nbytes for s in specs)
    print(f"wrote {out}/ ({len(specs)} tensors, {total / 2**20:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
    print(f"check a kernel with: mxfp4ref check {out} CANDIDATE.safetensors")
    return 0
