"""Every convention a block quantizer must fix, gathered in one frozen record: :class:`QuantConfig`.

``quantize()`` turns its arguments (or a preset) into a QuantConfig and hands it, with the input as
a float32 (rows, K) matrix, to :func:`mxfp4ref.blocks.quantize_blocks`. A backend (NumPy here,
numba in ``mxfp4ref._numba_quant``) must implement exactly the semantics written below.

Notation: ``amax`` is the float32 max |x| of a block; ``E``/``M`` are its biased exponent and
mantissa fields; ``b`` is the stored E8M0 byte; the *multiplier* is the float32 every element is
multiplied by (one IEEE float32 multiply) before element rounding. See spec/03-scale-rules.md.
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

from .fp8 import E4M3_GRID, E4M3_NAN, E5M2_GRID, E5M2_NAN
from .e2m1 import E2M1_GRID
from .rounding import Rounding
from .scales import ScaleRule


class ElemFormat(enum.Enum):
    """Element format of the block (MXFP4 = E2M1; MXFP8 = E4M3 or E5M2)."""
    E2M1 = "e2m1"
    E4M3 = "e4m3"
    E5M2 = "e5m2"

    @property
    def grid(self) -> np.ndarray:
        """Sorted finite magnitudes (float64), index == magnitude code."""
        return {"e2m1": E2M1_GRID, "e4m3": E4M3_GRID, "e5m2": E5M2_GRID}[self.value]

    @property
    def emax(self) -> int:
        """Exponent of the largest power of two in the format (OCP emax_elem)."""
        return {"e2m1": 2, "e4m3": 8, "e5m2": 15}[self.value]

    @property
    def mbits(self) -> int:
        """Explicit mantissa bits (the EVEN rule rounds amax to this many bits)."""
        return {"e2m1": 1, "e4m3": 3, "e5m2": 2}[self.value]

    @property
    def sign_bit(self) -> int:
        """Position of the sign bit in a code: 3 for E2M1, 7 for FP8."""
        return 3 if self is ElemFormat.E2M1 else 7

    @property
    def max_value(self) -> float:
        return float(self.grid[-1])


class AmaxNaN(enum.Enum):
    """Whether NaN elements take part in a block's amax."""
    PROPAGATE = "propagate"
    """max over the block is NaN if any element is (torch.amax / torch.max): torchao, triton_kernels'
    torch reference, microxcaling."""
    IGNORE = "ignore"
    """NaN elements are skipped (Triton tl.max, CUDA __hmax): Quark HIP, aiter, FlashInfer. An
    all-NaN block then has amax 0."""


class NonFinite(enum.Enum):
    """The scale byte of a block whose amax is NaN or Inf."""
    NAN_SCALE = "nan-scale"
    """b = 0xFF, the E8M0 NaN: the whole block decodes to NaN (OCP; torchao; microxcaling)."""
    SATURATE = "saturate"
    """b = 0xFE = 2^127, the largest scale (FlashInfer __nv_cvt_float_to_e8m0 SATFINITE; Quark HIP
    and aiter clamp the exponent to 127)."""
    TRITON = "triton"
    """triton_kernels' integer arithmetic on the descale's float32 bits: Inf -> 0xFF; NaN -> 0x00
    under RCEIL ((0x7FC00000 + 0x7FFFFF) wraps in int32 and masks to exponent 0) and 0xFF under
    FLOOR (its ROUND_DOWN masks the exponent field of NaN = 0xFF)."""


class EvenOverflow(enum.Enum):
    """EVEN when amax >= 1.75 * 2^127 (E = 254, its rounding carries out of the exponent field)."""
    EXACT = "exact"
    """The arithmetic answer: amax rounds to 2^128, b = 128 - emax + 127 (253 for E2M1)."""
    NAN_SCALE = "nan-scale"
    """The rounded bits are +Inf, so the block is treated as non-finite: 0xFF (torchao EVEN)."""
    SATURATE = "saturate"
    """log2(Inf) is clamped to the largest exponent: 0xFE (Quark HIP, aiter)."""


class Descale(enum.Enum):
    """How RCEIL forms the float32 descale D = amax / max_elem (other rules ignore this)."""
    RECIPROCAL = "reciprocal"
    """D = fl(amax * fl(1/max_elem)): torchao _to_mx_rceil; FlashInfer (rcp of 6)."""
    DIVIDE = "divide"
    """D = fl(amax / max_elem), one IEEE division: triton_kernels downcast_to_mxfp_torch."""


class SubnormalDescale(enum.Enum):
    """RCEIL's byte when D is an fp32 subnormal (E_D == 0); normal D gives b = E_D + (M_D != 0)."""
    CEIL = "ceil"
    """Exact ceiling to a power of two: b = 0 if D <= 2^-127 (M_D <= 0x400000), else 1.
    torchao _f32_to_e8m0_rceil, PTX cvt.rp.satfinite.ue8m0x2.f32."""
    BUMP = "bump"
    """b = 1 for any non-zero subnormal D: triton's (bits + 0x7FFFFF) & 0x7F800000; aiter's CPU ref."""


class EdgeMultiplier(enum.Enum):
    """The element multiplier for blocks with byte 0x00 or 0xFF (others use 2^(127-b))."""
    EXACT = "exact"
    """b = 0 -> 2^127 (the exact inverse of 2^-127); b = 0xFF -> NaN, and every element of the block
    becomes that +NaN whatever its own value (torchao on CPU gives code 0x3 even for a -NaN element).
    torchao, microxcaling, Quark, aiter."""
    ZERO = "zero"
    """b = 0 and b = 0xFF -> 0.0: triton_kernels (quant_scale = 0 where the rounded descale is 0;
    1/Inf = 0), so such blocks quantize to +-0 (NaN*0 and Inf*0 give NaN). FlashInfer's CUDA
    kernel multiplies byte-0 blocks by 1.0 instead: every element of such a block is below
    6*2^-127 and rounds to +-0 either way, so the codes are the same."""


class Log2(enum.Enum):
    """How FLOOR finds floor(log2 amax) (other rules always use the exponent bits)."""
    EXACT = "exact"
    """The exponent field of amax's float32 bits: exact. OCP, torchao, triton, microxcaling's CUDA
    path."""
    FLOAT32 = "float32"
    """floor(log2(amax)) with a float32 log2 (NumPy's, which agreed with torch.log2 on CPU on every
    one of 7420 such points tested): log2 rounds up to k for some amax a few ulps below 2^k, making
    the scale one binade too large. microxcaling's Python path (mx/mx_ops.py::_shared_exponents);
    platform dependent by nature."""
    QUOTIENT = "quotient"
    """The exponent field of fl32(amax / 2^emax) (one float32 division; exact for normal quotients).
    Equals EXACT except for amax = (2 - 2^-23) * 2^(emax-127), whose quotient is a subnormal tie that
    rounds UP to 2^-126: byte 1 instead of 0. triton_kernels ROUND_DOWN
    (numerics_details/mxfp.py::downcast_to_mxfp_torch: `amax / 4`, then `& 0x7F800000`)."""


class NanCode(enum.Enum):
    """E2M1 magnitude code of an element whose scaled value is NaN (E2M1 has no NaN).
    The code's sign bit is the NaN's sign bit. FP8 formats use their own NaN code instead."""
    SATURATE = "saturate"
    """0x7 (= 6): triton_kernels' bit path (exponent 0xFF saturates), Quark HIP."""
    TORCHAO = "torchao"
    """0x3: what torchao's _f32_to_floatx_unpacked computes for 0x7FC00000 through its normal branch
    (((0x7FC00000 + ((1-127) << 23) + 0x1FFFFF + 1) >> 22) & 0xFF == 3)."""


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """All conventions of one block quantizer. Every field is an enum member (or int).

    scale_rule        ScaleRule: the byte of a finite amax (mxfp4ref/scales.py::scale_bytes).
    rounding          Rounding: element rounding of the scaled value, saturating at the format max.
    elem              ElemFormat: E2M1 (MXFP4) or E4M3 / E5M2 (MXFP8).
    block_size        elements per scale along the block axis (32 in MX v1.0).
    amax_nan          AmaxNaN: NaN elements in the block max or not.
    nonfinite         NonFinite: byte of a NaN/Inf amax.
    descale           Descale: RCEIL's float32 descale arithmetic.
    subnormal_descale SubnormalDescale: RCEIL's byte for a subnormal descale.
    edge_multiplier   EdgeMultiplier: element multiplier of byte-0x00 and byte-0xFF blocks.
    nan_code          NanCode: E2M1 magnitude code of a NaN scaled element.
    log2              Log2: FLOOR's exponent of amax: exact bits, a float32 log2, or the bits of
                      fl32(amax / 2^emax).
    even_overflow     EvenOverflow: EVEN's byte when rounding amax carries past 2^127.

    Element step (all backends): s = float32(x * multiplier) with multiplier = 2^(127-b) as a float32
    for 1 <= b <= 254 (exact; 2^-127 is a float32 subnormal), b = 0 / 0xFF per edge_multiplier
    (a NaN multiplier makes every s of the block +NaN, 0x7FC00000; NaN from Inf*0 or NaN*0 is what
    the CPU's multiply gives, negative on x86 for Inf*0); then code = sign(s) << sign_bit |
    magnitude code, magnitude code = round(|s|) on elem.grid by `rounding` (saturating, +inf -> max),
    NaN -> nan_code (E2M1) or the format's NaN (FP8); under Rounding.MX_NEAREST an s that is +-0
    gets sign 0.
    """
    scale_rule: ScaleRule = ScaleRule.FLOOR
    rounding: Rounding = Rounding.RNE
    elem: ElemFormat = ElemFormat.E2M1
    block_size: int = 32
    amax_nan: AmaxNaN = AmaxNaN.PROPAGATE
    nonfinite: NonFinite = NonFinite.NAN_SCALE
    descale: Descale = Descale.RECIPROCAL
    subnormal_descale: SubnormalDescale = SubnormalDescale.CEIL
    edge_multiplier: EdgeMultiplier = EdgeMultiplier.EXACT
    nan_code: NanCode = NanCode.SATURATE
    log2: Log2 = Log2.EXACT
    even_overflow: EvenOverflow = EvenOverflow.EXACT

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "block_size":
                if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                    raise ValueError(f"block_size: expected a positive int, got {v!r}")
            elif not isinstance(v, _ENUMS[f.name]):
                raise TypeError(f"{f.name}: expected a {_ENUMS[f.name].__name__} member, got {v!r}")
        if self.log2 is not Log2.EXACT and self.scale_rule is not ScaleRule.FLOOR:
            raise ValueError(f"log2: {self.log2.name} is defined for FLOOR only, got {self.scale_rule}")
        if self.nonfinite is NonFinite.TRITON and self.scale_rule not in (ScaleRule.FLOOR,
                                                                          ScaleRule.RCEIL):
            raise ValueError(f"nonfinite: TRITON is defined for FLOOR and RCEIL only, "
                             f"got scale_rule {self.scale_rule}")

    def nan_magnitude_code(self) -> int:
        """Magnitude code (sign excluded) of a NaN scaled element."""
        if self.elem is ElemFormat.E4M3:
            return E4M3_NAN
        if self.elem is ElemFormat.E5M2:
            return E5M2_NAN
        return 0x7 if self.nan_code is NanCode.SATURATE else 0x3


_ENUMS = {"scale_rule": ScaleRule, "rounding": Rounding, "elem": ElemFormat,
          "amax_nan": AmaxNaN, "nonfinite": NonFinite, "descale": Descale,
          "subnormal_descale": SubnormalDescale, "edge_multiplier": EdgeMultiplier,
          "nan_code": NanCode, "log2": Log2, "even_overflow": EvenOverflow}
