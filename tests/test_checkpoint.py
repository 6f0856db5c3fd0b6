"""gpt-oss checkpoints: names, shapes, round trip through safetensors, and decoding equal to gpt-oss's own."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _moe_layers import byte_layer
from mxfp4ref.moe.checkpoint import (from_checkpoint_tensors, read_checkpoint, tensor_names,
                                     to_checkpoint_tensors, write_checkpoint)
from mxfp4ref.moe.weights import MoEWeights

E, H, I = 3, 96, 160

# gpt-oss's decoding table (gpt_oss/torch/weights.py FP4_VALUES), typed in again here.
GPT_OSS_LUT = np.array([+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
                        -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32)


def gpt_oss_decode(blocks, scales):
    """Independent oracle in gpt-oss's style: (..., G, 16) blocks + (..., G) scales -> (..., G*32) float32.

    LUT of the low nibble to even positions, high nibble to odd, then ldexp by (scale - 127)."""
    *prefix, G, B = blocks.shape
    rows = blocks.reshape(-1, B)
    exp = scales.reshape(-1, 1).astype(np.int32) - 127
    out = np.empty((rows.shape[0], 2 * B), np.float32)
    out[:, 0::2] = GPT_OSS_LUT[rows & 0x0F]
    out[:, 1::2] = GPT_OSS_LUT[rows >> 4]
    with np.errstate(over="ignore"):
        out = np.ldexp(out, exp).astype(np.float32)
    return out.reshape(*prefix, G * 2 * B)


def _layer(seed, bias=True):
    return byte_layer(E, H, I, seed=seed, bias=bias, codes=(0, 256), scales=(0, 255))   # no 0xFF scale


def _same(a: MoEWeights, b: MoEWeights):
    for f in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None and y is None) or (x.dtype == y.dtype and np.array_equal(x, y)), f
    assert a.gate_up == b.gate_up


def test_names_and_shapes():
    assert tensor_names(7, "original") == {
        "w13_weight": "block.7.mlp.mlp1_weight.blocks", "w13_weight_scale": "block.7.mlp.mlp1_weight.scales",
        "w13_bias": "block.7.mlp.mlp1_bias", "w2_weight": "block.7.mlp.mlp2_weight.blocks",
        "w2_weight_scale": "block.7.mlp.mlp2_weight.scales", "w2_bias": "block.7.mlp.mlp2_bias"}
    assert tensor_names(0, "hf")["w13_weight"] == "model.layers.0.mlp.experts.gate_up_proj_blocks"
    assert tensor_names(0, "hf")["w2_weight_scale"] == "model.layers.0.mlp.experts.down_proj_scales"
    assert tensor_names(0, "hf")["w13_bias"] == "model.layers.0.mlp.experts.gate_up_proj_bias"
    t = to_checkpoint_tensors(_layer(0), 5, names="hf")
    p = "model.layers.5.mlp.experts."
    assert t[p + "gate_up_proj_blocks"].shape == (E, 2 * I, H // 32, 16)
    assert t[p + "gate_up_proj_scales"].shape == (E, 2 * I, H // 32)
    assert t[p + "down_proj_blocks"].shape == (E, H, I // 32, 16)
    assert t[p + "down_proj_scales"].shape == (E, H, I // 32)
    assert t[p + "gate_up_proj_bias"].dtype == ml_dtypes.bfloat16 and t[p + "down_proj_bias"].shape == (E, H)


@pytest.mark.parametrize("names", ["hf", "original"])
def test_decoding_equals_gpt_oss_reference_bit_for_bit(names):
    w = _layer(1)                                          # every byte and scale 0..254 (no NaN)
    t = to_checkpoint_tensors(w, 0, names=names)
    k = tensor_names(0, names)
    ref13 = gpt_oss_decode(t[k["w13_weight"]], t[k["w13_weight_scale"]])   # (E, 2I, H)
    ref2 = gpt_oss_decode(t[k["w2_weight"]], t[k["w2_weight_scale"]])      # (E, H, I)
    for e in range(E):
        assert np.array_equal(w.w13_dequantized(e).view(np.uint32), ref13[e].view(np.uint32))
        assert np.array_equal(w.w2_dequantized(e).view(np.uint32), ref2[e].view(np.uint32))
    # gpt-oss decodes to bf16 by default; every finite value here is a bf16 value, so bf16 agrees too
    finite = np.isfinite(ref13)
    assert np.array_equal(ref13[finite].astype(ml_dtypes.bfloat16).astype(np.float32), ref13[finite])


def test_every_byte_with_every_scale_equals_gpt_oss():
    """Exhaustive: row r holds the 256 byte values 0..255 with scale byte r in every block."""
    w13 = np.tile(np.arange(256, dtype=np.uint8), (1, 256, 1))             # (1, 2I=256, H/2=256)
    s13 = np.repeat(np.arange(256, dtype=np.uint8), 16).reshape(1, 256, 16)  # (1, 256, H/32=16)
    w = MoEWeights(w13, s13, np.zeros((1, 512, 64), np.uint8), np.zeros((1, 512, 4), np.uint8))
    ref = gpt_oss_decode(w13.reshape(1, 256, 16, 16), s13)[0]               # (256, 512)
    ours = w.w13_dequantized(0)
    assert np.array_equal(ours[:255].view(np.uint32), ref[:255].view(np.uint32))   # scale bytes 0..254
    assert np.isnan(ours[255]).all() and not np.isnan(ref[255]).any()               # 0xFF: see below


def test_scale_byte_255_is_nan_here_but_not_in_gpt_oss():
    """The one documented difference: E8M0 0xFF is NaN (OCP); gpt-oss's ldexp gives 2**128 * value."""
    blocks = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)[:, :, :1]    # codes 0..15 in one block
    scales = np.full((1, 1, 1), 255, np.uint8)
    ref = gpt_oss_decode(blocks, scales)
    assert not np.isnan(ref).any() and ref[0, 0, 0] == 0 and np.isinf(ref).any()
    w = MoEWeights(np.zeros((1, 64, 16), np.uint8), np.full((1, 64, 1), 255, np.uint8),
                   np.zeros((1, 32, 16), np.uint8), np.zeros((1, 32, 1), np.uint8))
    assert np.isnan(w.w13_dequantized(0)).all()


def test_oracle_is_not_vacuous():
    """Swapping the nibbles (a plausible bug) changes the decoded values."""
    w = _layer(2)
    t = to_checkpoint_tensors(w, 0)
    k = tensor_names(0, "hf")
    blocks = t[k["w13_weight"]]
    swapped = ((blocks & 0x0F) << 4) | (blocks >> 4)
    assert not np.array_equal(gpt_oss_decode(swapped, t[k["w13_weight_scale"]])[0], w.w13_dequantized(0))


@pytest.mark.parametrize("names", ["hf", "original"])
@pytest.mark.parametrize("bias_dtype", ["bfloat16", "float32"])
def test_round_trip_through_file(tmp_path, names, bias_dtype):
    layers = {0: _layer(3), 4: _layer(4, bias=False)}
    path = tmp_path / "model.safetensors"
    write_checkpoint(path, layers, names=names, bias_dtype=bias_dtype)
    for n, w in layers.items():
        _same(read_checkpoint(path, n), w)                  # scheme detected from the names
        _same(read_checkpoint(tmp_path, n, names=names), w)  # a directory, as gpt-oss reads it


def test_concatenated_written_interleaved(tmp_path):
    w = _layer(5)
    c = w.with_gate_up("concatenated")
    write_checkpoint(tmp_path / "a.safetensors", c)
    _same(read_checkpoint(tmp_path / "a.safetensors"), w)
    _same(read_checkpoint(tmp_path / "a.safetensors", gate_up="concatenated"), c)


def test_errors(tmp_path):
    w = _layer(6)
    b = w.w2_bias.copy()
    b[0, 0] = 1.0 + 2.0 ** -10                              # not a bf16 value
    w_bad = MoEWeights(w.w13_weight, w.w13_weight_scale, w.w2_weight, w.w2_weight_scale, w.w13_bias, b)
    with pytest.raises(ValueError, match="w2_bias: not exactly representable in bfloat16"):
        to_checkpoint_tensors(w_bad)
    t = to_checkpoint_tensors(w)
    del t["model.layers.0.mlp.experts.down_proj_scales"]
    with pytest.raises(ValueError, match="missing 'model.layers.0.mlp.experts.down_proj_scales'"):
        from_checkpoint_tensors(t)
    with pytest.raises(ValueError, match="exactly one naming scheme"):
        from_checkpoint_tensors({})
    t = to_checkpoint_tensors(w)
    t["model.layers.0.mlp.experts.gate_up_proj_blocks"] = t["model.layers.0.mlp.experts.gate_up_proj_blocks"].reshape(E, 2 * I, -1)
    with pytest.raises(ValueError, match=r"expected uint8 blocks \(E, R, K/32, 16\)"):
        from_checkpoint_tensors(t)
    t = to_checkpoint_tensors(w)
    t["model.layers.0.mlp.experts.down_proj_bias"] = t["model.layers.0.mlp.experts.down_proj_bias"].astype(np.float64)
    with pytest.raises(TypeError, match="down_proj_bias: expected a bfloat16, float16 or float32 bias"):
        from_checkpoint_tensors(t)
    with pytest.raises(ValueError, match="path: .* is neither"):
        read_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="no .safetensors files"):
        read_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="names: unknown value 'gguf'"):
        tensor_names(0, "gguf")



@st.composite
def layers(draw):
    E, H, I = draw(st.integers(1, 3)), 32 * draw(st.integers(1, 3)), 32 * draw(st.integers(1, 3))
    return byte_layer(E, H, I, seed=draw(st.integers(0, 2 ** 32 - 1)), bias=draw(st.booleans()),
                      gate_up=draw(st.sampled_from(["interleaved", "concatenated"])), codes=(0, 256),
                      scales=(0, 256))


@settings(max_examples=40, deadline=None)
@given(w=layers(), layer=st.integers(0, 99), names=st.sampled_from(["hf", "original"]))
def test_tensor_round_trip_property(w, layer, names):
    t = to_checkpoint_tensors(w, layer, names=names)
    assert set(t) == {v for f, v in tensor_names(layer, names).items() if getattr(w, f) is not None}
    _same(from_checkpoint_tensors(t, layer, gate_up=w.gate_up), w)
