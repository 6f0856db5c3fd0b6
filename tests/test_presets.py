"""Presets: every row of the edge-case table in spec/04-presets.md, written out by hand.

Expected bytes and codes are derived from each implementation's source (see the preset docstrings
and /work/shared/research/mx-conventions.md section 4.3); the torchao, triton_kernels and
microxcaling rows were also confirmed by running those libraries on CPU (B's cross-check).
"""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref import PRESETS, quantize, unpack_fp4
from mxfp4ref.presets import get_preset

NAN, INF = np.nan, np.inf
# sign bit of the NaN that this CPU's float32 multiply makes from Inf * 0 (x86: negative)
with np.errstate(invalid="ignore"):
    GEN_NAN_SIGN = 8 if np.signbit(np.float32(INF) * np.float32(0)) else 0

BLOCKS = {
    "zero": [0.0],
    "neg-zero": [-0.0] * 32,
    "tiny": [1.5 * 2.0 ** -125, 2.0 ** -126],          # amax 3.5e-38: E = 2
    "subnormal-descale": [2.0 ** -126, 2.0 ** -127],   # amax/6 is below 2^-127
    "huge": [3.3e38, 1e38, 1.0],                        # significand 1.94 * 2^127
    "nan": [NAN, 3.0, 1.0, -0.625],
    "inf": [INF, 3.0, 1.0],
    "ties": [6, 5, 3.5, 2.5, 1.75, 1.25, 0.75, 0.25, -0.25, -0.1, 0.3],
}

# preset -> block -> (scale byte, codes of the listed elements, code of the zero padding)
T, S = 0x3, 0x7   # torchao's NaN code; the saturating NaN code
EXPECTED = {
    "ocp": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [7, 4], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (252, [7, 4, 0], 0),
        "nan": (255, [S] * 4, S), "inf": (255, [S] * 3, S),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "torchao-floor": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [7, 4], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (252, [7, 4, 0], 0),
        "nan": (255, [T] * 4, T), "inf": (255, [T] * 3, T),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "torchao-ceil": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (1, [5, 2], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (253, [6, 2, 0], 0),
        "nan": (255, [T] * 4, T), "inf": (255, [T] * 3, T),
        "ties": (128, [5, 4, 4, 2, 2, 1, 1, 0, 8, 8, 0], 0)},
    "torchao-even": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [7, 4], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (255, [T] * 3, T),
        "nan": (255, [T] * 4, T), "inf": (255, [T] * 3, T),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "torchao-rceil": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [7, 4], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (253, [6, 2, 0], 0),
        "nan": (255, [T] * 4, T), "inf": (255, [T] * 3, T),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "triton-round-up": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (1, [5, 2], 0),
        "subnormal-descale": (1, [2, 1], 0), "huge": (253, [6, 2, 0], 0),
        "nan": (0, [7, 0, 0, 8], 0), "inf": (255, [GEN_NAN_SIGN | 7, 0, 0], 0),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "triton-round-down": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [0, 0], 0),
        "subnormal-descale": (0, [0, 0], 0), "huge": (252, [7, 4, 0], 0),
        "nan": (255, [7, 0, 0, 8], 0), "inf": (255, [GEN_NAN_SIGN | 7, 0, 0], 0),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "triton-round-up-legacy": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (1, [5, 2], 0),
        "subnormal-descale": (1, [2, 1], 0), "huge": (253, [6, 2, 0], 0),
        "nan": (0, [7, 0, 0, 8], 0), "inf": (255, [GEN_NAN_SIGN | 7, 0, 0], 0),
        "ties": (127, [7, 7, 6, 5, 4, 3, 2, 1, 9, 8, 1], 0)},
    "microxcaling": {
        "zero": (0, [0], 0), "neg-zero": (0, [0] * 32, 0), "tiny": (0, [7, 4], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (252, [7, 4, 0], 0),
        "nan": (255, [S] * 4, S), "inf": (255, [S] * 3, S),
        "ties": (127, [7, 7, 6, 5, 4, 3, 2, 1, 9, 8, 1], 0)},
    "quark": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [7, 4], 0),
        "subnormal-descale": (0, [4, 2], 0), "huge": (254, [4, 1, 0], 0),
        "nan": (126, [7, 7, 4, 0xA], 0), "inf": (254, [7, 0, 0], 0),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
    "flashinfer": {
        "zero": (0, [0], 0), "neg-zero": (0, [8] * 32, 0), "tiny": (0, [0, 0], 0),
        "subnormal-descale": (0, [0, 0], 0), "huge": (253, [6, 2, 0], 0),
        "nan": (126, [7, 7, 4, 0xA], 0), "inf": (254, [7, 0, 0], 0),
        "ties": (127, [7, 6, 6, 4, 4, 2, 2, 0, 8, 8, 1], 0)},
}


def make_block(head):
    x = np.zeros(32, np.float32)
    x[:len(head)] = np.array(head, np.float32)
    return x


def test_every_preset_has_a_table_row():
    assert set(EXPECTED) == set(PRESETS)
    assert set(PRESETS) >= {"ocp", "torchao-floor", "torchao-ceil", "torchao-even",
                            "torchao-rceil", "triton-round-up", "triton-round-down",
                            "microxcaling", "quark", "flashinfer"}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_edge_case_table(preset, block):
    byte, head, pad = EXPECTED[preset][block]
    with np.errstate(invalid="ignore"):
        t = quantize(make_block(BLOCKS[block]), preset=preset)
    codes = unpack_fp4(t.packed).tolist()
    assert int(t.scales[0]) == byte
    assert codes[:len(head)] == head
    assert codes[len(head):] == [pad] * (32 - len(head))


def test_minus_nan_element_in_a_torchao_nan_block_is_positive():
    x = make_block([1.0, 2.0])
    x[5] = -np.float32(np.nan)
    assert np.signbit(x[5])
    codes = unpack_fp4(quantize(x, preset="torchao-floor").packed)
    assert codes.tolist() == [3] * 32


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_docstring_names_the_source_file(name):
    p = PRESETS[name]
    assert p.name == name and get_preset(name) is p
    assert "Reproduces:" in p.__doc__
    if name != "ocp":
        assert any(ext in p.source for ext in (".py", ".cuh", ".cu")), p.source


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_agree_on_ordinary_bf16_blocks_where_their_rules_agree(name):
    # finite, well-scaled blocks: each preset = its plain rule + rounding (edge fields idle)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 64)) * 2.0 ** rng.integers(-20, 20, (64, 1)))
    x = x.astype(ml_dtypes.bfloat16)
    cfg = PRESETS[name].config
    a = quantize(x, preset=name)
    if cfg.rounding.value in ("rne", "away", "zero"):
        b = quantize(x, scale_rule=cfg.scale_rule.value, rounding=cfg.rounding.value)
        assert np.array_equal(a.scales, b.scales) and np.array_equal(a.packed, b.packed)


def test_preset_errors():
    x = np.zeros(32, np.float32)
    with pytest.raises(ValueError, match="preset: unknown value 'nvfp4'; expected one of"):
        quantize(x, preset="nvfp4")
    with pytest.raises(ValueError, match="scale_rule: preset 'quark' uses 'even', got 'floor'"):
        quantize(x, preset="quark", scale_rule="floor")
    with pytest.raises(ValueError, match="rounding: preset 'microxcaling' uses 'mx-nearest'"):
        quantize(x, preset="microxcaling", rounding="rne")
    t = quantize(x, preset="quark", scale_rule="even", rounding="rne")   # agreeing is fine
    assert t.config == PRESETS["quark"].config


from hypothesis import given, settings, strategies as st            # noqa: E402


@settings(max_examples=120, deadline=None)
@given(bits=st.lists(st.integers(0, 2**32 - 1), min_size=64, max_size=64),
       name=st.sampled_from(sorted(PRESETS)))
def test_edge_fields_only_act_on_edge_blocks(bits, name):
    """Arbitrary float32 bit patterns: a block that is finite with amax in [2^-100, 2^100] gets
    the plain rule's bytes under every preset; a NaN block under PROPAGATE + NAN_SCALE gets 0xFF."""
    x = np.array(bits, np.uint32).view(np.float32).reshape(2, 32)
    with np.errstate(invalid="ignore"):
        t = quantize(x, preset=name)
    cfg = PRESETS[name].config
    codes = unpack_fp4(t.packed)
    assert t.scales.shape == (2, 1) and codes.max() <= 15
    plain_rounding = cfg.rounding.value if cfg.rounding.value != "mx-nearest" else "away"
    for r in range(2):
        row = x[r]
        amax = np.abs(row).max()
        if np.isfinite(row).all() and 2.0 ** -100 <= amax < 2.0 ** 100:
            p = quantize(row, scale_rule=cfg.scale_rule.value, rounding=plain_rounding)
            if cfg.log2.value == "exact":
                assert t.scales[r, 0] == p.scales[0]
            else:                                  # float32 log2: one binade up just below 2^k
                assert t.scales[r, 0] - p.scales[0] in (0, 1)
            if cfg.rounding.value != "mx-nearest" and cfg.log2.value == "exact":
                assert np.array_equal(codes[r], unpack_fp4(p.packed))
        if np.isnan(row).any() and cfg.amax_nan.value == "propagate" \
                and cfg.nonfinite.value == "nan-scale":
            assert t.scales[r, 0] == 0xFF


def test_triton_round_down_subnormal_quotient_matches_upstream():
    """The block on which triton_kernels@018a674 downcast_to_mxfp_torch(ROUND_DOWN) and FLOOR's bits
    differ (found by the CPU cross-check, spec/05): fl32(amax / 4) rounds up to 2^-126, so upstream
    stores byte 1 and scales by 2^126. Expected bytes are upstream's output."""
    x = np.zeros((1, 32), np.float32)
    x.view(np.uint32)[0, 0] = 0x017FFFFF              # (2 - 2^-23) * 2^-125
    x[0, 1] = np.float32(1e-38)
    x.view(np.uint32)[0, 2] = 0x817FFFFF
    q = quantize(x, preset="triton-round-down")
    assert q.scales.tolist() == [[1]]
    assert q.packed.tobytes().hex() == "260e" + "00" * 14
    assert quantize(x, preset="ocp").scales.tolist() == [[0]]      # OCP FLOOR: exponent bits
