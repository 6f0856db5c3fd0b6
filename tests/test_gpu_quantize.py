"""GPU: cupy_kernels.quantize / dequantize / quantize_mxfp8 equal the NumPy spec byte for byte.

Every test runs the spec (mxfp4ref) and the kernels on the same input and compares bytes (codes and
scales) or bit patterns (dequantized values). Fast and naive kernels are both checked. Marked gpu:
skipped cleanly without a device (tests/conftest.py).
"""
from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

import mxfp4ref
from mxfp4ref.mxfp8 import MXFP8_PRESETS
from mxfp4ref.presets import PRESETS

from test_cu_host import edge_blocks

pytestmark = pytest.mark.gpu

DTYPES = ("float32", "float16", "bfloat16")


@pytest.fixture(scope="module")
def cp():
    import cupy
    return cupy


@pytest.fixture(scope="module")
def ck():
    import cupy_kernels
    return cupy_kernels


def to_dtype(x32: np.ndarray, dtype: str) -> np.ndarray:
    """The spec's input in ``dtype`` (NumPy / ml_dtypes). The edge blocks hold float32 values beyond
    float16's range: they become +-inf in float16 on purpose (both sides then quantize the same inputs)."""
    if dtype == "bfloat16":
        return x32.astype(ml_dtypes.bfloat16)
    with np.errstate(over="ignore"):
        return x32.astype(dtype)


def to_gpu(cp, x: np.ndarray):
    """(GPU array, dtype argument): bfloat16 travels as uint16 bits."""
    if x.dtype == ml_dtypes.bfloat16:
        return cp.asarray(x.view(np.uint16)), "bfloat16"
    return cp.asarray(x), None


def assert_same_mx(got, want, what=""):
    p, s = got.packed.get(), got.scales.get()
    assert s.shape == want.scales.shape and p.shape == want.packed.shape, what
    bad = np.argwhere(s != want.scales)
    assert bad.size == 0, f"{what}: {len(bad)} scale bytes differ, first at {bad[0]}"
    bad = np.argwhere(p != want.packed)
    assert bad.size == 0, f"{what}: {len(bad)} packed bytes differ, first at {bad[0]}"
    assert got.axis == want.axis and tuple(got.shape) == tuple(want.shape)


# ---- quantize: every preset, every input dtype, fast and naive, edge blocks ------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_quantize_presets_edge_blocks(cp, ck, preset, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{preset}{dtype}".encode()))
    x = to_dtype(edge_blocks(rng, rows=1024).reshape(256, 128), dtype)
    want = mxfp4ref.quantize(x, preset=preset)
    xg, dt = to_gpu(cp, x)
    for naive in (False, True):
        assert_same_mx(ck.quantize(xg, preset=preset, dtype=dt, naive=naive), want,
                       f"{preset} {dtype} naive={naive}")


@pytest.mark.parametrize("rounding", ["rne", "away", "zero"])
@pytest.mark.parametrize("scale_rule", ["floor", "ceil", "even", "rceil"])
def test_quantize_rules_and_roundings(cp, ck, scale_rule, rounding):
    rng = np.random.default_rng(7)
    x = edge_blocks(rng, rows=2048).reshape(512, 128)
    want = mxfp4ref.quantize(x, scale_rule=scale_rule, rounding=rounding)
    for naive in (False, True):
        got = ck.quantize(cp.asarray(x), scale_rule=scale_rule, rounding=rounding, naive=naive)
        assert_same_mx(got, want, f"{scale_rule}/{rounding} naive={naive}")


def test_quantize_every_bfloat16_value(cp, ck):
    """All 2^16 bfloat16 patterns, 32 consecutive patterns per block, three presets."""
    x = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).reshape(64, 1024)
    for preset in ("ocp", "triton-round-up", "quark"):
        want = mxfp4ref.quantize(x, preset=preset)
        assert_same_mx(ck.quantize(cp.asarray(x.view(np.uint16)), preset=preset, dtype="bfloat16"),
                       want, preset)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_quantize_any_axis(cp, ck, axis):
    rng = np.random.default_rng(axis + 10)
    shape = [64, 96, 32]
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, shape))).astype(np.float32)
    want = mxfp4ref.quantize(x, axis=axis, preset="torchao-rceil")
    for naive in (False, True):
        assert_same_mx(ck.quantize(cp.asarray(x), axis=axis, preset="torchao-rceil", naive=naive),
                       want, f"axis={axis}")


@pytest.mark.parametrize("shape,axis", [((32,), 0), ((1, 32), -1), ((7, 2880), -1), ((2880, 6), 0),
                                        ((3, 5, 64), 2), ((2, 3, 4, 64), 3), ((64, 1), 0)])
def test_quantize_odd_shapes(cp, ck, shape, axis):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 3).astype(np.float32).astype(ml_dtypes.bfloat16)
    want = mxfp4ref.quantize(x, axis=axis)
    assert_same_mx(ck.quantize(cp.asarray(x.view(np.uint16)), axis=axis, dtype="bfloat16"), want,
                   str(shape))


def test_quantize_block_size_16_and_misaligned_input(cp, ck):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((40, 96))).astype(np.float32)
    want = mxfp4ref.quantize(x, block_size=16)
    assert_same_mx(ck.quantize(cp.asarray(x), block_size=16), want, "block 16")
    # a view starting 8 bytes into an allocation: not 16-byte aligned -> the naive kernel, same bytes
    xb = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    big = cp.zeros(xb.size + 4, cp.uint16)
    big[4:] = cp.asarray(xb.reshape(-1))
    view = big[4:].reshape(xb.shape)
    assert view.data.ptr % 16 != 0
    want = mxfp4ref.quantize(x.astype(ml_dtypes.bfloat16))
    assert_same_mx(ck.quantize(view, dtype="bfloat16"), want, "misaligned")


def test_quantize_large_fast_equals_naive_and_spec_rows(cp, ck):
    """2^28 elements (16384 x 16384 bf16): fast == naive on the GPU, and spot rows == the spec."""
    rows, cols = 16384, 16384
    rs = cp.random.RandomState(11)
    x = (rs.standard_normal((rows, cols), dtype=cp.float32)
         * cp.exp2(rs.randint(-40, 40, (rows, 1)).astype(cp.float32)))
    xb = (x.view(cp.uint32) >> 16).astype(cp.uint16)
    del x
    fast = ck.quantize(xb, dtype="bfloat16", preset="triton-round-up")
    naive = ck.quantize(xb, dtype="bfloat16", preset="triton-round-up", naive=True)
    assert bool(cp.array_equal(fast.packed, naive.packed)) and bool(cp.array_equal(fast.scales, naive.scales))
    pick = [0, 1, 4097, rows // 2, rows - 1]
    host = xb[pick].get().view(ml_dtypes.bfloat16)
    want = mxfp4ref.quantize(host, preset="triton-round-up")
    assert np.array_equal(fast.packed[pick].get(), want.packed)
    assert np.array_equal(fast.scales[pick].get(), want.scales)


# ---- inputs that speak DLPack / CUDA array interface, and bad input ----------------------------------

def test_quantize_torch_tensors(cp, ck):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 256)) * 10).astype(np.float32)
    for tdt, ndt in ((torch.bfloat16, ml_dtypes.bfloat16), (torch.float16, np.float16),
                     (torch.float32, np.float32)):
        t = torch.from_numpy(x).to("cuda").to(tdt)
        want = mxfp4ref.quantize(x.astype(ndt), preset="flashinfer")
        assert_same_mx(ck.quantize(t, preset="flashinfer"), want, str(tdt))


def test_quantize_bad_input(cp, ck):
    x = cp.zeros((4, 64), cp.float32) + 1
    with pytest.raises(ValueError, match="contiguous"):
        ck.quantize(x[:, ::2])
    with pytest.raises(TypeError, match="numpy.ndarray"):
        ck.quantize(np.ones((4, 64), np.float32))
    with pytest.raises(TypeError, match="bfloat16"):
        ck.quantize(cp.zeros((4, 64), cp.uint16))
    with pytest.raises(TypeError, match="dtype"):
        ck.quantize(x, dtype="bfloat16")
    with pytest.raises(TypeError, match="float64"):
        ck.quantize(cp.zeros((4, 64), cp.float64))
    with pytest.raises(ValueError, match="multiple of block_size"):
        ck.quantize(cp.zeros((4, 48), cp.float32))
    with pytest.raises(ValueError, match="preset"):
        ck.quantize(x, preset="nope")
    with pytest.raises(ValueError, match="axis"):
        ck.quantize(x, axis=2)


# ---- dequantize -------------------------------------------------------------------------------------

def _spec_bits(y: np.ndarray) -> np.ndarray:
    return y.view(np.uint16 if y.dtype.itemsize == 2 else np.uint32)


@pytest.mark.parametrize("out", ["float32", "bfloat16"])
def test_dequantize_every_code_and_scale(cp, ck, out):
    codes = np.tile(np.arange(16, dtype=np.uint8), 2 * 256).reshape(256, 32)
    packed = mxfp4ref.pack_fp4(codes)
    scales = np.arange(256, dtype=np.uint8).reshape(256, 1)
    dt = np.float32 if out == "float32" else ml_dtypes.bfloat16
    want = _spec_bits(mxfp4ref.dequantize(packed, scales, dtype=dt))
    for naive in (False, True):
        got = ck.dequantize(cp.asarray(packed), cp.asarray(scales), dtype=out, naive=naive).get()
        assert np.array_equal(got.view(want.dtype), want), f"naive={naive}"


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("out", ["float32", "bfloat16"])
def test_dequantize_random_any_axis(cp, ck, axis, out):
    rng = np.random.default_rng(axis)
    shape = [64, 64, 64]
    pshape = list(shape)
    pshape[axis] //= 2
    sshape = list(shape)
    sshape[axis] //= 32
    packed = rng.integers(0, 256, pshape, dtype=np.uint8)
    scales = rng.integers(0, 256, sshape, dtype=np.uint8)
    dt = np.float32 if out == "float32" else ml_dtypes.bfloat16
    want = _spec_bits(mxfp4ref.dequantize(packed, scales, axis=axis, dtype=dt))
    for naive in (False, True):
        got = ck.dequantize(cp.asarray(packed), cp.asarray(scales), axis=axis, dtype=out, naive=naive)
        assert np.array_equal(got.get().view(want.dtype), want), f"naive={naive}"


def test_dequantize_roundtrip_and_bad_input(cp, ck):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((32, 2880))).astype(np.float32)
    q = ck.quantize(cp.asarray(x), preset="ocp")
    want = mxfp4ref.quantize(x, preset="ocp").dequantize()
    assert np.array_equal(q.dequantize().get().view(np.uint32), want.view(np.uint32))
    with pytest.raises(TypeError, match="uint8"):
        ck.dequantize(q.packed.astype(cp.int8), q.scales)
    with pytest.raises(ValueError, match="scales"):
        ck.dequantize(q.packed, q.scales[:, :-1])
    with pytest.raises(TypeError, match="dtype"):
        ck.dequantize(q.packed, q.scales, dtype=np.float16)


# ---- MXFP8 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("preset", list(MXFP8_PRESETS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_mxfp8(cp, ck, fmt, preset, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{fmt}{preset}{dtype}".encode()))
    x = to_dtype(edge_blocks(rng, rows=512).reshape(128, 128), dtype)
    want = mxfp4ref.quantize_mxfp8(x, fmt=fmt, preset=preset)
    xg, dt = to_gpu(cp, x)
    for naive in (False, True):
        got = ck.quantize_mxfp8(xg, fmt=fmt, preset=preset, dtype=dt, naive=naive)
        assert np.array_equal(got.scales.get(), want.scales), f"naive={naive} scales"
        assert np.array_equal(got.data.get(), want.data), f"naive={naive} data"


def test_quantize_mxfp8_axis0(cp, ck):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 40)) * 100).astype(np.float32)
    want = mxfp4ref.quantize_mxfp8(x, axis=0)
    got = ck.quantize_mxfp8(cp.asarray(x), axis=0)
    assert np.array_equal(got.data.get(), want.data) and np.array_equal(got.scales.get(), want.scales)
