"""E8M0 scale bytes: every byte decodes to 2^(b-127) exactly; 0x00 is the fp32 subnormal 2^-127."""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref import decode_e8m0, encode_e8m0


def test_every_byte_against_exponent_arithmetic_and_ml_dtypes():
    b = np.arange(256, dtype=np.uint8)
    got = decode_e8m0(b)
    assert got.dtype == np.float32
    for i in range(255):
        assert float(got[i]) == 2.0 ** (i - 127)
    assert np.isnan(got[255])
    oracle = b.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    assert np.array_equal(got[:255].view(np.uint32), oracle[:255].view(np.uint32))
    assert np.isnan(oracle[255])


def test_byte_zero_is_the_float32_subnormal_not_zero():
    assert decode_e8m0(np.array([0], np.uint8)).view(np.uint32)[0] == 0x00400000
    assert decode_e8m0(np.array([1], np.uint8)).view(np.uint32)[0] == 0x00800000
    assert decode_e8m0(np.array([254], np.uint8)).view(np.uint32)[0] == 0x7F000000


def test_encode_round_trips_every_exponent():
    e = np.arange(-127, 128)
    b = encode_e8m0(e)
    assert b.dtype == np.uint8 and b.tolist() == list(range(255))
    assert np.array_equal(np.log2(decode_e8m0(b).astype(np.float64)), e)
    assert encode_e8m0(3) == 130 and encode_e8m0([-127]).tolist() == [0]


def test_bad_input():
    with pytest.raises(ValueError, match=r"exponent: expected values in \[-127, 127\], got range \[-128"):
        encode_e8m0([-128, 0])
    with pytest.raises(ValueError, match="exponent"):
        encode_e8m0(np.array([128]))
    with pytest.raises(TypeError, match="exponent: expected integers, got dtype float64"):
        encode_e8m0(np.array([1.0]))
    with pytest.raises(TypeError, match="byte: expected dtype uint8, got int32"):
        decode_e8m0(np.array([1], np.int32))
