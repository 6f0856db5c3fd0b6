"""fused_moe: exact pipeline vs an independent dense einsum, EP maps, router weight on input, bf16 rounding points."""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref.moe.forward import fused_moe
from mxfp4ref.moe.routing import make_expert_map, route
from mxfp4ref.moe.weights import MoEWeights

from _moe_random import random_weights

FP4 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6])


def dense_dequant(packed, scales):
    """(E, R, K/2), (E, R, K/32) -> (E, R, K) float64, written independently of the package."""
    E, R, half = packed.shape
    codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(E, R, 2 * half)
    vals = FP4[codes].reshape(E, R, half * 2 // 32, 32)
    return (vals * np.ldexp(1.0, scales.astype(np.int64) - 127)[..., None]).reshape(E, R, 2 * half)


def dense_reference(x, w, topk_weights, topk_ids, on_input=False, alpha=1.702, limit=7.0):
    """Every expert on every token with einsum, then a (T, E) routing matrix selects and weights."""
    W13 = dense_dequant(w.w13_weight, w.w13_weight_scale)            # (E, 2I, H)
    W2 = dense_dequant(w.w2_weight, w.w2_weight_scale)               # (E, H, I)
    E, I = W13.shape[0], W13.shape[1] // 2
    b13 = np.zeros((E, 2 * I)) if w.w13_bias is None else w.w13_bias.astype(np.float64)
    b2 = np.zeros((E, W2.shape[1])) if w.w2_bias is None else w.w2_bias.astype(np.float64)
    x = x.astype(np.float64)
    h = np.einsum("th,eih->tei", x, W13) + b13[None]                 # (T, E, 2I)
    if w.gate_up.value == "interleaved":
        g, u = h[..., ::2], h[..., 1::2]
    else:
        g, u = h[..., :I], h[..., I:]
    if limit is not None:
        g, u = np.minimum(g, limit), np.clip(u, -limit, limit)
    act = g * (1 / (1 + np.exp(-alpha * g))) * (u + 1)               # (T, E, I)
    R = np.zeros((x.shape[0], E))                                    # routing matrix
    for t in range(x.shape[0]):
        for s in range(topk_ids.shape[1]):
            if topk_ids[t, s] >= 0:
                R[t, topk_ids[t, s]] += topk_weights[t, s]
    if on_input:
        y = np.einsum("tei,ehi->teh", act * R[..., None], W2) + b2[None]
        return np.einsum("teh,te->th", y, (R != 0).astype(float))
    y = np.einsum("tei,ehi->teh", act, W2) + b2[None]                # (T, E, H)
    return np.einsum("teh,te->th", y, R)


def make_case(E, H, I, T, k, seed=0, gate_up="interleaved", bias=True, xscale=1.0):
    w = random_weights(E, H, I, seed=seed, gate_up=gate_up, bias=bias)
    rng = np.random.default_rng(seed + 100)
    x = (rng.normal(size=(T, H)) * xscale).astype(ml_dtypes.bfloat16)
    tw, ti = route(rng.normal(size=(T, E)).astype(np.float32), k)
    return w, x, tw, ti


def assert_close64(a, b):
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 1e-12 * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("gate_up,on_input", [("interleaved", False), ("concatenated", True)])
def test_exact_matches_dense_einsum_gpt_oss_tp4_rank_shape(gate_up, on_input):
    # gpt-oss hidden size 2880 with the TP=4 per-rank intermediate size ceil(90/4)*32 = 736
    w, x, tw, ti = make_case(4, 2880, 736, 5, 2, gate_up=gate_up)
    out = fused_moe(x, w, tw, ti, apply_router_weight_on_input=on_input)
    assert out.dtype == np.float64 and out.shape == (5, 2880)
    assert_close64(out, dense_reference(x, w, tw, ti, on_input))


@pytest.mark.slow
def test_exact_matches_dense_einsum_full_gpt_oss_expert():
    w, x, tw, ti = make_case(2, 2880, 2880, 3, 2, seed=7)
    assert_close64(fused_moe(x, w, tw, ti), dense_reference(x, w, tw, ti))


@pytest.mark.parametrize("gate_up", ["interleaved", "concatenated"])
@pytest.mark.parametrize("on_input", [False, True])
def test_exact_matches_dense_einsum_small(gate_up, on_input):
    w, x, tw, ti = make_case(8, 96, 64, 11, 4, gate_up=gate_up, xscale=3.0)
    assert_close64(fused_moe(x, w, tw, ti, apply_router_weight_on_input=on_input),
                   dense_reference(x, w, tw, ti, on_input))


def test_float32_input_no_bias_and_limit_off():
    w, _, tw, ti = make_case(6, 64, 96, 7, 3, bias=False)
    x = np.random.default_rng(1).normal(size=(7, 64)).astype(np.float32) * 3
    assert_close64(fused_moe(x, w, tw, ti, limit=None), dense_reference(x, w, tw, ti, limit=None))
    assert_close64(fused_moe(x, w, tw, ti, alpha=1.0), dense_reference(x, w, tw, ti, alpha=1.0))


def subset(w, experts):
    take = lambda a: None if a is None else np.ascontiguousarray(a[experts])
    return MoEWeights(take(w.w13_weight), take(w.w13_weight_scale), take(w.w2_weight),
                      take(w.w2_weight_scale), take(w.w13_bias), take(w.w2_bias), w.gate_up.value)


@pytest.mark.parametrize("placement", ["linear", "round_robin"])
@pytest.mark.parametrize("ep", [2, 3])
def test_expert_parallel_ranks_sum_to_the_full_layer(placement, ep):
    w, x, tw, ti = make_case(8, 64, 64, 9, 3)
    full = fused_moe(x, w, tw, ti)
    total = np.zeros_like(full)
    for r in range(ep):
        emap = make_expert_map(8, ep, r, placement)
        assert (emap == -1).any()
        local_w = subset(w, np.nonzero(emap >= 0)[0])
        total += fused_moe(x, local_w, tw, ti, expert_map=emap, global_num_experts=8)
    assert_close64(total, full)


def test_dropped_slots_and_intermediates():
    w, x, tw, ti = make_case(4, 64, 32, 6, 2)
    ti = ti.copy()
    ti[2, 1] = -1                                                    # a dropped slot contributes nothing
    out, it = fused_moe(x, w, tw, ti, return_intermediates=True)
    assert_close64(out, dense_reference(x, w, tw, ti))
    assert not it.valid[2, 1] and (it.rows[2, 1] == 0).all() and it.local_ids[2, 1] == -1
    assert np.array_equal(it.rows.sum(axis=1), out)
    assert it.gate_up.shape == (6, 2, 64) and it.activation.shape == (6, 2, 32)


def test_bf16_pipeline_rounds_where_documented():
    w, x, tw, ti = make_case(4, 64, 64, 6, 2, xscale=2.0)
    out, it = fused_moe(x, w, tw, ti, pipeline="bf16", return_intermediates=True)
    assert out.dtype == ml_dtypes.bfloat16
    bf = lambda a: a.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.array_equal(it.activation, bf(it.activation))        # intermediate is bf16
    assert np.array_equal(it.rows, bf(it.rows))                    # each (token, expert) row is bf16
    assert not np.array_equal(it.gate_up, bf(it.gate_up))           # pre-activation stays fp32
    acc = np.zeros((6, 64), np.float32)
    for s in range(2):                                              # fp32 sum in slot order, then bf16
        acc = acc + it.rows[:, s]
    assert np.array_equal(out.astype(np.float32), bf(acc))
    exact = fused_moe(x, w, tw, ti)
    assert np.abs(out.astype(np.float64) - exact).max() < 0.05 * np.abs(exact).max()


def test_bad_input():
    w, x, tw, ti = make_case(4, 64, 32, 3, 2)
    with pytest.raises(TypeError, match="x: expected dtype float32 or bfloat16"):
        fused_moe(x.astype(np.float64), w, tw, ti)
    with pytest.raises(ValueError, match=r"x: expected shape \(num_tokens, 64\)"):
        fused_moe(x[:, :32], w, tw, ti)
    with pytest.raises(ValueError, match=r"topk_ids: expected expert ids in \[-1, 4\)"):
        fused_moe(x, w, tw, ti + 4)
    with pytest.raises(TypeError, match="topk_weights: expected a float32"):
        fused_moe(x, w, tw.astype(np.float64), ti)
    with pytest.raises(ValueError, match="topk_weights/topk_ids"):
        fused_moe(x, w, tw[:, :1], ti)
    with pytest.raises(ValueError, match="pipeline"):
        fused_moe(x, w, tw, ti, pipeline="fp8")
    with pytest.raises(ValueError, match="activation"):
        fused_moe(x, w, tw, ti, activation="relu")
    with pytest.raises(ValueError, match="global_num_experts"):
        fused_moe(x, w, tw, ti, global_num_experts=8)
    with pytest.raises(ValueError, match="expert_map: expected local ids"):
        fused_moe(x, w, tw, ti, expert_map=np.array([0, 1, 2, 9], np.int32))
    bad = x.astype(np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite"):
        fused_moe(bad, w, tw, ti)


def test_float64_decode_used_by_the_forward_equals_the_weights_decoding():
    from mxfp4ref import dequantize
    rng = np.random.default_rng(4)
    packed = rng.integers(0, 256, size=(64, 48), dtype=np.uint8)
    scales = rng.integers(0, 253, size=(64, 3), dtype=np.uint8)     # 253, 254 can overflow float32
    scales[0, 0], scales[1, 1], scales[2, 2] = 0, 0xFF, 252
    w = MoEWeights(packed[None, :, :], scales[None], np.zeros((1, 96, 16), np.uint8),
                   np.zeros((1, 96, 1), np.uint8))
    ref = w.w13_dequantized(0).astype(np.float64)
    got = dequantize(packed, scales, dtype=np.float64)
    assert got.dtype == np.float64 and got.shape == (64, 96)
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    assert same.all() and np.isnan(got[1, 32:64]).all()
    num = ~np.isnan(ref)
    assert (np.signbit(got[num]) == np.signbit(ref[num])).all()       # -0.0 codes stay -0.0


def test_one_expert_at_a_time_memory():
    """tracemalloc peak of the exact forward stays near ONE expert's float64 matrices, not all 32."""
    import tracemalloc
    E, H, I = 32, 256, 256
    w, x, tw, ti = make_case(E, H, I, 64, 4)
    assert len(np.unique(ti)) == E                                   # every expert is used
    one_expert = (2 * I * H + H * I) * 8                             # float64 W13 and W2
    tracemalloc.start()
    try:
        fused_moe(x, w, tw, ti)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * one_expert, (peak, one_expert)
    assert peak < E * one_expert / 6
