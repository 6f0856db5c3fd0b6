"""Scale rules at every amax significand boundary of every binade, against exact arithmetic.

The oracle uses Python floats (exact for float32 values), math.frexp and Fractions, never the
bit tricks of mxfp4ref/scales.py.
"""
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from mxfp4ref import QuantConfig, ScaleRule, quantize, unpack_fp4, decode_e2m1
from mxfp4ref.config import Descale, ElemFormat, EvenOverflow, Log2, NonFinite, SubnormalDescale
from mxfp4ref.scales import scale_bytes


def clamp_byte(unbiased: int) -> int:
    return min(max(unbiased + 127, 0), 254)


def oracle(amax: float, rule: str, emax: int = 2, max_elem: float = 6.0, mbits: int = 1) -> int:
    """Exact scale byte for a finite amax >= 0."""
    if amax == 0:
        return 0
    f, e = math.frexp(amax)                 # amax = f * 2^e, f in [0.5, 1)
    fl = e - 1                              # floor(log2 amax)
    sig = Fraction(amax) / Fraction(2) ** fl  # significand in [1, 2)
    if rule == "floor":
        return clamp_byte(fl - emax)
    if rule == "ceil":
        return clamp_byte(fl + (sig != 1) - emax)
    if rule == "even":                      # round sig to mbits mantissa bits, half up
        step = Fraction(1, 2 ** mbits)
        rounded = math.floor(sig / step + Fraction(1, 2)) * step
        return clamp_byte(fl + (rounded == 2) - emax)
    if rule == "rceil":                     # smallest k with amax <= max_elem * 2^k
        k = math.ceil(math.log2(amax / max_elem)) - 2
        while Fraction(amax) > Fraction(max_elem) * Fraction(2) ** k:
            k += 1
        return clamp_byte(k)
    raise AssertionError(rule)


def boundary_amaxes() -> np.ndarray:
    """For every normal binade 2^-126 .. 2^127: significands 1, 1.5, 1.75, 2 and one ulp around."""
    out = []
    for E in range(1, 255):
        for s in (1.0, 1.5, 1.75, 2.0):
            v = np.float32(s * 2.0 ** (E - 127)) if not (s == 2.0 and E == 254) else None
            if v is None:
                out.append(np.nextafter(np.float32(2.0 ** 127), np.float32(0)))   # 2 - ulp
                continue
            out += [np.nextafter(v, np.float32(0)), v, np.nextafter(v, np.float32(np.inf))]
    a = np.array(out, np.float32)
    return a[np.isfinite(a)]


AMAX = boundary_amaxes()


@pytest.mark.parametrize("rule", ["floor", "ceil", "even", "rceil"])
def test_every_significand_boundary_of_every_binade(rule):
    cfg = QuantConfig(scale_rule=ScaleRule(rule))
    got = scale_bytes(AMAX, cfg)
    a = AMAX
    if rule == "rceil":                      # exact only while amax/6 is a normal float32
        a = a[a >= np.float32(6 * 2.0 ** -126)]
        got = scale_bytes(a, cfg)
    want = [oracle(float(v), rule) for v in a]
    assert got.tolist() == want


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("rule", ["floor", "ceil", "even", "rceil"])
def test_mxfp8_rules_use_the_format_emax(fmt, rule):
    elem = ElemFormat(fmt)
    cfg = QuantConfig(scale_rule=ScaleRule(rule), elem=elem)
    a = AMAX[AMAX >= np.float32(elem.max_value * 2.0 ** -126)]
    got = scale_bytes(a, cfg)
    want = [oracle(float(v), rule, elem.emax, elem.max_value, elem.mbits) for v in a]
    assert got.tolist() == want


def test_rules_relative_to_floor_as_in_the_notes():
    # amax = 2^3 * s: FLOOR 128; EVEN bumps iff s >= 1.75; RCEIL iff s > 1.5; CEIL iff s > 1
    s = np.array([1.0, 1.25, 1.5, 1.625, 1.75, 1.99], np.float32)
    amax = s * np.float32(8)
    byte = lambda r: scale_bytes(amax, QuantConfig(scale_rule=ScaleRule(r))).tolist()
    assert byte("floor") == [128, 128, 128, 128, 128, 128]
    assert byte("even") == [128, 128, 128, 128, 129, 129]
    assert byte("rceil") == [128, 128, 128, 129, 129, 129]
    assert byte("ceil") == [128, 129, 129, 129, 129, 129]


def test_zero_and_subnormal_amax_give_byte_zero():
    tiny = np.array([0.0, 1e-45, 2.0 ** -130, 2.0 ** -127, 2.0 ** -126], np.float32)
    for r in ("floor", "ceil", "even", "rceil"):
        assert scale_bytes(tiny, QuantConfig(scale_rule=ScaleRule(r))).tolist() == [0] * 5


def test_rceil_subnormal_descale_ceil_versus_bump():
    # D = amax/6 below 2^-126: CEIL (torchao, PTX) -> 0 iff D <= 2^-127; BUMP (triton) -> 1 if D != 0
    amax = np.array([0.0, 1e-40, 6 * 2.0 ** -127, 6 * 2.0 ** -126 * 0.75, 1.5 * 2.0 ** -125],
                    np.float32)
    ceil = QuantConfig(scale_rule=ScaleRule.RCEIL)
    bump = QuantConfig(scale_rule=ScaleRule.RCEIL, descale=Descale.DIVIDE,
                       subnormal_descale=SubnormalDescale.BUMP)
    assert scale_bytes(amax, ceil).tolist() == [0, 0, 0, 1, 0]      # 1.5*2^-125 = 6*2^-127
    assert scale_bytes(amax, bump).tolist() == [0, 1, 1, 1, 1]


def test_top_of_the_range_and_non_finite_amax():
    big = np.array([np.float32(3.4e38), np.float32(1.75 * 2.0 ** 127), np.inf, np.nan], np.float32)
    rule = lambda r, nf=NonFinite.NAN_SCALE, ev=EvenOverflow.EXACT: scale_bytes(
        big, QuantConfig(scale_rule=ScaleRule(r), nonfinite=nf, even_overflow=ev)).tolist()
    assert rule("floor") == [252, 252, 255, 255]
    assert rule("ceil") == [253, 253, 255, 255]
    assert rule("rceil") == [253, 253, 255, 255]
    assert rule("even") == [253, 253, 255, 255]                 # 1.75*2^127 rounds to 2^128
    assert rule("even", ev=EvenOverflow.NAN_SCALE) == [255, 255, 255, 255]   # torchao: bits -> Inf
    assert rule("even", NonFinite.SATURATE, EvenOverflow.SATURATE) == [254, 254, 254, 254]
    assert rule("rceil", NonFinite.TRITON) == [253, 253, 255, 0]  # NaN bits wrap to byte 0
    assert rule("floor", NonFinite.TRITON) == [252, 252, 255, 255]


@pytest.mark.parametrize("rule", ["ceil", "even", "rceil"])
def test_no_clipping_beyond_rounding_except_floor(rule):
    # the block max at every boundary: its scaled value is <= 7 and rounds within half a step
    for v in AMAX[(AMAX > 2.0 ** -100) & (AMAX < 2.0 ** 100)][::3]:
        x = np.zeros(32, np.float32)
        x[3] = v
        t = quantize(x, scale_rule=rule)
        X = 2.0 ** (int(t.scales[0]) - 127)
        scaled = float(v) / X
        step = 0.5 if scaled < 2 else 1.0 if scaled < 4 else 2.0
        assert scaled <= (6.0 if rule != "even" else 7.0), (v, scaled)
        assert abs(float(t.dequantize(np.float64)[3]) - float(v)) <= step / 2 * X, v


def test_floor_clips_the_max_between_7_and_8():
    x = np.zeros(32, np.float32)
    x[0] = 7.5
    t = quantize(x, scale_rule="floor")
    assert t.scales.tolist() == [127] and decode_e2m1(unpack_fp4(t.packed))[0] == 6.0


@pytest.mark.parametrize("descale", [Descale.RECIPROCAL, Descale.DIVIDE])
@pytest.mark.parametrize("e", [2, -100])
def test_rceil_exhaustive_over_every_mantissa_of_a_binade(descale, e):
    # amax = (1 + m/2^23) * 2^e for all 2^23 mantissas; exact answer: 6*2^(e-2) = 1.5*2^e, so
    # ceil(log2(amax/6)) = e - 2 + (amax > 1.5 * 2^e)
    E = e + 127
    amax = ((np.uint32(E) << 23) | np.arange(1 << 23, dtype=np.uint32)).view(np.float32)
    got = scale_bytes(amax, QuantConfig(scale_rule=ScaleRule.RCEIL, descale=descale))
    want = (E - 2 + (amax.astype(np.float64) > 1.5 * 2.0 ** e)).astype(np.uint8)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("elem", [ElemFormat.E2M1, ElemFormat.E4M3, ElemFormat.E5M2])
def test_floor_quotient_is_the_exponent_of_the_float32_quotient(elem):
    """Log2.QUOTIENT (triton ROUND_DOWN): byte = exponent field of fl32(amax / 2^emax), checked
    against an exact rational oracle (round the quotient to the float32 grid by hand) over every
    mantissa of the binades around the subnormal boundary, and FLOOR's bits above it."""
    cfg = QuantConfig(scale_rule=ScaleRule.FLOOR, elem=elem, log2=Log2.QUOTIENT)
    emax = elem.emax
    for E in range(0, emax + 3):
        M = np.arange(0, 1 << 23, dtype=np.uint32)
        A = (np.uint32(E) << np.uint32(23)) | M
        got = scale_bytes(A.view(np.float32), cfg)
        # amax in units of 2^-149 (the float32 subnormal step), exactly, as Python-size integers
        units = ((1 << 23) + M.astype(np.int64)) << (E - 1) if E > 0 else M.astype(np.int64)
        q, r = np.divmod(units, 1 << emax)                 # quotient amax / 2^emax in those units
        rounded = q + ((2 * r > (1 << emax)) | ((2 * r == (1 << emax)) & (q % 2 == 1)))   # RNE
        # for E <= emax the quotient is below 2^-126 * 2 (spacing 1 unit): field 1 iff it reached 2^23
        want = np.full(M.shape, E - emax) if E > emax else (rounded >= (1 << 23)).astype(np.int64)
        np.testing.assert_array_equal(got, want.astype(np.uint8), err_msg=f"E={E}")
    # the one carry per binade: amax = (2 - 2^-23) * 2^(emax-127) -> byte 1, where EXACT says 0
    A = np.array([(emax << 23) | 0x7FFFFF], np.uint32).view(np.float32)
    assert scale_bytes(A, cfg)[0] == 1
    assert scale_bytes(A, dataclasses.replace(cfg, log2=Log2.EXACT))[0] == 0
