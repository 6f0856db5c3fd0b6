"""QuantConfig -> the one int of flags the CUDA kernels read (mx_common.cuh::mxk_unpack_conv).

The kernels implement exactly the fields of :class:`mxfp4ref.config.QuantConfig`; this module is the
only place that knows the bit layout. No CuPy needed (the CPU tests use it too).

    bits 0-2  scale_rule         0 FLOOR, 1 CEIL, 2 EVEN, 3 RCEIL
    bit  3    descale            1 DIVIDE, 0 RECIPROCAL
    bit  4    subnormal_descale  1 BUMP, 0 CEIL
    bits 5-6  rounding           0 RNE, 1 AWAY, 2 ZERO, 3 MX_NEAREST
    bit  7    amax_nan           1 IGNORE, 0 PROPAGATE
    bits 8-9  nonfinite          0 NAN_SCALE, 1 SATURATE, 2 TRITON
    bit  10   edge_multiplier    1 ZERO, 0 EXACT
    bit  11   nan_code           1 TORCHAO (0x3), 0 SATURATE (0x7)
    bits 12-13 elem              0 E2M1, 1 E4M3, 2 E5M2
    bit  14   log2               1 FLOAT32, 0 EXACT
    bits 15-16 even_overflow     0 EXACT, 1 NAN_SCALE, 2 SATURATE
"""
from __future__ import annotations

from mxfp4ref.config import (AmaxNaN, Descale, EdgeMultiplier, ElemFormat, EvenOverflow, Log2, NanCode, NonFinite,
                             QuantConfig, SubnormalDescale)
from mxfp4ref.rounding import Rounding
from mxfp4ref.scales import ScaleRule

_SCALE_RULE = {ScaleRule.FLOOR: 0, ScaleRule.CEIL: 1, ScaleRule.EVEN: 2, ScaleRule.RCEIL: 3}
_ROUNDING = {Rounding.RNE: 0, Rounding.AWAY: 1, Rounding.ZERO: 2, Rounding.MX_NEAREST: 3}
_NONFINITE = {NonFinite.NAN_SCALE: 0, NonFinite.SATURATE: 1, NonFinite.TRITON: 2}
_EVEN_OVERFLOW = {EvenOverflow.EXACT: 0, EvenOverflow.NAN_SCALE: 1, EvenOverflow.SATURATE: 2}
_ELEM = {ElemFormat.E2M1: 0, ElemFormat.E4M3: 1, ElemFormat.E5M2: 2}

ELEM_E2M1, ELEM_E4M3, ELEM_E5M2 = 0, 1, 2


def conv_flags(cfg: QuantConfig) -> int:
    """Pack every convention of ``cfg`` (all but block_size) into the kernels' flags int."""
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"cfg: expected a mxfp4ref.config.QuantConfig, got {type(cfg).__name__}")
    return (_SCALE_RULE[cfg.scale_rule]
            | (cfg.descale is Descale.DIVIDE) << 3
            | (cfg.subnormal_descale is SubnormalDescale.BUMP) << 4
            | _ROUNDING[cfg.rounding] << 5
            | (cfg.amax_nan is AmaxNaN.IGNORE) << 7
            | _NONFINITE[cfg.nonfinite] << 8
            | (cfg.edge_multiplier is EdgeMultiplier.ZERO) << 10
            | (cfg.nan_code is NanCode.TORCHAO) << 11
            | _ELEM[cfg.elem] << 12
            | (cfg.log2 is Log2.FLOAT32) << 14
            | _EVEN_OVERFLOW[cfg.even_overflow] << 15
            | (cfg.log2 is Log2.QUOTIENT) << 17)
