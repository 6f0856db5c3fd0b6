"""TP/EP slicing with vLLM's gpt-oss loader rule, and the ranks' outputs summing to the full layer."""
import functools

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from _moe_layers import byte_layer
from mxfp4ref.moe.forward import fused_moe
from mxfp4ref.moe.random_weights import random_moe_weights
from mxfp4ref.moe.routing import make_expert_map, route
from mxfp4ref.moe.sharding import shard_expert_parallel, shard_tensor_parallel, tp_channel_range
from mxfp4ref.moe.weights import MoEWeights

E, H, I = 4, 64, 160                        # I/32 = 5 blocks: uneven for tp = 2, 3, 4, 8


def _layer(seed=0, gate_up="interleaved"):
    return byte_layer(E, H, I, seed=seed, gate_up=gate_up)


def test_gpt_oss_channel_ranges():
    # (tp, expected channels per rank) for I = 2880 (90 blocks): P = ceil(90/tp) * 32
    table = {1: [2880], 2: [1440, 1440], 3: [960, 960, 960], 4: [736, 736, 736, 672],
             8: [384] * 7 + [192]}
    for tp, sizes in table.items():
        got = [tp_channel_range(2880, tp, r) for r in range(tp)]
        assert [e - s for s, e, _ in got] == sizes
        assert got[0][0] == 0 and got[-1][1] == 2880 and all(a[1] == b[0] for a, b in zip(got, got[1:]))
    assert [tp_channel_range(160, 8, r)[:2] for r in range(8)] == \
        [(0, 32), (32, 64), (64, 96), (96, 128), (128, 160), (160, 160), (160, 160), (160, 160)]


@pytest.mark.parametrize("gate_up", ["interleaved", "concatenated"])
@pytest.mark.parametrize("tp", [1, 2, 3, 4, 8])
def test_tp_slices_cover_the_layer(tp, gate_up):
    w = _layer(1, gate_up)
    gate, up = [], []
    for r in range(tp):
        s, t, P = tp_channel_range(I, tp, r)
        part = shard_tensor_parallel(w, tp, r)
        assert part.intermediate_size == P and part.hidden_size == H and part.gate_up == gate_up
        for e in range(E):
            g, u = part.gate_rows(e), part.up_rows(e)                       # (P, H)
            assert np.array_equal(g[:t - s], w.gate_rows(e)[s:t]) and np.array_equal(u[:t - s], w.up_rows(e)[s:t])
            assert not part.w2_weight[e][:, (t - s) // 2:].any()           # padded columns are zero bytes
            assert np.array_equal(part.w2_dequantized(e)[:, :t - s], w.w2_dequantized(e)[:, s:t])
        gi, ui = part.gate_up_indices()
        gate.append(part.w13_bias[:, gi[:t - s]]); up.append(part.w13_bias[:, ui[:t - s]])
        assert not part.w13_bias[:, gi[t - s:]].any()
        assert np.array_equal(part.w2_bias, w.w2_bias) if r == 0 else not part.w2_bias.any()
        if t > s:
            exact = shard_tensor_parallel(w, tp, r, pad=False)
            assert exact.intermediate_size == t - s
            assert np.array_equal(exact.gate_rows(0), w.gate_rows(0)[s:t])
            assert np.array_equal(exact.up_rows(0), w.up_rows(0)[s:t])
            assert np.array_equal(exact.w2_dequantized(0), w.w2_dequantized(0)[:, s:t])
        else:
            with pytest.raises(ValueError, match="owns no intermediate channels"):
                shard_tensor_parallel(w, tp, r, pad=False)
    gi, ui = w.gate_up_indices()
    assert np.array_equal(np.concatenate(gate, 1), w.w13_bias[:, gi])
    assert np.array_equal(np.concatenate(up, 1), w.w13_bias[:, ui])


def test_tp_errors():
    w = _layer()
    with pytest.raises(ValueError, match=r"tp_rank: expected an int in \[0, 2\), got 2"):
        shard_tensor_parallel(w, 2, 2)
    with pytest.raises(ValueError, match="tp_size: expected a positive int, got 0"):
        shard_tensor_parallel(w, 0, 0)
    with pytest.raises(TypeError, match="weights: expected MoEWeights"):
        shard_tensor_parallel(None, 1, 0)


def test_ep_slices_experts_in_local_order():
    w = _layer(2)
    emap = np.array([-1, 1, -1, 0], np.int32)               # global 3 -> local 0, global 1 -> local 1
    part = shard_expert_parallel(w, emap)
    assert part.num_experts == 2
    for f in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias"):
        assert np.array_equal(getattr(part, f), getattr(w, f)[[3, 1]])


@pytest.mark.parametrize("emap, exc, words", [
    (np.array([0, 1, 2], np.int32), ValueError, r"expected shape \(4,\)"),
    (np.array([0, 1, 2, 3], np.int64), TypeError, "expected a numpy int32 array, got int64"),
    (np.array([0, 0, -1, -1], np.int32), ValueError, "each exactly once"),
    (np.array([0, 2, -1, -1], np.int32), ValueError, "each exactly once"),
    (np.array([0, -2, -1, -1], np.int32), ValueError, "each exactly once"),
    (np.array([-1, -1, -1, -1], np.int32), ValueError, "holds no experts"),
])
def test_ep_errors(emap, exc, words):
    with pytest.raises(exc, match=words):
        shard_expert_parallel(_layer(), emap)


# ---- the ranks' outputs add up to the layer (needs fused_moe, spec/12) -----------------------------

U = 2.0 ** -53                                             # float64 unit roundoff


def gamma(n):
    """Higham's gamma_n = n u / (1 - n u): bound on the relative error of an n-term float64 sum."""
    return n * U / (1 - n * U)


@functools.lru_cache(maxsize=None)
def _problem(E, H, I, k, T=24, seed=0, gate_up="interleaved"):
    w = random_moe_weights(E, H, I, seed=seed, gate_up=gate_up)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, H)).astype(ml_dtypes.bfloat16)
    topk_weights, topk_ids = route(rng.standard_normal((T, E)).astype(np.float32), k)
    return w, x, topk_weights, topk_ids


@pytest.mark.parametrize("I, gate_up", [(288, "interleaved"), (288, "concatenated"), (2880, "interleaved")])
@pytest.mark.parametrize("tp", [1, 2, 3, 4, 8])
def test_tp_partial_outputs_sum_to_the_layer(tp, I, gate_up):
    E, H, k = 6, 64, 4                     # I = 288: 9 blocks, uneven for tp 2, 4, 8; I = 2880: gpt-oss
    w, x, tw, ids = _problem(E, H, I, k, gate_up=gate_up)
    full, it = fused_moe(x, w, tw, ids, return_intermediates=True)
    total = np.zeros_like(full)
    for r in range(tp):
        s, t, _ = tp_channel_range(I, tp, r)
        part = shard_tensor_parallel(w, tp, r)
        out, ir = fused_moe(x, part, tw, ids, return_intermediates=True)
        # GEMM1 sees the same rows: the rank's pre-activations are the full layer's, bit for bit
        fg, fu = w.gate_up_indices()
        pg, pu = part.gate_up_indices()
        assert np.array_equal(ir.gate_up[..., pg[:t - s]], it.gate_up[..., fg[s:t]])
        assert np.array_equal(ir.gate_up[..., pu[:t - s]], it.gate_up[..., fu[s:t]])
        total += out
        first = out if r == 0 else first
    # only GEMM2's sum is regrouped (I terms + bias, times gamma, k slots, tp ranks): both results are
    # within gamma_n * S of the real value, S = sum over slots of |gamma| (|a| |W2|^T + |b2|)
    S = np.zeros_like(full)
    for e in range(E):
        tok, slot = np.nonzero(ids == e)
        a = np.abs(it.activation[tok, slot])                                     # (n, I)
        S[tok] += np.abs(tw[tok, slot])[:, None] * (a @ np.abs(w.w2_dequantized(e).astype(np.float64)).T
                                                    + np.abs(w.w2_bias[e]))
    bound = 2 * gamma(I + k + tp + 2) * S
    assert np.all(np.abs(total - full) <= bound)
    if tp > 1:                                             # the bound is tight enough to see a lost rank
        assert not np.all(np.abs(total - first - full) <= bound)


@pytest.mark.parametrize("placement", ["linear", "round_robin"])
@pytest.mark.parametrize("ep", [1, 2, 4])
def test_ep_partial_outputs_sum_to_the_layer(ep, placement):
    E, H, I, k = 6, 64, 96, 4
    w, x, tw, ids = _problem(E, H, I, k, seed=3)
    full, it = fused_moe(x, w, tw, ids, return_intermediates=True)
    total = np.zeros_like(full)
    held = np.zeros(E, int)
    for r in range(ep):
        emap = make_expert_map(E, ep, r, placement)
        held += emap >= 0
        out, ir = fused_moe(x, shard_expert_parallel(w, emap), tw, ids, expert_map=emap,
                            global_num_experts=E, return_intermediates=True)
        mine = ir.valid                                                          # slots this rank computed
        assert np.array_equal(mine, emap[ids] >= 0)
        assert np.array_equal(ir.rows[mine], it.rows[mine])                      # same rows, bit for bit
        assert not ir.rows[~mine].any()
        total += out
    assert np.array_equal(held, np.ones(E, int))                                 # every expert once
    bound = 2 * gamma(k + ep) * np.abs(it.rows).sum(axis=1)                      # regrouped k-slot sums
    assert np.all(np.abs(total - full) <= bound)


def test_every_padded_backend_buffer_holds_a_tp_shard():
    """vLLM's per-rank buffer padded_sizes(b, H, I // tp) fits P channels whenever b pads I to >= 32."""
    from mxfp4ref.moe.padding import Mxfp4Backend, padded_sizes, padding_multiples
    for I_ in (2880, 160 * 6):
        for tp in (1, 2, 3, 4, 8):
            if I_ % tp:
                continue
            P = tp_channel_range(I_, tp, 0)[2]
            for b in Mxfp4Backend:
                if padding_multiples(b)[1] >= 32:
                    assert padded_sizes(b, 2880, I_ // tp)[1] >= P, (b, I_, tp)
    assert padded_sizes("b12x-mxfp4-bf16", 2880, 720)[1] < tp_channel_range(2880, 4, 0)[2]   # 720 < 736



@settings(max_examples=40, deadline=None)
@given(blocks=st.integers(1, 12), tp=st.integers(1, 16), seed=st.integers(0, 2 ** 32 - 1),
       gate_up=st.sampled_from(["interleaved", "concatenated"]))
def test_tp_shards_partition_the_channels_property(blocks, tp, seed, gate_up):
    """Concatenating the ranks' owned channels (pad=False) gives back the layer, for any I and tp."""
    I_ = 32 * blocks
    rng = np.random.default_rng(seed)
    u8 = lambda *s: rng.integers(0, 256, s, dtype=np.uint8)
    w = MoEWeights(u8(2, 2 * I_, 16), u8(2, 2 * I_, 1), u8(2, 32, I_ // 2), u8(2, 32, I_ // 32),
                   rng.standard_normal((2, 2 * I_)).astype(np.float32), None, gate_up=gate_up)
    owned = [r for r in range(tp) if tp_channel_range(I_, tp, r)[1] > tp_channel_range(I_, tp, r)[0]]
    parts = [shard_tensor_parallel(w, tp, r, pad=False).with_gate_up("interleaved") for r in owned]
    full = w.with_gate_up("interleaved")
    for f in ("w13_weight", "w13_weight_scale", "w13_bias"):
        assert np.array_equal(np.concatenate([getattr(p, f) for p in parts], axis=1), getattr(full, f))
    for f in ("w2_weight", "w2_weight_scale"):
        assert np.array_equal(np.concatenate([getattr(p, f) for p in parts], axis=2), getattr(full, f))
    assert all(p.intermediate_size == tp_channel_range(I_, tp, 0)[2] for p in parts[:-1])
