"""quantize / dequantize / MXFP4Tensor: shapes, axes, dtypes, round trips and bad input."""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref import MXFP4Tensor, decode_e2m1, dequantize, quantize, unpack_fp4
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


# ---------------------------------------------------------------- inputs and dtypes

def test_float16_and_bfloat16_are_widened_exactly():
    rng = np.random.default_rng(4)
    x32 = rng.standard_normal((8, 64)).astype(np.float32)
    for dt in (np.float16, ml_dtypes.bfloat16):
        x = x32.astype(dt)
        a, b = quantize(x), quantize(x.astype(np.float32))
        assert np.array_equal(a.packed, b.packed) and np.array_equal(a.scales, b.scales)


def test_float64_accepted_only_when_exactly_float32():
    x = np.random.default_rng(5).standard_normal((2, 32)).astype(np.float32)
    a = quantize(x.astype(np.float64))
    assert np.array_equal(a.packed, quantize(x).packed)
    bad = x.astype(np.float64)
    bad[1, 3] += 2.0 ** -40
    with pytest.raises(ValueError, match=r"x: float64 input must be exactly representable in "
                                         r"float32.*element 35.*x.astype\(np.float32\)"):
        quantize(bad)


def test_non_contiguous_input_is_read_correctly():
    x = np.random.default_rng(6).standard_normal((64, 64)).astype(np.float32)
    a = quantize(x.T)                       # a transposed view
    b = quantize(np.ascontiguousarray(x.T))
    assert np.array_equal(a.packed, b.packed) and np.array_equal(a.scales, b.scales)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ml_dtypes.bfloat16])
def test_dequantize_dtypes_are_one_rounding_of_the_exact_value(dtype):
    x = np.random.default_rng(7).standard_normal((4, 64)).astype(np.float32) * 1e3
    t = quantize(x)
    exact = t.dequantize(np.float64)
    y = t.dequantize(dtype)
    assert y.dtype == np.dtype(dtype)
    assert np.array_equal(y, exact.astype(dtype))


def test_dequantize_overflow_and_nan_scale():
    packed = np.array([[0x07, 0x00] + [0] * 14, [0x01] + [0] * 15], np.uint8)   # codes 7 (6.0), 1
    scales = np.array([[254], [255]], np.uint8)
    y32 = dequantize(packed, scales)
    assert y32[0, 0] == np.inf and y32[0, 1] == 0            # 6 * 2^127 overflows float32
    assert dequantize(packed, scales, dtype=np.float64)[0, 0] == 6 * 2.0 ** 127
    assert np.isnan(y32[1]).all()                             # 0xFF: the whole block is NaN


def test_block_size_other_than_32():
    x = np.arange(-8, 8, dtype=np.float32).reshape(2, 8) / 2
    t = quantize(x, block_size=8)
    assert t.scales.shape == (2, 1) and t.block_size == 8
    assert np.array_equal(t.dequantize(), dequantize(t.packed, t.scales, block_size=8))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("call, exc, msg", [
    (lambda: quantize(np.zeros(31, np.float32)), ValueError,
     r"x: the \(logical\) length along axis 0 must be a multiple of block_size=32, got 31"),
    (lambda: quantize(np.zeros(32, np.int32)), TypeError, r"x: expected dtype .*got int32"),
    (lambda: quantize([0.0] * 32), TypeError, r"x: expected a numpy.ndarray .*got list"),
    (lambda: quantize(np.zeros(32, np.float32), scale_rule="round"), ValueError,
     r"scale_rule: unknown value 'round'; expected one of \['floor', 'ceil', 'even', 'rceil'\]"),
    (lambda: quantize(np.zeros(32, np.float32), rounding="up"), ValueError,
     r"rounding: unknown value 'up'"),
    (lambda: quantize(np.zeros(32, np.float32), axis=1), ValueError, r"axis: 1 is out of range"),
    (lambda: quantize(np.zeros(32, np.float32), backend="cuda"), ValueError,
     r"backend: unknown value 'cuda'"),
    (lambda: quantize(np.zeros(32, np.float32), block_size=0), ValueError,
     r"block_size: expected a positive int, got 0"),
    (lambda: quantize(np.zeros(33, np.float32), block_size=3), ValueError, r"block_size: .*even"),
    (lambda: quantize(np.array(1.0, np.float32)), ValueError, r"x: expected at least one"),
    (lambda: dequantize(np.zeros((2, 16), np.uint8), np.zeros((2, 2), np.uint8)), ValueError,
     r"scales: expected shape \(2, 1\) .*got \(2, 2\)"),
    (lambda: dequantize(np.zeros((2, 16), np.uint8), np.zeros((1, 1), np.uint8)), ValueError,
     r"scales: expected shape \(2, 1\)"),
    (lambda: dequantize(np.zeros((2, 16), np.uint8), np.zeros(2, np.uint8)), ValueError,
     r"scales: expected shape \(2, 1\)"),
    (lambda: dequantize(np.zeros((2, 15), np.uint8), np.zeros((2, 1), np.uint8)), ValueError,
     r"packed: the \(logical\) length along axis 1 must be a multiple of block_size=32, got 30"),
    (lambda: dequantize(np.zeros((2, 16), np.int8), np.zeros((2, 1), np.uint8)), TypeError,
     r"packed: expected dtype uint8, got int8"),
    (lambda: dequantize(np.zeros((2, 16), np.uint8), np.zeros((2, 1), np.float32)), TypeError,
     r"scales: expected dtype uint8, got float32"),
    (lambda: dequantize(np.zeros((2, 16), np.uint8), np.zeros((2, 1), np.uint8), dtype=np.int32),
     TypeError, r"dtype: expected one of"),
])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


# ---------------------------------------------------------------- properties (hypothesis)

from hypothesis import given, settings, strategies as st            # noqa: E402
from hypothesis.extra import numpy as hnp                           # noqa: E402

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
blocks_f32 = hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.sampled_from([32, 64])),
                        elements=finite_f32)
RULES = ["floor", "ceil", "even", "rceil"]


@settings(max_examples=200, deadline=None)
@given(x=blocks_f32, rule=st.sampled_from(RULES))
def test_round_trip_error_within_half_a_step(x, rule):
    t = quantize(x, scale_rule=rule)                       # RNE
    y = t.dequantize(np.float64)                           # exact values
    X = np.repeat(np.ldexp(1.0, t.scales.astype(np.int64) - 127), 32, axis=-1)   # block scales
    v = np.abs(x.astype(np.float64)) / X                   # exact scaled magnitude
    step = np.where(v < 2, 0.5, np.where(v < 4, 1.0, 2.0))   # E2M1 grid spacing around v
    clipped = v > 7                                        # beyond 6 + half a step
    assert (np.abs(y - x) <= step / 2 * X)[~clipped].all()
    assert (np.abs(y) <= 6 * X).all()
    if rule != "floor":                                    # only FLOOR clips the block max
        assert not clipped.any()


@settings(max_examples=150, deadline=None)
@given(x=blocks_f32, rule=st.sampled_from(RULES), rounding=st.sampled_from(["rne", "away", "zero"]))
def test_quantize_is_idempotent_on_its_own_output(x, rule, rounding):
    t = quantize(x, scale_rule=rule, rounding=rounding)
    y = t.dequantize()
    if not np.isfinite(y).all():          # top binade: 6 * 2^127 is not a float32
        return
    t2 = quantize(y, scale_rule=rule, rounding=rounding)
    assert np.array_equal(t2.dequantize(), y)


@settings(max_examples=100, deadline=None)
@given(codes=hnp.arrays(np.uint8, (2, 32), elements=st.integers(0, 15)),
       scale=st.integers(1, 250))
def test_quantize_recovers_codes_of_a_block_whose_max_is_6(codes, scale):
    codes[:, 0] = 7                                           # the block max is 6 * 2^(s-127)
    x = decode_e2m1(codes) * np.float32(2.0 ** (scale - 127))
    for rule in ("floor", "even", "rceil"):                   # (CEIL takes 2^ceil(log2 6) = 8)
        t = quantize(x, scale_rule=rule)
        assert (t.scales == scale).all(), rule
        assert np.array_equal(unpack_fp4(t.packed), codes), rule


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("shape", [(3, 0), (0,), (0, 32)])
def test_empty_inputs_give_empty_outputs(shape, backend):
    """Zero-length block axis or zero rows: empty packed/scales of the right shapes, no reshape error."""
    q = quantize(np.zeros(shape, np.float32), backend=backend)
    assert q.packed.shape == shape[:-1] + (shape[-1] // 2,)
    assert q.scales.shape == shape[:-1] + (shape[-1] // 32,)
    assert q.dequantize().shape == shape
