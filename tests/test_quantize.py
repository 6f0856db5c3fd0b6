"""quantize / dequantize / MXFP4Tensor: shapes, axes, dtypes, round trips and bad input."""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref import MXFP4Tensor, dequantize, quantize, unpack_fp4
from mxfp4ref.blocks import quantize_blocks
from mxfp4ref.config import QuantConfig


def block(head):
    x = np.zeros(32, np.float32)
    x[:len(head)] = head
    return x


def test_block_b1_ties_at_scale_one():
    # mx-conventions.md block B1: amax 6 -> byte 127, RNE ties
    x = block([6, 5, 3.5, 2.5, 1.75, 1.25, 0.75, 0.25, -0.25, -0.1, 0.3])
    t = quantize(x)
    assert t.scales.tolist() == [127]
    codes = unpack_fp4(t.packed)
    assert codes[:11].tolist() == [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1]
    assert t.dequantize()[:11].tolist() == [6, 4, 4, 2, 2, 1, 1, 0, -0.0, -0.0, 0.5]


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_any_axis_equals_moving_the_axis_last(axis):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 64, 32)).astype(np.float32)
    t = quantize(x, axis=axis)
    ref = quantize(np.moveaxis(x, axis, -1).copy())
    assert np.array_equal(np.moveaxis(t.packed, axis, -1), ref.packed)
    assert np.array_equal(np.moveaxis(t.scales, axis, -1), ref.scales)
    assert t.shape == x.shape and t.axis == axis % 3
    y = t.dequantize()
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.array_equal(np.moveaxis(y, axis, -1), ref.dequantize())


def test_tensor_fields_and_free_dequantize_agree():
    x = np.random.default_rng(2).standard_normal((4, 96)).astype(np.float32)
    t = quantize(x, scale_rule="rceil")
    assert isinstance(t, MXFP4Tensor)
    assert t.packed.shape == (4, 48) and t.packed.dtype == np.uint8
    assert t.scales.shape == (4, 3) and t.scales.dtype == np.uint8
    assert np.array_equal(t.dequantize(), dequantize(t.packed, t.scales, axis=-1))


def test_kernel_boundary_shapes():
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    codes, sb = quantize_blocks(x, QuantConfig())
    assert codes.shape == (5, 64) and codes.dtype == np.uint8 and codes.max() <= 15
    assert sb.shape == (5, 2) and sb.dtype == np.uint8
