"""Nibble packing: element 2i in the low nibble, 2i+1 in the high nibble, along any axis."""
import numpy as np
import pytest

from mxfp4ref import pack_fp4, quantize, unpack_fp4


def test_hand_built_bytes_low_nibble_first():
    codes = np.array([0x1, 0x2, 0xF, 0x0, 0x7, 0x8, 0xA, 0x5], np.uint8)
    packed = pack_fp4(codes)
    assert packed.tolist() == [0x21, 0x0F, 0x87, 0x5A]
    assert unpack_fp4(np.array([0x21, 0x0F, 0x87, 0x5A], np.uint8)).tolist() == codes.tolist()


def test_high_nibble_first_order_is_not_what_we_produce():
    # element 0 = 0x1, element 1 = 0x2: low-nibble-first gives 0x21, the opposite order 0x12
    assert pack_fp4(np.array([1, 2], np.uint8))[0] == 0x21
    assert unpack_fp4(np.array([0x12], np.uint8)).tolist() == [2, 1]


def test_packing_along_axis_zero_pairs_rows():
    codes = np.array([[1, 2, 3],
                      [4, 5, 6]], np.uint8)
    assert pack_fp4(codes, axis=0).tolist() == [[0x41, 0x52, 0x63]]
    assert unpack_fp4(pack_fp4(codes, axis=0), axis=0).tolist() == codes.tolist()


def test_quantize_packs_element_order_of_the_input():
    x = np.zeros(32, np.float32)
    x[0], x[1] = 0.5, -6.0          # codes 0x1 and 0xF at scale 2^0 (amax 6 -> byte 127)
    t = quantize(x)
    assert t.scales.tolist() == [127] and t.packed[0] == 0xF1


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip_random(axis):
    codes = np.random.default_rng(axis).integers(0, 16, (4, 6, 8), dtype=np.uint8)
    p = pack_fp4(codes, axis=axis)
    assert p.shape[axis] == codes.shape[axis] // 2
    assert np.array_equal(unpack_fp4(p, axis=axis), codes)


def test_bad_input():
    with pytest.raises(ValueError, match="must be even, got 3"):
        pack_fp4(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="4-bit"):
        pack_fp4(np.array([16, 0], np.uint8))
    with pytest.raises(TypeError, match="codes: expected dtype uint8, got int64"):
        pack_fp4(np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="axis: 2 is out of range"):
        unpack_fp4(np.zeros((2, 2), np.uint8), axis=2)
