"""The kernels' arithmetic, compiled for the CPU, equals the NumPy spec byte for byte (no GPU needed).

kernels/mx_common.cuh is all __host__ __device__ integer code; tests/cu_host/harness.cu wraps it in
the naive kernels' loops (and the fast kernels' 8-element chunk functions) and nvcc builds it as a
shared library. This checks the scale rules, element encoders, edge cases and decoders of
kernels/quantize.cu and kernels/dequantize.cu on every QuantConfig field; the GPU tests
(tests/test_gpu_quantize.py) then check the memory movement on a device.
Needs nvcc (FAILS without it, like tests/test_cu_compile.py).
"""
from __future__ import annotations

import ctypes
import dataclasses
import itertools
import pathlib
import random
import subprocess

import ml_dtypes
import numpy as np
import pytest

from mxfp4ref.blocks import dequantize_blocks, quantize_blocks
from mxfp4ref.scales import scale_bytes
from mxfp4ref.config import ElemFormat, QuantConfig
from mxfp4ref.presets import PRESETS
from cupy_kernels._conventions import conv_flags
from cupy_kernels._loader import KERNEL_DIR

from test_cu_compile import find_nvcc

HARNESS = pathlib.Path(__file__).parent / "cu_host" / "harness.cu"
VP = ctypes.c_void_p
LL = ctypes.c_longlong


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.fail("nvcc not found: the host build of the kernels' arithmetic needs the CUDA toolkit")
    so = tmp_path_factory.mktemp("harness") / "harness.so"
    res = subprocess.run([nvcc, "-shared", "-Xcompiler", "-fPIC", "-O2", "-Werror", "all-warnings",
                          f"-I{KERNEL_DIR}", "-o", str(so), str(HARNESS)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return ctypes.CDLL(str(so))


def host_quantize(lib, x32: np.ndarray, cfg: QuantConfig, fast: bool):
    rows, K = x32.shape
    bits = np.ascontiguousarray(x32).view(np.uint32)
    codes = np.zeros((rows, K), np.uint8)
    scales = np.zeros((rows, K // cfg.block_size), np.uint8)
    lib.h_quantize(bits.ctypes.data_as(VP), LL(rows), LL(K), ctypes.c_int(cfg.block_size),
                   ctypes.c_int(conv_flags(cfg)), ctypes.c_int(int(fast)),
                   codes.ctypes.data_as(VP), scales.ctypes.data_as(VP))
    return codes, scales


def spec_quantize(x32, cfg):
    with np.errstate(all="ignore"):
        return quantize_blocks(x32, cfg)


def all_configs():
    fields = [f for f in dataclasses.fields(QuantConfig) if f.name != "block_size"]
    out = []
    for combo in itertools.product(*[list(type(f.default)) for f in fields]):
        try:
            out.append(QuantConfig(**{f.name: v for f, v in zip(fields, combo)}))
        except (TypeError, ValueError):
            pass                                   # combinations QuantConfig itself forbids
    return out


PRESET_CONFIGS = [dataclasses.replace(p.config, elem=e) for p in PRESETS.values() for e in ElemFormat]
SAMPLED_CONFIGS = random.Random(5).sample(all_configs(), 120)


def edge_blocks(rng, rows=1500) -> np.ndarray:
    """float32 (rows, 32): random magnitudes over the whole exponent range (subnormals included),
    grid points and midpoints at every binade, zeros, -0.0, NaN of both signs, +-Inf, huge."""
    with np.errstate(all="ignore"):
        e = rng.integers(-150, 128, size=(rows, 1))
        x = (rng.standard_normal((rows, 32)) * np.exp2(e + rng.integers(-30, 3, size=(rows, 32))))
        x = x.astype(np.float32)
        x[::7] = x[::7].astype(ml_dtypes.bfloat16).astype(np.float32)
        grid = np.array([0, .25, .5, .75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 7.5, 8, 448,
                         464, 480, 57344, 61440], np.float64)
        pick = rng.choice(grid, size=(rows // 4, 32)) * rng.choice([1, -1], size=(rows // 4, 32))
        scale = np.exp2(rng.integers(-150, 128, size=(rows // 4, 1)).astype(np.float64))
        g = (pick * scale).astype(np.float32)
        ulp = rng.integers(-2, 3, size=g.shape).astype(np.int64)          # one or two ulps off
        g = np.where(np.isfinite(g) & (g != 0),
                     (g.view(np.uint32).astype(np.int64) + ulp).astype(np.uint32).view(np.float32), g)
        x[1::4] = g
        x[2::13, 3] = np.nan
        x[3::17, 5] = np.inf
        x[4::19, 1] = -np.inf
        x[5::23] = 0
        x[6::29] = -0.0
        x[7::31, 0] = np.array([0xFFC00000], np.uint32).view(np.float32)[0]   # -NaN
        x[8::37, 2] = np.float32(3.3e38)
        x[9::41, :] = np.float32(1.76 * 2.0 ** 127)
    return x


@pytest.mark.parametrize("cfg", PRESET_CONFIGS + SAMPLED_CONFIGS,
                         ids=lambda c: f"{c.scale_rule.value}-{c.rounding.value}-{c.elem.value}-{conv_flags(c):x}")
def test_quantize_blocks_equal_spec(lib, cfg):
    x = edge_blocks(np.random.default_rng(conv_flags(cfg)))
    want_codes, want_scales = spec_quantize(x, cfg)
    for fast in (False, True):
        codes, scales = host_quantize(lib, x, cfg, fast)
        bad = np.flatnonzero((codes != want_codes).any(1) | (scales != want_scales.reshape(scales.shape)).any(1))
        assert bad.size == 0, (f"fast={fast}: {bad.size} blocks differ; first row {bad[0]}: x={x[bad[0]]}, "
                               f"spec {want_scales[bad[0]]} {want_codes[bad[0]]}, kernel {scales[bad[0]]} {codes[bad[0]]}")


@pytest.mark.parametrize("preset", ["ocp", "torchao-rceil", "triton-round-up", "microxcaling", "quark",
                                    "flashinfer"])
def test_every_bfloat16_and_float16_value(lib, preset):
    """All 2^16 bfloat16 and all 2^16 float16 bit patterns, 32 consecutive patterns per block, and the
    same values in blocks that also hold a large element (so most are scaled far down)."""
    cfg = PRESETS[preset].config
    bf = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).astype(np.float32)
    hf = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    blocks = [bf.reshape(-1, 32), hf.reshape(-1, 32)]
    for big in (np.float32(6.0), np.float32(1e30), np.float32(2.0 ** -100)):
        b = bf.reshape(-1, 32).copy()
        b[:, 0] = big
        blocks.append(b)
    x = np.concatenate(blocks)
    want = spec_quantize(x, cfg)
    for fast in (False, True):
        got = host_quantize(lib, x, cfg, fast)
        assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0]), f"fast={fast}"


def test_log2_float32_below_every_power_of_two(lib):
    """Log2.FLOAT32 (microxcaling): amax a few thousand ulps below 2^k for every k; the kernels'
    correctly rounded float32 log2 must pick the same binade as NumPy's float32 log2."""
    cfg = PRESETS["microxcaling"].config
    tops = np.exp2(np.arange(-125, 128, dtype=np.float64)).astype(np.float32).view(np.uint32)
    amax = (tops[:, None] - np.arange(1, 2049, dtype=np.uint32)[None, :]).view(np.float32).reshape(-1)
    x = np.zeros((amax.size, 32), np.float32)
    x[:, 0] = amax
    x[:, 1] = amax * np.float32(0.3)
    want = spec_quantize(x, cfg)
    got = host_quantize(lib, x, cfg, False)
    assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0])


@pytest.mark.parametrize("preset", ["torchao-rceil", "triton-round-up", "triton-round-down", "quark"])
def test_scale_byte_every_mantissa(lib, preset):
    """The kernels' scale byte (including RCEIL's integer shortcut for E2M1, E >= 4) against the
    spec's scale_bytes for EVERY float32 mantissa of the binades E = 4 (the shortcut's first) and
    254, every 4th mantissa of E = 1, 2, 3, 5, every 16th of E = 100, 200, sampled subnormals, and the
    all-ones mantissa of E = 0..19 (where Log2.QUOTIENT, triton-round-down, carries)."""
    cfg = PRESETS[preset].config
    m = np.arange(1 << 23, dtype=np.uint32)
    amax = np.concatenate([(np.uint32(e) << 23) | m for e in (4, 254)]
                          + [(np.uint32(e) << 23) | m[::4] for e in (1, 2, 3, 5)]
                          + [(np.uint32(e) << 23) | m[::16] for e in (100, 200)]
                          + [m[::97]]
                          + [np.array([(e << 23) | 0x7FFFFF for e in range(20)], np.uint32)])
    out = np.zeros(amax.size, np.uint8)
    lib.h_scale_bytes(amax.ctypes.data_as(VP), LL(amax.size), ctypes.c_int(conv_flags(cfg)),
                      out.ctypes.data_as(VP))
    with np.errstate(all="ignore"):
        want = scale_bytes(amax.view(np.float32), cfg)
    bad = np.flatnonzero(out != want)
    assert bad.size == 0, f"{bad.size} differ, first amax bits {amax[bad[0]]:#x}: {out[bad[0]]} vs {want[bad[0]]}"


def test_dequantize_every_code_and_scale(lib):
    """16 codes x 256 scale bytes, naive and fast decoders, float32 bits and bfloat16 = top half."""
    codes = np.tile(np.arange(16, dtype=np.uint8), 2 * 256).reshape(256, 32)
    scales = np.arange(256, dtype=np.uint8).reshape(256, 1)
    cfg = QuantConfig()
    want = dequantize_blocks(codes, scales, cfg)                      # float32 (256, 32)
    for fast in (0, 1):
        out = np.zeros((256, 32), np.uint32)
        lib.h_dequant_e2m1(codes.ctypes.data_as(VP), scales.ctypes.data_as(VP), LL(256), LL(32),
                           ctypes.c_int(32), ctypes.c_int(fast), out.ctypes.data_as(VP))
        assert np.array_equal(out, want.view(np.uint32)), f"fast={fast}"
        bf = want.astype(ml_dtypes.bfloat16).view(np.uint16)
        assert np.array_equal((out >> 16).astype(np.uint16), bf), f"fast={fast} (bfloat16)"


def test_float16_widening_exhaustive(lib):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.zeros(h.size, np.uint32)
    lib.h_f16_to_f32(h.ctypes.data_as(VP), LL(h.size), out.ctypes.data_as(VP))
    want = h.view(np.float16).astype(np.float32).view(np.uint32)
    nan = np.isnan(h.view(np.float16))
    assert np.array_equal(out[~nan], want[~nan])
    assert np.isnan(out[nan].view(np.float32)).all()


def test_float64_to_float32_rounding(lib):
    rng = np.random.default_rng(3)
    d = np.concatenate([
        rng.standard_normal(20000) * np.exp2(rng.integers(-160, 130, 20000).astype(np.float64)),
        np.float64(np.float32(1.0)) * np.exp2(-149.0) * np.arange(-3, 4) / 2,     # ties at the bottom
        (np.arange(1, 2000, dtype=np.float64) + 0.5) * 2.0 ** -149,                # subnormal ties
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4028235677973366e38, 3.402823669209385e38]),
    ])
    out = np.zeros(d.size, np.uint32)
    lib.h_f64_to_f32(np.ascontiguousarray(d).ctypes.data_as(VP), LL(d.size), out.ctypes.data_as(VP))
    with np.errstate(over="ignore"):
        want = d.astype(np.float32).view(np.uint32)
    assert np.array_equal(out, want)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_bf16_block_function(lib, preset):
    """The one-thread-per-block bfloat16 function (bf16x2 arithmetic, emulated exactly on the host):
    every bfloat16 value, the same values under a large block element, and edge blocks."""
    import mxfp4ref
    cfg = PRESETS[preset].config
    allv = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16).reshape(-1, 32)
    big = allv.copy()
    big[:, 0] = ml_dtypes.bfloat16(6.0)
    edge = edge_blocks(np.random.default_rng(17), rows=600).astype(ml_dtypes.bfloat16)
    x = np.concatenate([allv, big, edge])
    want = mxfp4ref.quantize(x, preset=preset)
    bits = np.ascontiguousarray(x.view(np.uint16))
    nblk = bits.size // 32
    packed = np.zeros(nblk * 16, np.uint8)
    scales = np.zeros(nblk, np.uint8)
    lib.h_quantize_bf16_blocks(bits.ctypes.data_as(VP), LL(nblk), ctypes.c_int(conv_flags(cfg)),
                               packed.ctypes.data_as(VP), scales.ctypes.data_as(VP))
    assert np.array_equal(scales, want.scales.reshape(-1))
    bad = np.flatnonzero((packed.reshape(-1, 16) != want.packed.reshape(-1, 16)).any(1))
    assert bad.size == 0, f"{bad.size} blocks differ, first {bad[0]}: {x.reshape(-1, 32)[bad[0]]}"
