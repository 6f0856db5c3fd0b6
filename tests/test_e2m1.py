"""E2M1 elements: the table, decode, and encode under every rounding mode, exhaustively.

Oracles: a brute-force nearest-grid-point search written independently of mxfp4ref.rounding, and
ml_dtypes.float4_e2m1fn for RNE (fed float32 only: its float64 cast rounds through float32).
"""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref import E2M1_VALUES, Rounding, decode_e2m1, encode_e2m1

GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
MIDPOINTS = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]


def brute_force(x: float, rounding: str) -> int:
    """Code by scanning the 8 magnitudes: nearest (ties per rule) or truncation; sign copied."""
    m, sign = abs(x), (8 if np.signbit(x) else 0)
    if m >= 6.0:
        return sign | 7                                  # saturate (also +-inf)
    if rounding == "zero":
        return sign | max(i for i, g in enumerate(GRID) if g <= m)
    d = [abs(m - g) for g in GRID]
    best = min(d)
    cands = [i for i in range(8) if d[i] == best]
    if len(cands) == 1:
        return sign | cands[0]
    lo, hi = cands
    if rounding == "away":
        return sign | hi
    return sign | (lo if lo % 2 == 0 else hi)          # rne: even code = mantissa bit 0


def f32_neighbours(v):
    v = np.float32(v)
    return [np.nextafter(v, np.float32(-np.inf)), v, np.nextafter(v, np.float32(np.inf))]


def test_table_is_sign_magnitude_in_code_order():
    assert E2M1_VALUES.dtype == np.float32 and E2M1_VALUES.shape == (16,)
    assert E2M1_VALUES[:8].tolist() == GRID
    assert (E2M1_VALUES[8:] == -E2M1_VALUES[:8]).all()
    assert np.signbit(E2M1_VALUES[8]) and not np.signbit(E2M1_VALUES[0])   # 0x8 is -0.0


def test_decode_every_code_matches_bit_fields_and_ml_dtypes():
    codes = np.arange(16, dtype=np.uint8)
    got = decode_e2m1(codes)
    for c in range(16):                                  # s ee m from the bits, bias 1
        s, e, m = c >> 3, (c >> 1) & 3, c & 1
        v = (m * 0.5) if e == 0 else (1 + m / 2) * 2.0 ** (e - 1)
        assert got[c] == (-v if s else v) and np.signbit(got[c]) == bool(s)
    oracle = codes.view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    assert got.view(np.uint32).tolist() == oracle.view(np.uint32).tolist()


@pytest.mark.parametrize("rounding", ["rne", "away", "zero"])
def test_encode_decode_round_trips_every_code(rounding):
    codes = np.arange(16, dtype=np.uint8)
    assert encode_e2m1(decode_e2m1(codes), rounding).tolist() == codes.tolist()


@pytest.mark.parametrize("rounding", ["rne", "away", "zero"])
def test_every_midpoint_and_grid_point_and_one_ulp_either_side(rounding):
    pts = [p for v in MIDPOINTS + GRID + [6.5, 7.0, 8.0, 1e30] for p in f32_neighbours(v)]
    x = np.array(pts + [-p for p in pts], dtype=np.float32)
    got = encode_e2m1(x, rounding)
    want = [brute_force(float(v), rounding) for v in x]
    assert got.tolist() == want


def test_tie_table_from_the_research_notes():
    x = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], np.float32)
    vals = lambda r: decode_e2m1(encode_e2m1(x, r)).tolist()
    assert vals("rne") == [0, 1, 1, 2, 2, 4, 4]
    assert vals("away") == [0.5, 1, 1.5, 2, 3, 4, 6]
    assert vals("zero") == [0, 0.5, 1, 1.5, 2, 3, 4]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("rounding", ["rne", "away", "zero"])
def test_exhaustive_over_every_16_bit_pattern(dtype, rounding):
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(dtype)
    x = x[~np.isnan(x.astype(np.float32))]
    got = encode_e2m1(x, rounding)
    # vectorised brute force: distance to every grid point in float64 (exact)
    m = np.abs(x.astype(np.float64))[:, None]
    g = np.array(GRID)[None, :]
    if rounding == "zero":
        mag = (g <= m).sum(axis=1) - 1
    else:
        d = np.abs(m - g)
        best = d.min(axis=1, keepdims=True)
        is_best = d == best
        lo = is_best.argmax(axis=1)
        hi = 7 - is_best[:, ::-1].argmax(axis=1)
        if rounding == "away":
            mag = hi
        else:
            mag = np.where(lo % 2 == 0, lo, hi)
        mag = np.where(m[:, 0] >= 6.0, 7, mag)          # saturate (also +-inf)
    want = mag | (np.signbit(x.astype(np.float32)).astype(np.int64) << 3)
    assert np.array_equal(got, want.astype(np.uint8))


def test_rne_agrees_with_ml_dtypes_on_random_float32():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-8, 8, 200_000), rng.standard_normal(50_000)]).astype(np.float32)
    oracle = x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0xF
    assert np.array_equal(encode_e2m1(x), oracle)


def test_float64_is_rounded_once_unlike_ml_dtypes():
    x = np.array([0.25 + 2**-40, 0.75 - 2**-40, 2.5 + 2**-40], np.float64)
    assert decode_e2m1(encode_e2m1(x)).tolist() == [0.5, 0.5, 3.0]         # exact RNE
    via_f32 = x.astype(ml_dtypes.float4_e2m1fn).astype(np.float32).tolist()
    assert via_f32 == [0.0, 1.0, 2.0]                                       # double rounding


def test_saturation_infinity_and_signed_zero():
    x = np.array([np.inf, -np.inf, 1e38, -7.0, -0.0, -0.1, 0.0], np.float32)
    assert encode_e2m1(x).tolist() == [7, 15, 7, 15, 8, 8, 0]


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        encode_e2m1(np.array([1.0, np.nan], np.float32))
    with pytest.raises(TypeError, match="x: expected dtype"):
        encode_e2m1(np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match="rounding: unknown value 'nearest'"):
        encode_e2m1(np.zeros(2, np.float32), "nearest")
    with pytest.raises(ValueError, match="codes: expected 4-bit"):
        decode_e2m1(np.array([16], np.uint8))
    with pytest.raises(TypeError, match="codes: expected dtype uint8"):
        decode_e2m1(np.array([1], np.int64))


def test_mx_nearest_differs_from_away_only_below_quarter_and_at_zero():
    from mxfp4ref.rounding import round_magnitude
    grid = np.array(GRID)
    pts = np.array([p for v in MIDPOINTS + GRID for p in f32_neighbours(v)], np.float32)
    pts = pts[pts >= 0]
    mx = round_magnitude(pts, grid, Rounding.MX_NEAREST)
    away = round_magnitude(pts, grid, Rounding.AWAY)
    diff = pts[mx != away]
    assert diff.view(np.uint32).tolist() == [0x3E7FFFFF]        # fl32(0.49999997 + 0.5) == 1
    assert mx[pts == diff[0]].tolist() == [1]


def test_mx_nearest_through_encode_e2m1_drops_the_sign_of_exact_zeros_only():
    x = np.array([-0.0, -0.1, np.float32(0.25) - np.float32(2.0**-26), 2.5], np.float32)
    assert encode_e2m1(x, "mx-nearest").tolist() == [0, 8, 1, 5]
