"""Backend padding: vLLM 0.33.0's multiples, zero-filled top-left placement, input pad / output slice."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _moe_layers import byte_layer
from mxfp4ref.moe.configs import CONFIGS, MoEConfig, get_config
from mxfp4ref.moe.padding import (Mxfp4Backend, pad_for_backend, pad_hidden_states, pad_weights,
                                  padded_sizes, padding_multiples, unpad_output)
from mxfp4ref.moe.forward import fused_moe
from mxfp4ref.moe.random_weights import random_moe_weights
from mxfp4ref.moe.routing import route
from mxfp4ref.moe.weights import MoEWeights

# gpt-oss (H = I = 2880) per-rank (hidden, intermediate) at TP = 1, 2, 4, 8 (I/tp = 2880, 1440, 720, 360),
# written out by hand from vLLM 0.33.0 mxfp4_round_up_hidden_size_and_intermediate_size.
GPT_OSS_TABLE = {
    "triton":                        [(2880, 2880), (2880, 1472), (2880, 768), (2880, 384)],
    "marlin":                        [(3072, 2944), (3072, 1536), (3072, 768), (3072, 384)],
    "flashinfer-trtllm-mxfp4-bf16":  [(3072, 2944), (3072, 1536), (3072, 768), (3072, 384)],
    "flashinfer-trtllm-mxfp4-mxfp8": [(3072, 2944), (3072, 1536), (3072, 768), (3072, 384)],
    "flashinfer-cutlass-mxfp4-bf16": [(2944, 2944), (2944, 1536), (2944, 768), (2944, 384)],
    "emulation":                     [(2880, 2880), (2880, 1440), (2880, 736), (2880, 384)],
    "cpu":                           [(2880, 2880), (2880, 1440), (2880, 736), (2880, 384)],
    "aiter-mxfp4-bf16":              [(3072, 3072), (3072, 1536), (3072, 768), (3072, 512)],
    "aiter-mxfp4-mxfp4":             [(3072, 2944), (3072, 1536), (3072, 768), (3072, 384)],
    "b12x-mxfp4-bf16":               [(2880, 2880), (2880, 1440), (2880, 720), (2880, 360)],
}


@pytest.mark.parametrize("backend", sorted(GPT_OSS_TABLE))
def test_gpt_oss_padding_table(backend):
    got = [padded_sizes(backend, 2880, 2880 // tp) for tp in (1, 2, 4, 8)]
    assert got == GPT_OSS_TABLE[backend]


def test_every_backend_has_multiples_and_pads_up():
    for b in Mxfp4Backend:
        hm, im = padding_multiples(b)
        h, i = padded_sizes(b, 96, 160)                  # the tiny config
        assert h >= 96 and i >= 160 and h % hm == 0 and i % im == 0
        assert h - 96 < hm and i - 160 < im


def test_platform_and_activation_branches():
    assert padded_sizes("marlin", 2880, 2880, platform="xpu") == (2944, 2944)
    assert padded_sizes("triton", 2880, 2880, platform="rocm") == (3072, 3072)
    assert padded_sizes("triton-unfused", 2880, 2880, platform="rocm", activation="silu",
                        cdna_version=3) == (2944, 2944)
    assert padded_sizes("triton-unfused", 2880, 2880, platform="rocm", activation="silu",
                        cdna_version=4) == (3072, 3072)
    assert padded_sizes("aiter-mxfp4-bf16", 2880, 2880, activation="situ") == (2944, 2944)
    assert padded_sizes("flashinfer-cutlass", 96, 160) == (128, 256)        # alias
    assert padded_sizes("rocm-aiter", 96, 160) == (256, 256)


@pytest.mark.parametrize("args, exc, words", [
    (("tensorrt", 96, 160), ValueError, "backend: unknown value 'tensorrt'"),
    (("triton", 0, 160), ValueError, "hidden_size: expected a positive int, got 0"),
    (("triton", 96, 16.0), ValueError, "intermediate_size: expected a positive int"),
])
def test_padded_sizes_errors(args, exc, words):
    with pytest.raises(exc, match=words):
        padded_sizes(*args)
    with pytest.raises(ValueError, match="platform: unknown value 'tpu'"):
        padded_sizes("triton", 96, 160, platform="tpu")


def test_configs_as_data():
    assert set(CONFIGS) == {"gpt-oss-20b", "gpt-oss-120b", "tiny"}
    for name, E, L in (("gpt-oss-20b", 32, 24), ("gpt-oss-120b", 128, 36)):
        c = get_config(name)
        assert (c.num_experts, c.top_k, c.hidden_size, c.intermediate_size, c.num_layers) == (E, 4, 2880, 2880, L)
        assert (c.swiglu_alpha, c.swiglu_limit, c.gate_up, c.activation) == (1.702, 7.0, "interleaved", "swigluoai")
    t = get_config("tiny")
    assert t.top_k == 2 and t.hidden_size % 32 == 0 and t.intermediate_size % 32 == 0
    assert (t.hidden_size // 32) % 4 and (t.intermediate_size // 32) % 2      # awkward block counts
    with pytest.raises(ValueError, match="unknown name 'gpt-oss-7b'"):
        get_config("gpt-oss-7b")
    with pytest.raises(ValueError, match="hidden_size: expected a multiple of 32, got 100"):
        MoEConfig("x", 4, 2, 100, 64, 1)
    with pytest.raises(ValueError, match="top_k: expected at most num_experts=4, got 5"):
        MoEConfig("x", 4, 5, 64, 64, 1)


def _layer(gate_up, E=2, H=64, I=96, seed=0):
    return byte_layer(E, H, I, seed=seed, gate_up=gate_up)


@pytest.mark.parametrize("gate_up", ["interleaved", "concatenated"])
def test_pad_weights_places_data_and_zeros(gate_up):
    w = _layer(gate_up)
    E, H, I = 2, 64, 96
    p = pad_weights(w, 128, 256)
    assert (p.hidden_size, p.intermediate_size, p.gate_up) == (128, 256, gate_up)
    g, u = w.gate_up_indices()
    pg, pu = p.gate_up_indices()
    for e in range(E):
        full, big = w.w13_dequantized(e), p.w13_dequantized(e)         # (2I, H), (2I', H')
        assert np.array_equal(big[pg[:I], :H], full[g]) and np.array_equal(big[pu[:I], :H], full[u])
        assert not big[pg[I:]].any() and not big[pu[I:]].any() and not big[:, H:].any()
        d, bd = w.w2_dequantized(e), p.w2_dequantized(e)
        assert np.array_equal(bd[:H, :I], d) and not bd[H:].any() and not bd[:, I:].any()
    # the bytes vLLM's loader leaves: 0 weight, 0 scale, 0 bias outside the data
    mask13 = np.ones(2 * 256, bool)
    mask13[pg[:I]] = mask13[pu[:I]] = False
    for name in ("w13_weight", "w13_weight_scale", "w13_bias"):
        assert not getattr(p, name)[:, mask13].any()     # padded gate/up rows
    assert not p.w13_weight[:, :, H // 2:].any() and not p.w13_weight_scale[:, :, H // 32:].any()
    assert not p.w2_weight[:, H:].any() and not p.w2_weight[:, :, I // 2:].any()
    assert not p.w2_weight_scale[:, :, I // 32:].any() and not p.w2_bias[:, H:].any()
    assert np.array_equal(p.w13_bias[:, pg[:I]], w.w13_bias[:, g]) and np.array_equal(p.w2_bias[:, :H], w.w2_bias)


def test_pad_weights_interleaved_is_plain_top_left():
    w = _layer("interleaved")
    p = pad_for_backend(w, "marlin")                      # (64, 96) -> (256, 128)
    assert (p.hidden_size, p.intermediate_size) == (256, 128)
    assert np.array_equal(p.w13_weight[:, :192, :32], w.w13_weight)
    assert np.array_equal(p.w13_weight_scale[:, :192, :2], w.w13_weight_scale)
    assert pad_weights(w, 64, 96).w13_weight.tobytes() == w.w13_weight.tobytes()


def test_pad_weights_errors():
    w = _layer("interleaved")
    with pytest.raises(ValueError, match="hidden_size: expected a multiple of 32 that is >= 64, got 48"):
        pad_weights(w, 48, 96)
    with pytest.raises(ValueError, match="intermediate_size: expected a multiple of 32 that is >= 96, got 100"):
        pad_weights(w, 64, 100)
    with pytest.raises(TypeError, match="weights: expected MoEWeights"):
        pad_weights({}, 64, 96)


def test_pad_hidden_states_and_unpad_output():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    xp = pad_hidden_states(x, 5)
    assert xp.dtype == x.dtype and xp.shape == (2, 5)
    assert np.array_equal(xp[:, :3], x) and not xp[:, 3:].any()
    assert np.array_equal(unpad_output(xp, 3), x)
    with pytest.raises(ValueError, match="hidden_size: expected >= x.shape"):
        pad_hidden_states(x, 2)
    with pytest.raises(ValueError, match=r"hidden_size: expected 1..5"):
        unpad_output(xp, 6)


# ---- the padded layer's output (needs fused_moe, spec/12) -----------------------------------------


def _tokens(E, H, T, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, H)).astype(ml_dtypes.bfloat16)
    topk_weights, topk_ids = route(rng.standard_normal((T, E)).astype(np.float32), k)
    return x, topk_weights, topk_ids


DISTINCT_PADDINGS = sorted({padded_sizes(b, 96, 160) for b in Mxfp4Backend} | {padded_sizes("marlin", 96, 160, platform="xpu")})


@pytest.mark.parametrize("pipeline", ["exact", "bf16"])
@pytest.mark.parametrize("gate_up, activation", [("interleaved", "swigluoai"), ("concatenated", "swigluoai"),
                                                 ("concatenated", "silu"), ("interleaved", "gelu")])
def test_padded_layer_gives_exactly_the_unpadded_output(pipeline, gate_up, activation):
    cfg = get_config("tiny")
    E, H, I, k = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size, cfg.top_k
    w = random_moe_weights(E, H, I, seed=11, gate_up=gate_up)
    x, tw, ids = _tokens(E, H, 40, k, seed=12)
    ref = fused_moe(x, w, tw, ids, activation=activation, pipeline=pipeline)
    assert len(DISTINCT_PADDINGS) >= 4                     # (96, 160) itself and three real paddings
    for Hp, Ip in DISTINCT_PADDINGS:
        p = pad_weights(w, Hp, Ip)
        out, inter = fused_moe(pad_hidden_states(x, Hp), p, tw, ids, activation=activation, pipeline=pipeline,
                               return_intermediates=True)
        assert out.shape == (40, Hp) and not out[:, H:].astype(np.float32).any()
        y = unpad_output(out, H)
        assert y.dtype == ref.dtype and np.array_equal(y, ref), (Hp, Ip)
        pg, pu = p.gate_up_indices()
        assert not inter.gate_up[..., pg[I:]].any() and not inter.gate_up[..., pu[I:]].any()
        assert not inter.activation[..., I:].any()


def test_padding_equality_is_not_vacuous():
    """Nonzero bytes in the padded region (what vLLM's zero-initialised buffers rule out) do show up."""
    w = random_moe_weights(5, 96, 160, seed=11)
    x, tw, ids = _tokens(5, 96, 40, 2, seed=12)
    ref = fused_moe(x, w, tw, ids)
    p = pad_weights(w, 128, 256)
    run = lambda q: unpad_output(fused_moe(pad_hidden_states(x, 128), q, tw, ids), 96)
    b13 = p.w13_bias.copy()
    b13[:, 2 * 160] = 1.0                                  # gate bias of padded channel 160: activation != 0
    live = MoEWeights(p.w13_weight, p.w13_weight_scale, p.w2_weight, p.w2_weight_scale, b13, p.w2_bias)
    assert np.array_equal(run(live), ref)                  # ... but W2's padded column is still zero codes
    w2, s2 = p.w2_weight.copy(), p.w2_weight_scale.copy()
    w2[:, :, 160 // 2] = 0x22                              # codes 1.0, 1.0 in W2 columns 160, 161
    s2[:, :, 160 // 32] = 127                              # their block's scale 2**0
    assert not np.array_equal(run(MoEWeights(p.w13_weight, p.w13_weight_scale, w2, s2, b13, p.w2_bias)), ref)



@settings(max_examples=40, deadline=None)
@given(hb=st.integers(1, 3), ib=st.integers(1, 3), dh=st.integers(0, 3), di=st.integers(0, 3),
       seed=st.integers(0, 2 ** 32 - 1), gate_up=st.sampled_from(["interleaved", "concatenated"]))
def test_pad_then_crop_is_identity_property(hb, ib, dh, di, seed, gate_up):
    w = _layer(gate_up, E=2, H=32 * hb, I=32 * ib, seed=seed)
    H, I, Hp, Ip = 32 * hb, 32 * ib, 32 * (hb + dh), 32 * (ib + di)
    p = pad_weights(w, Hp, Ip)
    pg, pu = p.gate_up_indices()
    g, u = w.gate_up_indices()
    rows = np.empty(2 * I, np.int64)
    rows[g], rows[u] = pg[:I], pu[:I]                      # where each original w13 row went
    assert np.array_equal(p.w13_weight[:, rows, :H // 2], w.w13_weight)
    assert np.array_equal(p.w13_weight_scale[:, rows, :H // 32], w.w13_weight_scale)
    assert np.array_equal(p.w13_bias[:, rows], w.w13_bias)
    assert np.array_equal(p.w2_weight[:, :H, :I // 2], w.w2_weight)
    assert np.array_equal(p.w2_weight_scale[:, :H, :I // 32], w.w2_weight_scale)
    # everything else is zero: total bytes add up
    assert int(np.count_nonzero(p.w13_weight)) == int(np.count_nonzero(w.w13_weight))
    assert int(np.count_nonzero(p.w2_weight_scale)) == int(np.count_nonzero(w.w2_weight_scale))
