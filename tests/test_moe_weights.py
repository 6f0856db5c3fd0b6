"""MoEWeights: validation, sizes, exact dequantization against an independent oracle, layouts."""
import hashlib

import ml_dtypes
import numpy as np
import pytest

from _moe_layers import byte_layer
from mxfp4ref import MoEWeights, quantize, random_moe_weights
from mxfp4ref.moe.random_weights import row_magnitudes, unit_normalish

E, H, I = 3, 64, 96


def _bytes(rng, shape):
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _layer(seed=0, bias=True, gate_up="interleaved"):
    return byte_layer(E, H, I, seed=seed, bias=bias, gate_up=gate_up, codes=(0, 256))


def _oracle_dequant(packed, scales):
    """Independent decoding: sign/exponent/mantissa bit fields, float64, element by element."""
    rows, half = packed.shape
    out = np.empty((rows, 2 * half))
    for r in range(rows):
        for k in range(2 * half):
            byte = int(packed[r, k // 2])
            code = (byte >> 4) if k % 2 else (byte & 0xF)
            sign = -1.0 if code & 8 else 1.0
            exp, man = (code >> 1) & 3, code & 1
            mag = man * 0.5 if exp == 0 else (1 + man / 2) * 2.0 ** (exp - 1)
            out[r, k] = sign * mag * 2.0 ** (int(scales[r, k // 32]) - 127)
    return out


def test_sizes_and_repr():
    w = _layer()
    assert (w.num_experts, w.hidden_size, w.intermediate_size) == (E, H, I)
    assert w.has_bias and "E=3" in repr(w)


def test_dequantized_matches_bitfield_oracle():
    w = _layer(1)
    for e in range(E):
        a = w.w13_dequantized(e)
        assert a.dtype == np.float32 and a.shape == (2 * I, H)
        assert np.array_equal(a.astype(np.float64), _oracle_dequant(w.w13_weight[e], w.w13_weight_scale[e]))
        b = w.w2_dequantized(e)
        assert b.shape == (H, I)
        assert np.array_equal(b.astype(np.float64), _oracle_dequant(w.w2_weight[e], w.w2_weight_scale[e]))


def test_gate_up_rows_and_layout_conversion():
    w = _layer(2)
    full = w.w13_dequantized(1)
    assert np.array_equal(w.gate_rows(1), full[0::2]) and np.array_equal(w.up_rows(1), full[1::2])
    c = w.with_gate_up("concatenated")
    assert c.gate_up == "concatenated"
    assert np.array_equal(c.w13_dequantized(1), np.concatenate([full[0::2], full[1::2]]))
    assert np.array_equal(c.gate_rows(1), w.gate_rows(1)) and np.array_equal(c.up_rows(1), w.up_rows(1))
    assert np.array_equal(c.w13_bias[:, :I], w.w13_bias[:, 0::2])
    back = c.with_gate_up("interleaved")
    for name in ("w13_weight", "w13_weight_scale", "w13_bias"):
        assert np.array_equal(getattr(back, name), getattr(w, name))


def test_arrays_are_read_only_views_and_caller_untouched():
    rng = np.random.default_rng(3)
    w13 = _bytes(rng, (1, 64, 16))
    w = MoEWeights(w13, np.zeros((1, 64, 1), np.uint8), _bytes(rng, (1, 32, 16)), np.zeros((1, 32, 1), np.uint8))
    assert w13.flags.writeable and not w.w13_weight.flags.writeable
    with pytest.raises(Exception):
        w.w13_weight = w13
    assert w.w13_bias is None and not w.has_bias


@pytest.mark.parametrize("field, bad, exc, words", [
    ("w13_weight_scale", np.zeros((E, 2 * I, H // 32 + 1), np.uint8), ValueError, "expected shape (3, 192, 2)"),
    ("w2_weight", np.zeros((E, H, I // 2), np.int8), TypeError, "expected dtype uint8, got int8"),
    ("w2_weight_scale", np.zeros((E, H, I // 32), np.uint8).T.copy().T, ValueError, "C-contiguous"),
    ("w13_bias", np.zeros((E, 2 * I), np.float64), TypeError, "w13_bias: expected dtype float32"),
    ("w2_bias", np.zeros((E, H + 1), np.float32), ValueError, "w2_bias: expected shape (3, 64)"),
    ("w2_weight", [[0]], TypeError, "expected a numpy.ndarray, got list"),
    ("gate_up", "blocked", ValueError, "unknown value 'blocked'"),
])
def test_validation_names_field_expected_received(field, bad, exc, words):
    w = _layer()
    kwargs = {f: getattr(w, f) for f in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale",
                                          "w13_bias", "w2_bias")}
    kwargs["gate_up"] = "interleaved"
    kwargs[field] = bad
    with pytest.raises(exc) as info:
        MoEWeights(**kwargs)
    assert words in str(info.value) and field in str(info.value)


@pytest.mark.parametrize("shape, words", [((2, 48, 32), "multiple of 32, got 2I=48"),
                                          ((2, 64, 24), "multiple of 32, got H=48"),
                                          ((64, 32), "3-D array")])
def test_bad_w13_shape(shape, words):
    with pytest.raises(ValueError, match=words):
        MoEWeights(np.zeros(shape, np.uint8), None, None, None)


def test_w13_not_an_array():
    with pytest.raises(TypeError, match="MoEWeights.w13_weight: expected a numpy.ndarray, got list"):
        MoEWeights([[0]], None, None, None)


def test_expert_index_checked():
    w = _layer()
    with pytest.raises(ValueError, match=r"\[0, 3\), got 3"):
        w.w13_dequantized(3)
    with pytest.raises(TypeError, match="expected an int"):
        w.w2_dequantized(1.0)


# ---- random_moe_weights ---------------------------------------------------------------------------
FIELDS = ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias")


def _digest(w):
    h = hashlib.sha256()
    for f in FIELDS:
        h.update(getattr(w, f).tobytes())
    return h.hexdigest()


def test_random_weights_are_the_same_everywhere():
    # PCG64's raw stream is fixed by NumPy's compatibility policy; the rest is integer arithmetic and
    # correctly rounded float64 operations, so these bytes must not change between machines.
    assert list(np.random.PCG64(1234).random_raw(2)) == [18016930633132456890, 7013373421822782593]
    w = random_moe_weights(2, 64, 96, seed=1234)
    assert _digest(w) == "34401d72d11430e99c696041062593ddff7cf844602540d28aedac02a3e6e7c1"
    assert _digest(random_moe_weights(2, 64, 96, seed=1234)) == _digest(w)
    assert _digest(random_moe_weights(2, 64, 96, seed=1235)) != _digest(w)


def test_random_weights_are_quantized_floats_in_documented_draw_order():
    E_, H_, I_ = 2, 64, 96
    w = random_moe_weights(E_, H_, I_, seed=7)
    bg = np.random.PCG64(7)
    for e in range(E_):
        for rows, cols, packed, scales in ((2 * I_, H_, w.w13_weight[e], w.w13_weight_scale[e]),
                                           (H_, I_, w.w2_weight[e], w.w2_weight_scale[e])):
            m = row_magnitudes(bg.random_raw(rows))
            x = (unit_normalish(bg.random_raw(rows * cols)).reshape(rows, cols) * (m / np.sqrt(cols))[:, None])
            q = quantize(x.astype(np.float32), axis=-1, preset="ocp")
            assert np.array_equal(q.packed, packed) and np.array_equal(q.scales, scales)
    b13 = (unit_normalish(bg.random_raw(E_ * 2 * I_)) / 2).astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(b13.reshape(E_, 2 * I_), w.w13_bias)


def test_random_weights_statistics_and_spread():
    raw = np.random.PCG64(0).random_raw(200_000)
    z = unit_normalish(raw)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01 and np.abs(z).max() <= 2 * np.sqrt(3)
    m = row_magnitudes(raw)
    assert m.min() >= 0.25 and m.max() < 4 and np.all(np.bincount(np.floor(np.log2(m)).astype(int) + 2) > 45_000)
    w = random_moe_weights(3, 96, 160, seed=0)
    row_max = w.w13_weight_scale.max(axis=-1).astype(int)
    assert row_max.max() - row_max.min() >= 3                   # rows really differ in magnitude
    assert w.w13_bias.dtype == np.float32
    assert np.array_equal(w.w13_bias.astype(ml_dtypes.bfloat16).astype(np.float32), w.w13_bias)


def test_random_weights_options():
    a = random_moe_weights(2, 64, 96, seed=3)
    c = random_moe_weights(2, 64, 96, seed=3, gate_up="concatenated")
    assert c.gate_up == "concatenated"
    for e in range(2):
        assert np.array_equal(a.gate_rows(e), c.gate_rows(e)) and np.array_equal(a.up_rows(e), c.up_rows(e))
    nb = random_moe_weights(2, 64, 96, seed=3, bias=False)
    assert nb.w13_bias is None and nb.w2_bias is None and np.array_equal(nb.w13_weight, a.w13_weight)
    ceil = random_moe_weights(2, 64, 96, seed=3, preset="torchao-ceil")
    assert not np.array_equal(ceil.w13_weight_scale, a.w13_weight_scale)
    for kwargs, words in (({"num_experts": 0}, "num_experts: expected a positive int"),
                          ({"hidden_size": 48}, "hidden_size: expected a positive int multiple of 32, got 48"),
                          ({"seed": -1}, "seed: expected a non-negative int")):
        args = {"num_experts": 2, "hidden_size": 64, "intermediate_size": 96, "seed": 0, **kwargs}
        with pytest.raises(ValueError, match=words):
            random_moe_weights(args.pop("num_experts"), args.pop("hidden_size"), args.pop("intermediate_size"), **args)
