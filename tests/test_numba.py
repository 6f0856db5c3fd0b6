"""The numba backend gives the NumPy spec's bytes, bit for bit, on every input and every config.

Reference: mxfp4ref/blocks.py (the spec). Under test: mxfp4ref/_numba_quant.py (same boundary
functions) and the public quantize/dequantize with backend="numba". Inputs: exhaustive small
domains (all 2^16 bfloat16 bit patterns, every float32 within 64 ulps of each grid point and
midpoint at scale 1, every exponent with every boundary significand as block amax, every
(code, scale byte) pair), named edge blocks, and hypothesis-random bit patterns over the whole
float32 range. Configs: every preset x every element format, every value of each QuantConfig field,
and a seeded sample of the full product of fields.
"""
from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mxfp4ref
from mxfp4ref import blocks
from mxfp4ref import _numba_quant as nq
from mxfp4ref.config import ElemFormat, NonFinite, QuantConfig
from mxfp4ref.presets import PRESETS
from mxfp4ref.scales import ScaleRule

F32 = np.float32


def f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


# --------------------------------------------------------------------------- configs

# every enum field of QuantConfig with all its members (new fields are picked up automatically)
FIELDS = {f.name: list(type(f.default)) for f in dataclasses.fields(QuantConfig)
          if f.name != "block_size"}


def make_config(**kw):
    """QuantConfig or None where the combination is invalid (QuantConfig rejects it)."""
    try:
        return QuantConfig(**kw)
    except (ValueError, TypeError):
        return None


def all_valid_configs():
    out = []
    for values in itertools.product(*FIELDS.values()):
        cfg = make_config(**dict(zip(FIELDS, values)))
        if cfg is not None:
            out.append(cfg)
    return out


ALL_CONFIGS = all_valid_configs()


def preset_configs():
    """Every preset with every element format (MXFP8 reuses the preset's conventions)."""
    return [pytest.param(dataclasses.replace(p.config, elem=e), id=f"{name}-{e.value}")
            for name, p in PRESETS.items() for e in ElemFormat]


def one_field_configs():
    """The default config with one field changed to each of its values."""
    out = []
    for name, values in FIELDS.items():
        for v in values:
            base = {"scale_rule": ScaleRule.RCEIL} if name in ("descale", "subnormal_descale") else {}
            if name == "nonfinite" and v is NonFinite.TRITON:
                base = {"scale_rule": ScaleRule.RCEIL}
            cfg = make_config(**{**base, name: v})
            if cfg is not None:
                out.append(pytest.param(cfg, id=f"{name}={v.value}"))
    return out


def sampled_configs(n=40, seed=1):
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ALL_CONFIGS), size=n, replace=False)
    return [pytest.param(ALL_CONFIGS[i], id=f"product{i}") for i in sorted(idx)]


CONFIGS = preset_configs() + one_field_configs() + sampled_configs()


# --------------------------------------------------------------------------- inputs


def bf16_all_patterns() -> np.ndarray:
    """Every bfloat16 bit pattern as float32 (NaNs, infs, subnormals, zeros), 32 per block."""
    return f32(np.arange(1 << 16, dtype=np.uint32) << 16).reshape(-1, 32)


def ulps_around_grid(elem: ElemFormat) -> np.ndarray:
    """Every float32 within 64 ulps of each grid point and midpoint, signed, in blocks whose amax
    puts them at scale 1 under FLOOR/EVEN (a grid max in lane 0), or close to it otherwise."""
    grid = elem.grid
    pts = np.unique(np.concatenate([grid, (grid[1:] + grid[:-1]) / 2])).astype(np.float32)
    bits = pts.view(np.uint32).astype(np.int64)
    near = (bits[:, None] + np.arange(-64, 65)[None, :]).ravel()
    near = near[(near >= 0) & (near < 0x7F800000)]
    vals = f32(near)
    vals = np.concatenate([vals, -vals])
    pad = (-len(vals)) % 31
    vals = np.concatenate([vals, np.zeros(pad, np.float32)]).reshape(-1, 31)
    lead = np.full((len(vals), 1), np.float32(elem.max_value))
    return np.concatenate([lead, vals], axis=1)


def amax_boundaries() -> np.ndarray:
    """Block amax = every exponent field 0..255 x boundary mantissas (1, 1.5, 1.75, 2-ulp, the
    EVEN/RCEIL carries, subnormal-descale edges), the other 31 values a fixed spread below it."""
    mants = [0x000000, 0x000001, 0x1FFFFF, 0x200000, 0x3FFFFF, 0x400000, 0x400001, 0x55554F,
             0x555555, 0x555556, 0x5FFFFF, 0x600000, 0x600001, 0x7FFFFE, 0x7FFFFF]
    amax = np.array([(e << 23) | m for e in range(256) for m in mants], np.uint32)
    frac = np.linspace(-1, 1, 31).astype(np.float64)
    a = f32(amax).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        rest = (a[:, None] * frac[None, :]).astype(np.float32)
    return np.concatenate([f32(amax)[:, None], rest], axis=1)


def edge_blocks() -> np.ndarray:
    nan, inf, tiny = F32(np.nan), F32(np.inf), f32(1)[()]
    z = np.zeros(32, np.float32)
    rows = [z, np.full(32, -0.0, np.float32), np.full(32, tiny), np.full(32, -tiny),
            np.full(32, nan), np.full(32, -nan), np.full(32, inf), np.full(32, -inf),
            np.full(32, np.finfo(np.float32).max), np.full(32, F32(1.75 * 2.0 ** 127)),
            f32(np.arange(32, dtype=np.uint32) + 0x007FFFE0), f32(np.arange(32, dtype=np.uint32) * 7 + 1)]
    for special in (nan, -nan, inf, -inf, f32(0x7F800001)[()], f32(0xFFFFFFFF)[()]):
        for base in (1.0, 3e38, 1e-40, 0.0):
            r = (np.linspace(-6, 6, 32) * base).astype(np.float32)
            r[7] = special
            rows.append(r)
    r = np.linspace(-6, 6, 32).astype(np.float32); r[0], r[1] = nan, inf; rows.append(r)
    r = np.linspace(-6, 6, 32).astype(np.float32); r[0], r[1] = inf, -inf; rows.append(r)
    return np.array(rows, np.float32)


def exhaustive_inputs(elem: ElemFormat) -> np.ndarray:
    return np.concatenate([bf16_all_patterns(), ulps_around_grid(elem), amax_boundaries(),
                           edge_blocks()])


_INPUTS = {}


def inputs_for(elem):
    if elem not in _INPUTS:
        _INPUTS[elem] = exhaustive_inputs(elem)
    return _INPUTS[elem]


# --------------------------------------------------------------------------- comparisons


def assert_same_quantize(x: np.ndarray, cfg: QuantConfig):
    c_ref, s_ref = blocks.quantize_blocks(x, cfg)
    c_nb, s_nb = nq.quantize_blocks(x, cfg)
    assert c_nb.dtype == np.uint8 and s_nb.dtype == np.uint8
    assert c_nb.shape == c_ref.shape and s_nb.shape == s_ref.shape
    bad_s = np.flatnonzero((s_ref != s_nb).ravel())
    assert bad_s.size == 0, (f"scale byte differs for {bad_s.size} blocks; first block "
                             f"{bad_s[0]}: x bits {x.reshape(-1, cfg.block_size)[bad_s[0]].view(np.uint32)}"
                             f" numpy {s_ref.ravel()[bad_s[0]]} numba {s_nb.ravel()[bad_s[0]]}")
    bad = np.flatnonzero((c_ref != c_nb).ravel())
    assert bad.size == 0, (f"{bad.size} codes differ; first at flat index {bad[0]}: x "
                           f"{x.ravel()[bad[0]]!r} (bits {x.ravel()[bad[0]:bad[0]+1].view(np.uint32)[0]:#010x}),"
                           f" numpy {c_ref.ravel()[bad[0]]:#04x} numba {c_nb.ravel()[bad[0]]:#04x}")
    return c_ref, s_ref


def assert_same_dequantize(codes, sbytes, cfg):
    ref = blocks.dequantize_blocks(codes, sbytes, cfg)
    got = nq.dequantize_blocks(codes, sbytes, cfg)
    assert got.dtype == np.float32 and got.shape == ref.shape
    same = ref.view(np.uint32) == got.view(np.uint32)
    bad = np.flatnonzero(~same.ravel())
    assert bad.size == 0, (f"{bad.size} values differ; first: code {codes.ravel()[bad[0]]:#04x} "
                           f"numpy {ref.ravel()[bad[0]]!r} numba {got.ravel()[bad[0]]!r}")


# --------------------------------------------------------------------------- exhaustive tests


@pytest.mark.parametrize("cfg", CONFIGS)
def test_exhaustive_domains_every_config(cfg):
    x = inputs_for(cfg.elem)
    if cfg.block_size != 32:  # pragma: no cover - all CONFIGS use 32
        pytest.skip("block size")
    codes, sbytes = assert_same_quantize(x, cfg)
    assert_same_dequantize(codes, sbytes, cfg)


@pytest.mark.parametrize("elem", list(ElemFormat), ids=lambda e: e.value)
def test_dequantize_every_code_and_scale_byte(elem):
    """Every (element code, scale byte) pair: byte b in row b, codes cycling through all codes."""
    n_codes = 16 if elem is ElemFormat.E2M1 else 256
    cfg = QuantConfig(elem=elem)
    codes = np.tile(np.arange(n_codes, dtype=np.uint8), (256, 1))          # (256, n_codes)
    sbytes = np.repeat(np.arange(256, dtype=np.uint8)[:, None], n_codes // 16, axis=1)
    cfg = dataclasses.replace(cfg, block_size=16)
    assert_same_dequantize(codes, sbytes, cfg)


@pytest.mark.parametrize("block_size", [1, 2, 8, 64, 96])
@pytest.mark.parametrize("preset", ["ocp", "torchao-rceil", "triton-round-up", "microxcaling", "quark"])
def test_other_block_sizes(block_size, preset):
    cfg = dataclasses.replace(PRESETS[preset].config, block_size=block_size)
    x = bf16_all_patterns().reshape(-1)[: (65536 // 192) * 192].reshape(-1, 192)
    codes, sbytes = assert_same_quantize(x, cfg)
    assert_same_dequantize(codes, sbytes, cfg)


def test_boundary_rejects_bad_arguments():
    cfg = QuantConfig()
    with pytest.raises(TypeError, match="x: expected a 2-D float32"):
        nq.quantize_blocks(np.zeros((2, 32), np.float64), cfg)
    with pytest.raises(ValueError, match="multiple of block_size=32"):
        nq.quantize_blocks(np.zeros((2, 48), np.float32), cfg)
    with pytest.raises(ValueError, match=r"scale_bytes: expected shape \(2, 1\)"):
        nq.dequantize_blocks(np.zeros((2, 32), np.uint8), np.zeros((2, 2), np.uint8), cfg)
    with pytest.raises(ValueError, match="codes: expected 4-bit"):
        nq.dequantize_blocks(np.full((1, 32), 16, np.uint8), np.zeros((1, 1), np.uint8), cfg)


# --------------------------------------------------------------------------- hypothesis


def random_blocks(rng, rows, K, zero_frac=0.05):
    """float32 (rows, K): per block a random top exponent and elements up to 40 binades below it,
    random mantissas and signs (so zeros, NaN, Inf and subnormals all occur), some exact zeros."""
    nb = rows * K // 32
    top = rng.integers(0, 256, (nb, 1))
    exp = np.clip(top - rng.integers(0, 40, (nb, 32)), 0, 255).astype(np.uint32)
    bits = (rng.integers(0, 2, (nb, 32), dtype=np.uint32) << 31) | (exp << 23) | \
        rng.integers(0, 1 << 23, (nb, 32), dtype=np.uint32)
    x = f32(bits).copy()
    x[rng.random((nb, 32)) < zero_frac] = 0.0
    return x.reshape(rows, K)


@st.composite
def inputs_and_config(draw):
    rows = draw(st.integers(1, 4))
    K = 32 * draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = random_blocks(rng, rows, K, draw(st.sampled_from([0.0, 0.05, 0.5])))
    cfg = draw(st.sampled_from(ALL_CONFIGS))
    return x, cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs_and_config())
def test_hypothesis_random_blocks_any_config(data):
    x, cfg = data
    codes, sbytes = assert_same_quantize(x, cfg)
    assert_same_dequantize(codes, sbytes, cfg)


@settings(max_examples=150, deadline=None)
@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=32, max_size=32),
       cfg=st.sampled_from(ALL_CONFIGS))
def test_hypothesis_arbitrary_bit_patterns(bits, cfg):
    """One block of any 32 float32 bit patterns (NaN payloads, -NaN, infs, subnormals)."""
    assert_same_quantize(f32(bits).reshape(1, 32), cfg)


# --------------------------------------------------------------------------- public API


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), preset=st.sampled_from(sorted(PRESETS)),
       dtype=st.sampled_from(["float32", "bfloat16", "float16"]), axis=st.sampled_from([0, 1, -1]))
def test_public_quantize_backends_agree(seed, preset, dtype, axis):
    """quantize(..., backend=...) on float32 / bfloat16 / float16 arrays, along any axis."""
    rng = np.random.default_rng(seed)
    shape = [2, 3, 5]
    shape[axis] = 64
    x32 = random_blocks(rng, 1, 32 * 30).reshape(-1)[: np.prod(shape)].reshape(shape)
    x = x32.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    a = mxfp4ref.quantize(x, axis=axis, preset=preset)
    b = mxfp4ref.quantize(x, axis=axis, preset=preset, backend="numba")
    assert np.array_equal(a.packed, b.packed) and np.array_equal(a.scales, b.scales)
    da = a.dequantize(np.float32)
    db = b.dequantize(np.float32, backend="numba")
    assert np.array_equal(da.view(np.uint32), db.view(np.uint32))


def test_public_quantize_bf16_every_pattern():
    """All 2^16 bfloat16 values through the public API, every preset."""
    x = (np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)).view(ml_dtypes.bfloat16)
    x = x.reshape(-1, 64)
    for preset in PRESETS:
        a = mxfp4ref.quantize(x, preset=preset)
        b = mxfp4ref.quantize(x, preset=preset, backend="numba")
        assert np.array_equal(a.packed, b.packed), preset
        assert np.array_equal(a.scales, b.scales), preset


def test_bench_smoke():
    """python -m mxfp4ref.bench runs (tiny size), checks the backends agree and prints both."""
    out = subprocess.run([sys.executable, "-m", "mxfp4ref.bench", "--size", "8192", "--k", "256",
                          "--repeat", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for word in ("quantize", "dequantize", "numpy", "numba", "elements/s", "numba / numpy"):
        assert word in out.stdout


@pytest.mark.parametrize("argv, msg", [(["--size", "1000"], "--size: expected a positive multiple"),
                                       (["--k", "48"], "--k: expected a positive multiple of 32"),
                                       (["--scale-rule", "round"], "scale_rule: unknown value")])
def test_bench_rejects_bad_arguments(argv, msg, capsys):
    from mxfp4ref import bench
    with pytest.raises(SystemExit):
        bench.main(argv + ["--repeat", "1"])
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_empty_rows(backend):
    t = mxfp4ref.quantize(np.zeros((0, 64), np.float32), backend=backend)
    assert t.packed.shape == (0, 32) and t.scales.shape == (0, 2)
    assert mxfp4ref.dequantize(t.packed, t.scales, backend=backend).shape == (0, 64)
