"""``make_golden``: compute every tensor of a golden bundle for one MoE layer.

The recipe, in order (each step is the spec function named; see spec/20-golden-and-check.md):

1. weights   ``random_moe_weights(E, H, I, seed=seed, preset=preset)`` or a checkpoint layer
             (``--checkpoint DIR --layer L``); then TP shard (``shard_tensor_parallel``), EP slice
             (``make_expert_map``), backend padding (``padded_sizes`` + ``pad_weights``), in vLLM's order.
2. inputs    hidden states (T, H) bf16 and router logits (T, E) bf16 from PCG64 raw words of
             SeedSequence([seed, 1]) with integer-only arithmetic (the same bytes on every machine).
3. routing   ``route`` -> topk_weights, topk_ids; ``align_block_size`` -> the moe_align_block_size triple.
4. forward   ``fused_moe(pipeline="exact")`` (float64 ground truth) and ``fused_moe(pipeline="bf16")``
             (the Triton backend's rounding points), each stage's intermediates, ``error_bound``.
5. quantizer the hidden states quantized along H with the preset (``packed``, ``scales``).
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .bundle import TensorSpec
from .progress import Progress, ticking

BF16 = ml_dtypes.bfloat16
# error_bound's KernelModel per --bound: lam=None is the rigorous worst case; lam=7 the probabilistic
# bound of Higham & Mary (each sum fails with probability <= 2*exp(-49/2) ~ 5e-11 for a kernel whose
# rounding errors are unbiased), about 10x tighter at gpt-oss shapes. See spec/20 and spec/12.
BOUND_MODELS = {"worst-case": None, "probabilistic": 7.0}


class GoldenOptionError(ValueError):
    """An option (named as its command-line flag) that cannot work; the CLI exits 2 with the message."""


@dataclass(frozen=True)
class GoldenOptions:
    """Everything that determines a bundle's bytes (the manifest's ``arguments``)."""

    config: str = "gpt-oss-20b"
    tokens: int = 16
    seed: int = 0
    preset: str = "ocp"
    padding: str | None = None          # a vLLM MXFP4 backend name, or None for no padding
    routing_order: str = "weight"       # "weight" (vLLM fused_topk) or "id" (triton_kernels)
    align_block_size: int = 16
    checkpoint: str | None = None
    layer: int | None = None
    ep_size: int = 1
    ep_rank: int = 0
    tp_size: int = 1
    tp_rank: int = 0
    layout: str | None = None           # a mxfp4ref.layouts backend: also write the kernel buffers
    bound: str = "worst-case"           # error_bound model: "worst-case" (rigorous) or "probabilistic"

    def validate(self) -> None:
        """ValueError naming the option (as its command-line flag) for an impossible combination."""
        from ..moe.configs import CONFIGS

        if self.config not in CONFIGS:
            raise GoldenOptionError(f"--config: unknown value {self.config!r}; expected one of {sorted(CONFIGS)}")
        for flag, v, lo in (("--tokens", self.tokens, 1), ("--seed", self.seed, 0),
                            ("--ep-size", self.ep_size, 1), ("--tp-size", self.tp_size, 1),
                            ("--align-block-size", self.align_block_size, 1)):
            if not isinstance(v, int) or v < lo:
                raise GoldenOptionError(f"{flag}: expected an int >= {lo}, got {v!r}")
        if not 0 <= self.ep_rank < self.ep_size:
            raise GoldenOptionError(f"--ep-rank: expected 0 <= rank < --ep-size ({self.ep_size}), got {self.ep_rank}")
        if not 0 <= self.tp_rank < self.tp_size:
            raise GoldenOptionError(f"--tp-rank: expected 0 <= rank < --tp-size ({self.tp_size}), got {self.tp_rank}")
        if (self.checkpoint is None) != (self.layer is None):
            raise GoldenOptionError("--checkpoint and --layer: give both or neither")
        if self.bound not in BOUND_MODELS:
            raise GoldenOptionError(f"--bound: expected one of {sorted(BOUND_MODELS)}, got {self.bound!r}")
        if self.routing_order not in ("weight", "id"):
            raise GoldenOptionError(f"--routing-order: expected 'weight' or 'id', got {self.routing_order!r}")


def random_inputs(seed: int, tokens: int, hidden: int, experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states (T, H) bf16 with unit variance and router logits (T, E) bf16 with std 2.

    Integer-only draws (``unit_normalish`` of raw PCG64 words), one float64 multiply, one rounding
    to bf16: identical bytes on every machine and NumPy version that keeps PCG64's stream."""
    from ..moe.random_weights import unit_normalish

    bg = np.random.PCG64(np.random.SeedSequence([seed, 1]))
    x = unit_normalish(bg.random_raw(tokens * hidden)).reshape(tokens, hidden).astype(BF16)
    logits = (2.0 * unit_normalish(bg.random_raw(tokens * experts))).reshape(tokens, experts).astype(BF16)
    return x, logits


def load_weights(opts: GoldenOptions, cfg, progress: Progress):
    """The full (unsharded, unpadded) layer: from a checkpoint or random."""
    if opts.checkpoint is not None:
        from ..moe import checkpoint

        with ticking(progress, f"read layer {opts.layer}"):
            try:
                return checkpoint.read_checkpoint(opts.checkpoint, opts.layer, gate_up=cfg.gate_up)
            except (ValueError, TypeError, OSError) as e:
                raise GoldenOptionError(f"--checkpoint {opts.checkpoint} --layer {opts.layer}: {e}") from None
    from .fast_weights import random_weights_with_progress    # = random_moe_weights, in parallel

    E, H, I = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
    return random_weights_with_progress(E, H, I, seed=opts.seed, bias=cfg.has_bias, preset=opts.preset,
                                        gate_up=cfg.gate_up, progress=progress)


def shard_and_pad(full, opts: GoldenOptions, cfg):
    """vLLM's order: TP slice of the intermediate channels, EP slice of the experts, backend padding.

    Returns (weights as the rank's kernel sees them, expert_map or None, padded hidden size)."""
    from ..moe.padding import pad_weights, padded_sizes
    from ..moe.routing import make_expert_map
    from ..moe.sharding import shard_expert_parallel, shard_tensor_parallel

    w = full
    if opts.tp_size > 1:
        w = shard_tensor_parallel(w, opts.tp_size, opts.tp_rank)
    expert_map = None
    if opts.ep_size > 1:
        expert_map = make_expert_map(cfg.num_experts, opts.ep_size, opts.ep_rank)
        w = shard_expert_parallel(w, expert_map)
    hidden = w.hidden_size
    if opts.padding is not None:
        hidden, inter = padded_sizes(opts.padding, w.hidden_size, w.intermediate_size)
        w = pad_weights(w, hidden, inter)
    return w, expert_map, hidden


def _spec(name, data, file, check="exact", **kw) -> TensorSpec:
    return TensorSpec(name, np.ascontiguousarray(data), file, check=check, **kw)


def make_golden(opts: GoldenOptions, progress: Progress | None = None) -> tuple[list[TensorSpec], dict]:
    """All tensors of the bundle (as TensorSpecs) and the manifest's top-level fields."""
    from .. import __version__, quantize
    from ..moe.align import align_block_size
    from ..moe.configs import get_config
    from ..moe.error_bound import KernelModel, error_bound
    from ..moe.forward import fused_moe
    from ..moe.padding import pad_hidden_states
    from ..moe.routing import route
    from .parallel import run_jobs

    opts.validate()
    progress = progress or Progress(quiet=True)
    cfg = get_config(opts.config)
    E, H, K, T = cfg.num_experts, cfg.hidden_size, cfg.top_k, opts.tokens

    full = load_weights(opts, cfg, progress)
    if (full.num_experts, full.hidden_size) != (E, H):
        raise GoldenOptionError(f"--checkpoint: layer {opts.layer} has E={full.num_experts}, "
                                f"H={full.hidden_size}; --config {opts.config} says E={E}, H={H}")
    w, expert_map, hidden_p = shard_and_pad(full, opts, cfg)
    layout = []
    if opts.layout is not None:                          # first, so a bad --layout fails fast
        with ticking(progress, f"layout {opts.layout}"):
            try:
                layout = layout_specs(w, opts.layout)
            except ValueError as e:
                raise GoldenOptionError(f"--layout {opts.layout}: {e}") from None
    x, logits = random_inputs(opts.seed, T, H, E)
    xp = pad_hidden_states(x, hidden_p)

    with ticking(progress, "routing + alignment"):
        topk_weights, topk_ids = route(logits, K, renormalize=cfg.renormalize, scoring=cfg.scoring,
                                       order=opts.routing_order)
        sorted_ids, block_experts, n_post = align_block_size(topk_ids, opts.align_block_size, E, expert_map)

    common = dict(activation=cfg.activation, expert_map=expert_map, global_num_experts=E,
                  alpha=cfg.swiglu_alpha, limit=cfg.swiglu_limit)
    args = (xp, w, topk_weights, topk_ids)
    res = run_jobs({"exact": (fused_moe, args, dict(common, pipeline="exact", return_intermediates=True)),
                    "bf16": (fused_moe, args, dict(common, pipeline="bf16", return_intermediates=True)),
                    "bound": (error_bound, args, dict(common, model=KernelModel(lam=BOUND_MODELS[opts.bound])))
                    },
                   progress, "forward: exact, bf16, bound")
    (out_exact, inter_exact), (out_bf16, inter_bf16), bound = res["exact"], res["bf16"], res["bound"]
    with ticking(progress, "quantizer (hidden states)"):
        q = quantize(x.astype(np.float32), axis=-1, preset=opts.preset)

    out_exact, out_bf16, bound = out_exact[:, :H], out_bf16[:, :H], bound[:, :H]     # unpad (vLLM slices)
    I2 = w.w13_weight.shape[1]
    specs = [
        _spec("hidden_states", x, "inputs.safetensors", description="(T, H) bf16 layer input"),
        _spec("router_logits", logits, "inputs.safetensors", description="(T, E) bf16 router output"),
    ]
    if hidden_p != H:
        specs.append(_spec("hidden_states_padded", xp, "inputs.safetensors",
                           description=f"(T, {hidden_p}) bf16 input zero-padded for --padding {opts.padding}"))
    for name, enc, what in (("w13_weight", "fp4x2", f"(E, {I2}, {hidden_p // 2}) gate/up FP4 pairs"),
                            ("w13_weight_scale", "e8m0", f"(E, {I2}, {hidden_p // 32}) E8M0 scales"),
                            ("w2_weight", "fp4x2", "(E, H, I/2) down-projection FP4 pairs"),
                            ("w2_weight_scale", "e8m0", "(E, H, I/32) E8M0 scales"),
                            ("w13_bias", None, "(E, 2I) float32"), ("w2_bias", None, "(E, H) float32")):
        a = getattr(w, name)
        if a is not None:
            specs.append(_spec(name, a, "weights.safetensors", encoding=enc,
                               description=f"vLLM parameter {what}, gate_up={w.gate_up.value}"))
    if expert_map is not None:
        specs.append(_spec("expert_map", expert_map, "routing.safetensors",
                           description="(E,) int32 global -> local expert, -1 elsewhere"))
    specs += [
        _spec("topk_weights", topk_weights, "routing.safetensors", description="(T, k) float32"),
        _spec("topk_ids", topk_ids, "routing.safetensors", description=f"(T, k) int32, order={opts.routing_order}"),
        _spec("sorted_token_ids", sorted_ids, "routing.safetensors",
              description=f"moe_align_block_size, block_size={opts.align_block_size}, sentinel T*k"),
        _spec("expert_ids", block_experts, "routing.safetensors", description="expert of each block"),
        _spec("num_tokens_post_padded", n_post, "routing.safetensors", description="(1,) int32"),
    ]
    for pipe, inter in (("exact", inter_exact), ("bf16", inter_bf16)):
        for stage, what in (("gate_up", "(T, k, 2I) pre-activation h = W13 x + b13"),
                            ("activation", "(T, k, I) activation output"),
                            ("rows", "(T, k, H) expert rows times the routing weight")):
            a = getattr(inter, stage)
            if stage == "rows":
                a = a[..., :H]
            specs.append(_spec(f"{pipe}.{stage}", a, "intermediates.safetensors", check="none",
                               description=f"{what}, {pipe} pipeline ({a.dtype})"))
    specs += [
        _spec("output", out_bf16, "outputs.safetensors", check="bounded", reference="output_exact",
              bound="output_bound", description="(T, H) bf16 pipeline output: what a kernel returns"),
        _spec("output_exact", out_exact, "outputs.safetensors", check="none",
              description="(T, H) float64 exact pipeline output (the reference of the bounded check)"),
        _spec("output_bound", bound, "outputs.safetensors", check="none",
              description=f"(T, H) float64 per-element bound on |kernel - exact| (error_bound, {opts.bound})"),
        _spec("quant_input", x.astype(np.float32), "quantizer.safetensors",
              description="(T, H) float32: the hidden states, input of the quantizer check"),
        _spec("packed", q.packed, "quantizer.safetensors", encoding="fp4x2",
              description=f"(T, H/2) quantize(quant_input, axis=-1, preset={opts.preset!r}).packed"),
        _spec("scales", q.scales, "quantizer.safetensors", encoding="e8m0", description="(T, H/32) scales"),
    ]
    specs += layout
    meta = {"generator": {"name": "mxfp4ref", "version": __version__},
            "arguments": {k: v for k, v in vars(opts).items()},
            "config": {k: v for k, v in vars(cfg).items()},
            "seed": opts.seed, "tokens": T,
            "conventions": conventions(opts, cfg, w, hidden_p)}
    return specs, meta


def conventions(opts, cfg, w, hidden_p) -> dict:
    import dataclasses
    import enum

    from ..presets import PRESETS

    qc = PRESETS[opts.preset].config
    quant = {f.name: (v.value if isinstance(v, enum.Enum) else v)
             for f in dataclasses.fields(qc) for v in [getattr(qc, f.name)]}
    return {"preset": opts.preset, "scale_rule": quant.pop("scale_rule"), "rounding": quant.pop("rounding"),
            "quantizer": quant,
            "padding_backend": opts.padding, "padded_hidden": hidden_p,
            "padded_intermediate": w.intermediate_size, "routing_order": opts.routing_order,
            "routing_scoring": cfg.scoring, "renormalize": cfg.renormalize, "gate_up": w.gate_up.value,
            "activation": cfg.activation, "swiglu_alpha": cfg.swiglu_alpha, "swiglu_limit": cfg.swiglu_limit,
            "align_block_size": opts.align_block_size,
            "bound": {"model": opts.bound, "lam": BOUND_MODELS[opts.bound]}, "tp": [opts.tp_size, opts.tp_rank],
            "ep": [opts.ep_size, opts.ep_rank],
            "pipelines": {"exact": "float64 on exactly dequantized weights",
                          "bf16": "vLLM Triton backend rounding points (mxfp4ref.moe.forward.Pipeline.BF16)"}}


def layout_specs(w, backend: str) -> list[TensorSpec]:
    """The weights as ``backend``'s kernel reads them (mxfp4ref.layouts.to_kernel_layout)."""
    from ..layouts import to_kernel_layout

    kw = to_kernel_layout(w, backend)
    return [_spec(f"layout.{name}", a, "layout.safetensors", encoding="hex" if a.dtype == np.uint8 else None,
                  description=f"{backend} kernel buffer (memory order); {kw.views.get(name, '')}")
            for name, a in kw.tensors().items()]
