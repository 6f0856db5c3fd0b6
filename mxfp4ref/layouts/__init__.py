"""Kernel weight layouts: each backend's weight conversion as a reversible, bit-exact transform.

    to_kernel_layout(weights, backend) -> KernelWeights      (what the kernel reads, byte for byte)
    from_kernel_layout(kernel_weights) -> MoEWeights          (the exact inverse)

One module per backend, each exposing ``plan(E, H, I) -> {tensor name: TensorPlan}`` (called with
E = 1: maps are per expert, see _core.py) and optionally ``check_shapes(H, I)``:
strided, triton_hopper, triton_blackwell, flashinfer_trtllm, flashinfer_cutlass, marlin.
Every vLLM conversion starts from gpt-oss' interleaved gate/up rows, so weights with concatenated
gate/up are first reordered to interleaved (and reordered back by ``from_kernel_layout``).
See spec/30-layouts.md.
"""
from __future__ import annotations

import numpy as np

from ..moe.weights import MoEWeights
from ..packing import pack_fp4, unpack_fp4
from . import flashinfer_cutlass, flashinfer_trtllm, marlin, strided, triton_blackwell, triton_hopper
from ._core import (PAD, PERMUTE_CACHE, TENSORS, KernelWeights, TensorPlan, cached_index_map,
                    clear_permute_cache, gather, scatter)

BACKENDS = {m.NAME: m for m in (strided, triton_hopper, triton_blackwell, flashinfer_trtllm,
                                flashinfer_cutlass, marlin)}
"""Backend name -> module. Names as accepted by ``to_kernel_layout`` and ``explain-layout``."""

UNVERIFIED: dict[str, str] = {}
"""Backends whose bytes were NOT compared with the real implementation, with the reason."""

__all__ = ["BACKENDS", "UNVERIFIED", "KernelWeights", "PAD", "PERMUTE_CACHE", "TensorPlan", "clear_permute_cache",
           "from_kernel_layout", "get_plan", "to_kernel_layout"]


def _backend_module(backend):
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a str, got {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown value {backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[backend]


def get_plan(backend: str, H: int, I: int) -> dict[str, TensorPlan]:
    """The backend's per-expert TensorPlans for hidden size H, intermediate size I.

    Raises ValueError naming the constraint when the backend cannot take these shapes."""
    module = _backend_module(backend)
    if hasattr(module, "check_shapes"):
        module.check_shapes(H, I)
    return module.plan(1, H, I)


def _source_array(w: MoEWeights, name: str, unit: str) -> np.ndarray:
    a = getattr(w, name)
    return unpack_fp4(a, axis=-1) if unit == "code" else a


def to_kernel_layout(weights: MoEWeights, backend: str) -> KernelWeights:
    """Convert one MoE layer's weights into ``backend``'s kernel buffers (see KernelWeights)."""
    if not isinstance(weights, MoEWeights):
        raise TypeError(f"weights: expected a MoEWeights, got {type(weights).__name__}")
    module = _backend_module(backend)
    E, H, I = weights.num_experts, weights.hidden_size, weights.intermediate_size
    plans = get_plan(backend, H, I)
    w = weights.with_gate_up("interleaved")
    out = {}
    for name in TENSORS:
        src = getattr(w, name)
        if src is None:
            out[name] = None
            continue
        p = plans[name]
        src = _source_array(w, name, p.unit)
        buf = np.concatenate([gather(src[e], p.idx) for e in range(E)], axis=p.expert_axis)
        out[name] = p.encode(buf) if p.encode else buf
    source = dict(E=E, H=H, I=I, gate_up=weights.gate_up.value,
                  has_w13_bias=weights.w13_bias is not None, has_w2_bias=weights.w2_bias is not None)
    views = {n: plans[n].view for n in TENSORS}
    return KernelWeights(module.NAME, **out, source=source, views=views)


def from_kernel_layout(kernel_weights: KernelWeights) -> MoEWeights:
    """Exact inverse of :func:`to_kernel_layout`; checks that every padding byte is zero."""
    if not isinstance(kernel_weights, KernelWeights):
        raise TypeError(f"kernel_weights: expected a KernelWeights, got {type(kernel_weights).__name__}")
    kw = kernel_weights
    src = kw.source
    E, H, I = src["E"], src["H"], src["I"]
    plans = get_plan(kw.backend, H, I)
    logical = {"w13_weight": ((E, 2 * I, H // 2), np.uint8), "w13_weight_scale": ((E, 2 * I, H // 32), np.uint8),
               "w2_weight": ((E, H, I // 2), np.uint8), "w2_weight_scale": ((E, H, I // 32), np.uint8),
               "w13_bias": ((E, 2 * I), np.float32), "w2_bias": ((E, H), np.float32)}
    arrays = {}
    for name in TENSORS:
        buf = getattr(kw, name)
        present = src[f"has_{name}"] if name.endswith("bias") else True
        if (buf is None) == present:
            raise ValueError(f"kernel_weights.{name}: expected {'an array' if present else 'None'}, "
                             f"got {'None' if buf is None else 'an array'}")
        if buf is None:
            arrays[name] = None
            continue
        p = plans[name]
        shape, dtype = logical[name]
        what = f"kernel_weights.{name}"
        if not isinstance(buf, np.ndarray):
            raise TypeError(f"{what}: expected a numpy.ndarray, got {type(buf).__name__}")
        stored = np.dtype(p.dtype if p.dtype is not None else (np.uint8 if p.unit == "code" else dtype))
        if buf.dtype != stored:
            raise TypeError(f"{what}: expected dtype {stored}, got {buf.dtype}")
        want = p.buffer_shape(E)
        if p.unit == "code":                                       # 8 codes per stored int32
            want = want[:-1] + (want[-1] // 8,)
        if buf.shape != want:
            raise ValueError(f"{what}: expected shape {want}, got {buf.shape}")
        if p.decode:
            buf = p.decode(buf)
        one = (1,) + shape[1:-1] + (shape[-1] * (2 if p.unit == "code" else 1),)   # one expert's source
        experts = [scatter(b, p.idx, one, np.uint8 if p.unit == "code" else dtype, what)
                   for b in np.split(buf, E, axis=p.expert_axis)]
        arrays[name] = np.concatenate(experts, axis=0)
        if p.unit == "code":
            arrays[name] = pack_fp4(arrays[name], axis=-1)
    w = MoEWeights(**arrays, gate_up="interleaved")
    return w.with_gate_up(src["gate_up"])
