"""Scale rules: from a block's amax to its E8M0 byte, on float32 bit patterns only.

For a finite float32 amax with biased exponent E and mantissa field M (amax = 1.M * 2^(E-127) for
E >= 1), and an element format with largest power of two 2^emax (E2M1: emax 2, max 6):

  FLOOR  b = E - emax                       2^floor(log2 amax) / 2^emax       OCP MX v1.0 sec. 6.3
  CEIL   b = E + (M != 0) - emax            2^ceil(log2 amax) / 2^emax        torchao CEIL
  EVEN   round amax to the element's mantissa width (half up, on the bits), then FLOOR
  RCEIL  b = ceil(log2(D)), D = amax / max_elem as a float32     torchao RCEIL, PTX cvt.rp, triton
                                                                 ROUND_UP

each clamped below at byte 0 (2^-127). No float log2 anywhere: fp32 log2 rounds up for amax just
below a power of two (microxcaling's Python path has that off-by-one). See spec/03-scale-rules.md.
"""
from __future__ import annotations

import enum

import numpy as np

from .dtypes import f32_bits

F32_EXP_MASK = 0x7F800000
F32_MANT_MASK = 0x007FFFFF


class ScaleRule(enum.Enum):
    """How a block's scale exponent is chosen from its amax."""

    FLOOR = "floor"
    """floor(log2 amax) - emax. OCP MX v1.0 sec. 6.3; torchao FLOOR (default of to_mx), microxcaling,
    triton_kernels ROUND_DOWN. The block max can clip: amax/X in [6, 8) rounds to 6."""

    CEIL = "ceil"
    """ceil(log2 amax) - emax. torchao ScaleCalculationMode.CEIL. Never clips; wastes a binade when
    the significand of amax is in (1, 1.5]."""

    EVEN = "even"
    """Round amax to the element's mantissa bits (half up), then floor(log2) - emax. torchao EVEN,
    AMD Quark (default scale_calculation_mode), aiter, vLLM's emulation. Bumps the scale iff
    amax's significand >= 1.75 (E2M1), i.e. exactly when FLOOR would clip past 7."""

    RCEIL = "rceil"
    """ceil(log2(amax / max_elem)): the smallest power of two that makes amax fit. torchao RCEIL
    (inference default), NVIDIA cvt.rp.ue8m0, FlashInfer, triton_kernels ROUND_UP."""


SCALE_RULES = {r.value: r for r in ScaleRule}


def parse_scale_rule(rule) -> ScaleRule:
    """'floor' | 'ceil' | 'even' | 'rceil' | ScaleRule -> ScaleRule, else ValueError."""
    if isinstance(rule, ScaleRule):
        return rule
    if not isinstance(rule, str) or rule not in SCALE_RULES:
        raise ValueError(f"scale_rule: unknown value {rule!r}; expected one of {list(SCALE_RULES)}")
    return SCALE_RULES[rule]


def scale_bytes(amax: np.ndarray, cfg) -> np.ndarray:
    """E8M0 byte of each block. amax: float32 (...,) block maxima (>= 0 or NaN) -> uint8 (...,).

    ``cfg`` is a :class:`mxfp4ref.config.QuantConfig`; it supplies scale_rule, elem (emax, mbits,
    max), nonfinite, descale and subnormal_descale.
    """
    from .config import (Descale, EvenOverflow, Log2, NonFinite,   # (config imports this module)
                         SubnormalDescale)

    amax = np.asarray(amax, dtype=np.float32)
    A = f32_bits(amax)                       # (...,) int64 bit patterns
    E = (A >> 23) & 0xFF
    M = A & F32_MANT_MASK
    emax = cfg.elem.emax
    rule = cfg.scale_rule
    nonfinite = E == 0xFF                    # NaN or Inf amax

    if rule is ScaleRule.FLOOR and cfg.log2 is Log2.FLOAT32:
        with np.errstate(divide="ignore", invalid="ignore"):
            lg = np.floor(np.log2(amax))                 # float32 log2: may round up to k
        b = np.where(np.isfinite(lg), np.nan_to_num(lg), -1000).astype(np.int64) + 127 - emax
    elif rule is ScaleRule.FLOOR and cfg.log2 is Log2.QUOTIENT:
        with np.errstate(invalid="ignore", over="ignore"):
            D = amax / np.float32(2.0 ** emax)           # one float32 division, as triton does
        b = (f32_bits(D) >> 23) & 0xFF                   # its exponent field (NaN/Inf: replaced below)
    elif rule is ScaleRule.FLOOR:
        b = E - emax
    elif rule is ScaleRule.CEIL:
        b = E + (M != 0) - emax
    elif rule is ScaleRule.EVEN:
        half = 1 << (23 - cfg.elem.mbits - 1)            # E2M1: 0x200000 = half of the kept bit
        E_rounded = (A + half) >> 23                     # may carry to 255 (= 2^128) for E = 254
        carried = (E_rounded == 0xFF) & ~nonfinite
        b = E_rounded - emax
        if cfg.even_overflow is EvenOverflow.NAN_SCALE:  # the rounded bits are +Inf
            b = np.where(carried, 0xFF, b)
        elif cfg.even_overflow is EvenOverflow.SATURATE:
            b = np.where(carried, 0xFE, b)
    elif rule is ScaleRule.RCEIL:
        max_elem = np.float32(cfg.elem.max_value)
        with np.errstate(invalid="ignore", over="ignore"):
            if cfg.descale is Descale.RECIPROCAL:
                D = amax * (np.float32(1.0) / max_elem)  # float32 * float32
            else:
                D = amax / max_elem                      # one float32 division
        Dbits = f32_bits(D)
        E_D, M_D = (Dbits >> 23) & 0xFF, Dbits & F32_MANT_MASK
        if cfg.subnormal_descale is SubnormalDescale.CEIL:
            sub = (M_D > 0x400000).astype(np.int64)      # D > 2^-127 -> 2^-126 (byte 1)
        else:
            sub = (M_D != 0).astype(np.int64)            # any non-zero D -> byte 1
        b = np.where(E_D == 0, sub, E_D + (M_D != 0))
    else:  # pragma: no cover
        raise ValueError(f"scale_rule: unsupported {rule!r}")

    b = np.where(b == 0xFF, 0xFF, np.clip(b, 0, 254))    # (0xFF only from EVEN's NAN_SCALE)
    if cfg.nonfinite is NonFinite.NAN_SCALE:
        special = np.full_like(b, 0xFF)
    elif cfg.nonfinite is NonFinite.SATURATE:
        special = np.full_like(b, 0xFE)
    else:  # TRITON: Inf -> 0xFF; NaN -> 0x00 under RCEIL (int32 wrap), 0xFF under FLOOR
        is_nan = np.isnan(amax)
        nan_byte = 0x00 if rule is ScaleRule.RCEIL else 0xFF
        special = np.where(is_nan, nan_byte, 0xFF)
    return np.where(nonfinite, special, b).astype(np.uint8)
