"""MXFP8 (E4M3 / E5M2 elements): element casts against ml_dtypes, scales with the format's emax."""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref.config import ElemFormat
from mxfp4ref.fp8 import E4M3_GRID, E5M2_GRID, decode_fp8
from mxfp4ref.mxfp8 import MXFP8Tensor, dequantize_mxfp8, quantize_mxfp8

ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_every_code_decodes_like_ml_dtypes(fmt):
    codes = np.arange(256, dtype=np.uint8)
    ours = decode_fp8(codes, fmt)
    theirs = codes.view(ML[fmt]).astype(np.float64)
    same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))
    assert same.all()
    assert np.array_equal(np.signbit(ours[~np.isnan(ours)]), np.signbit(theirs[~np.isnan(theirs)]))


def test_format_constants():
    assert E4M3_GRID[-1] == 448 and ElemFormat.E4M3.emax == 8
    assert E5M2_GRID[-1] == 57344 and ElemFormat.E5M2.emax == 15


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_element_cast_is_ml_dtypes_rne_with_saturation(fmt):
    # a block whose scale is 2^0 (byte 127): amax with exponent emax; elements = the cast itself
    rng = np.random.default_rng(1)
    emax = ElemFormat(fmt).emax
    top = ElemFormat(fmt).max_value
    x = rng.uniform(-top, top, (4000, 32)).astype(np.float32)
    x = np.concatenate([x, (rng.standard_normal((4000, 32)) * 2.0 ** rng.integers(-20, emax - 3, (4000, 1))
                            ).astype(np.float32)])
    x[:, 0] = np.float32(2.0 ** emax)                       # pin the scale to byte 127 (FLOOR)
    t = quantize_mxfp8(x, fmt=fmt)
    assert (t.scales == 127).all()
    oracle = x.astype(ML[fmt]).view(np.uint8)               # float32 in: one rounding
    assert np.array_equal(t.data, oracle)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("rule", ["floor", "ceil", "even", "rceil"])
def test_round_trip_and_tensor(fmt, rule):
    x = np.random.default_rng(2).standard_normal((3, 64, 2)).astype(np.float32) * 1e-3
    t = quantize_mxfp8(x, axis=1, fmt=fmt, scale_rule=rule)
    assert isinstance(t, MXFP8Tensor) and t.data.shape == x.shape and t.scales.shape == (3, 2, 2)
    y = t.dequantize()
    assert np.array_equal(y, dequantize_mxfp8(t.data, t.scales, axis=1, fmt=fmt))
    rel = np.abs(y - x) / np.abs(x).max()
    assert rel.max() < (2.0 ** -3 if fmt == "e4m3" else 2.0 ** -2)   # <= half a step of 1.xxx


def test_floor_saturates_e4m3_max_and_nan_stays_nan():
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2] = 500.0, 448.0, np.nan                  # 500 = 1.95 * 2^8: FLOOR keeps 2^0
    t = quantize_mxfp8(x, fmt="e4m3", preset="ocp")
    assert t.scales.tolist() == [255]                        # NaN in the block -> NaN scale
    x[2] = 1.0
    t = quantize_mxfp8(x, fmt="e4m3")
    assert t.scales.tolist() == [127] and t.data[:3].tolist() == [0x7E, 0x7E, 0x38]


def test_bad_input():
    x = np.zeros(32, np.float32)
    with pytest.raises(ValueError, match="fmt: unknown value 'e2m1'"):
        quantize_mxfp8(x, fmt="e2m1")
    with pytest.raises(ValueError, match="preset: 'quark' is not defined for MXFP8"):
        quantize_mxfp8(x, preset="quark")
    with pytest.raises(ValueError, match=r"scales: expected shape \(1,\)"):
        dequantize_mxfp8(np.zeros(32, np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="multiple of block_size=32, got 30"):
        quantize_mxfp8(np.zeros(30, np.float32))
