"""Presets: named QuantConfigs that reproduce one implementation bit for bit, edge cases included.

Each preset's docstring names the source file it follows. The edge cases where presets differ
(all-zero block, NaN/Inf in a block, subnormal descale, amax near 2^127, -0.0) are tabulated in
spec/04-presets.md, and each row of that table is a test in tests/test_presets.py.
"""
from __future__ import annotations

import dataclasses

from .config import (AmaxNaN, Descale, EdgeMultiplier, EvenOverflow, Log2, NanCode, NonFinite, QuantConfig,
                     SubnormalDescale)
from .rounding import Rounding
from .scales import ScaleRule


class Preset:
    """A named QuantConfig plus the implementation it reproduces (``source``)."""

    def __init__(self, name: str, config: QuantConfig, source: str, doc: str):
        self.name, self.config, self.source = name, config, source
        self.__doc__ = f"{doc}\n\nReproduces: {source}"

    def __repr__(self) -> str:
        return f"Preset({self.name!r})"


_TORCHAO_SRC = ("pytorch/ao: torchao/prototype/mx_formats/mx_tensor.py::to_mx (scale: "
                "_to_mx_rceil/_f32_to_e8m0_rceil for RCEIL; elements: "
                "torchao/prototype/custom_fp_utils.py::_f32_to_floatx_unpacked)")


def _torchao(rule: ScaleRule) -> QuantConfig:
    return QuantConfig(scale_rule=rule, rounding=Rounding.RNE, amax_nan=AmaxNaN.PROPAGATE,
                       nonfinite=NonFinite.NAN_SCALE, descale=Descale.RECIPROCAL,
                       subnormal_descale=SubnormalDescale.CEIL,
                       edge_multiplier=EdgeMultiplier.EXACT, nan_code=NanCode.TORCHAO,
                       even_overflow=EvenOverflow.NAN_SCALE)


OCP = Preset(
    "ocp", QuantConfig(),
    "OCP Microscaling Formats (MX) v1.0, section 6.3 (the specification itself; no code)",
    "FLOOR scale, RNE elements, saturating; a NaN/Inf amax gives the NaN scale 0xFF. The spec leaves"
    " the zero block and NaN elements open; here: byte 0, and every code of a 0xFF block is 0x7.")

TORCHAO_FLOOR = Preset("torchao-floor", _torchao(ScaleRule.FLOOR), _TORCHAO_SRC,
                       "torchao to_mx(scaling_mode=ScaleCalculationMode.FLOOR), the to_mx default."
                       " NaN/Inf amax -> 0xFF and every code of the block becomes 0x3 (NaN path).")
TORCHAO_CEIL = Preset("torchao-ceil", _torchao(ScaleRule.CEIL), _TORCHAO_SRC,
                      "torchao to_mx(scaling_mode=ScaleCalculationMode.CEIL).")
TORCHAO_EVEN = Preset("torchao-even", _torchao(ScaleRule.EVEN), _TORCHAO_SRC,
                      "torchao to_mx(scaling_mode=ScaleCalculationMode.EVEN). amax >= 1.75*2^127"
                      " rounds to Inf: scale 0xFF, a NaN block.")
TORCHAO_RCEIL = Preset("torchao-rceil", _torchao(ScaleRule.RCEIL), _TORCHAO_SRC,
                       "torchao to_mx(scaling_mode=ScaleCalculationMode.RCEIL), the inference "
                       "default: D = amax * fl(1/6), byte 0 iff D <= 2^-127.")

_TRITON_SRC = ("triton-lang/triton: python/triton_kernels/triton_kernels/numerics_details/mxfp.py"
               "::downcast_to_mxfp_torch (the reference its tests compare the kernel "
               "numerics_details/mxfp_details/_downcast_to_mxfp.py against)")
TRITON_ROUND_UP = Preset(
    "triton-round-up",
    QuantConfig(scale_rule=ScaleRule.RCEIL, rounding=Rounding.RNE, amax_nan=AmaxNaN.PROPAGATE,
                nonfinite=NonFinite.TRITON, descale=Descale.DIVIDE,
                subnormal_descale=SubnormalDescale.BUMP, edge_multiplier=EdgeMultiplier.ZERO,
                nan_code=NanCode.SATURATE),
    _TRITON_SRC,
    "DequantScaleRoundingMode.ROUND_UP (the default): D = amax/6, byte = exponent of "
    "(bits(D) + 0x7FFFFF) & 0x7F800000. Byte-0 blocks (zero, tiny, and NaN amax via int32 wrap) "
    "and 0xFF blocks (Inf) are multiplied by 0.")
TRITON_ROUND_DOWN = Preset(
    "triton-round-down",
    QuantConfig(scale_rule=ScaleRule.FLOOR, rounding=Rounding.RNE, amax_nan=AmaxNaN.PROPAGATE,
                nonfinite=NonFinite.TRITON, edge_multiplier=EdgeMultiplier.ZERO,
                nan_code=NanCode.SATURATE, log2=Log2.QUOTIENT),
    _TRITON_SRC,
    "DequantScaleRoundingMode.ROUND_DOWN: D = amax/4 in float32, byte = exponent field of D "
    "(Log2.QUOTIENT: the OCP byte, except amax = (2 - 2^-23) * 2^-125 whose quotient rounds up to "
    "2^-126, byte 1); byte-0 (amax < 2^-124) and 0xFF blocks are multiplied by 0.")

TRITON_ROUND_UP_LEGACY = Preset(
    "triton-round-up-legacy",
    dataclasses.replace(TRITON_ROUND_UP.config, rounding=Rounding.AWAY),
    "triton-lang/triton: python/triton_kernels/triton_kernels/numerics_details/mxfp.py::"
    "downcast_to_mxfp_torch, versions before the RTNE rewrite (the vLLM-era copy checked here; "
    "its kernel mxfp_details/_downcast_to_mxfp.py rounds 'with tie breaking up')",
    "As triton-round-up, but element ties round away from zero (add one at the first dropped "
    "bit, then truncate).")

MICROXCALING = Preset(
    "microxcaling",
    QuantConfig(scale_rule=ScaleRule.FLOOR, rounding=Rounding.MX_NEAREST, amax_nan=AmaxNaN.PROPAGATE,
                nonfinite=NonFinite.NAN_SCALE, edge_multiplier=EdgeMultiplier.EXACT,
                nan_code=NanCode.SATURATE, log2=Log2.FLOAT32),
    "microsoft/microxcaling: mx/mx_ops.py::_quantize_mx (elements: mx/elemwise_ops.py::"
    "_quantize_elemwise_core, round='nearest')",
    "Its defaults: FLOOR scale, ties away from zero (Rounding.MX_NEAREST: its float32 arithmetic, "
    "sign of exact zeros dropped), saturating; NaN/Inf in a block -> NaN scale. It returns values,"
    " not codes: these codes decode to its output. float32 inputs (it computes bf16 inputs in "
    "bf16, which this preset does not model). Its Python path takes floor(torch.log2(amax)) in "
    "float32, one too high for some amax a few ulps below 2^k: Log2.FLOAT32 reproduces that with "
    "NumPy's float32 log2 (its CUDA path mx/cpp/shared_exp.cuh uses the exact exponent).")

QUARK = Preset(
    "quark",
    QuantConfig(scale_rule=ScaleRule.EVEN, rounding=Rounding.RNE, amax_nan=AmaxNaN.IGNORE,
                nonfinite=NonFinite.SATURATE, edge_multiplier=EdgeMultiplier.EXACT,
                nan_code=NanCode.SATURATE, even_overflow=EvenOverflow.SATURATE),
    "amd/quark: quark/torch/kernel/hw_emulation/csrc/mxfp4/fake_kernels.cuh::qdq_mxfp4_kernel "
    "(the default QUARK_MXFP4_IMPL=hip path that vLLM's quant_dequant_mxfp4 emulation calls)",
    "EVEN scale, RNE elements; amax by __hmax (NaN ignored); exponent clamped to 127, so Inf or "
    "huge amax -> 0xFE; NaN/Inf elements -> +-6. Quark computes in the input dtype (bf16/fp16); the"
    " codes equal this float32 computation for bf16 inputs. Not modelled: Quark outputs zeros for a"
    " block whose amax is below 1.5*2^-127 (its log2(0) overflows to the scale 2^127), and float16"
    " scale underflow; see spec/04-presets.md.")

FLASHINFER = Preset(
    "flashinfer",
    QuantConfig(scale_rule=ScaleRule.RCEIL, rounding=Rounding.RNE, amax_nan=AmaxNaN.IGNORE,
                nonfinite=NonFinite.SATURATE, descale=Descale.RECIPROCAL,
                subnormal_descale=SubnormalDescale.CEIL, edge_multiplier=EdgeMultiplier.ZERO,
                nan_code=NanCode.SATURATE),
    "flashinfer-ai/flashinfer: csrc/nv_internal/tensorrt_llm/kernels/quantization_utils.cuh::"
    "cvt_warp_fp16_to_fp4 (UE8M0 branch; mxfp4_quantize backend='cuda')",
    "RCEIL via __nv_cvt_float_to_e8m0(amax*rcp(6), SATFINITE, cudaRoundPosInf), elements by "
    "cvt.rn.satfinite.e2m1x2.f32; byte-0 blocks become +-0 (the kernel multiplies them by 1.0). "
    "Not run on hardware here: rcp.approx at 6*2^k and the NaN element code are unverified.")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    OCP, TORCHAO_FLOOR, TORCHAO_CEIL, TORCHAO_EVEN, TORCHAO_RCEIL, TRITON_ROUND_UP,
    TRITON_ROUND_DOWN, TRITON_ROUND_UP_LEGACY, MICROXCALING, QUARK, FLASHINFER)}


def get_preset(name) -> Preset:
    """Preset by name (or a Preset passed through); ValueError naming the choices otherwise."""
    if isinstance(name, Preset):
        return name
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset: unknown value {name!r}; expected one of {list(PRESETS)}")
    return PRESETS[name]
