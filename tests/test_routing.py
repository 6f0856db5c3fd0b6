"""Routing: selection vs a brute-force sort on tie-heavy inputs, weight arithmetic, orders, bad input."""
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mxfp4ref.moe.routing import make_expert_map, route


def brute_force_topk(row, k):
    """Independent oracle: sort (value desc, index asc) pairs with Python's sort, take k."""
    pairs = sorted(((-float(v), i) for i, v in enumerate(row)))
    return [i for _, i in pairs[:k]]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_selection_matches_brute_force_on_ties(E, T, seed):
    rng = np.random.default_rng(seed)
    logits = rng.integers(-2, 3, size=(T, E)).astype(np.float32)   # values in {-2..2}: many ties
    logits[rng.random((T, E)) < 0.1] = -0.0                          # -0.0 ties with +0.0
    for k in {1, E // 2 or 1, E}:
        w, ids = route(logits, k)
        for t in range(T):
            assert ids[t].tolist() == brute_force_topk(logits[t], k)
        w_id, ids_id = route(logits, k, order="id")
        assert (ids_id == np.sort(ids, axis=1)).all()
        # the weight of a (token, expert) pair does not depend on the order
        for t in range(T):
            assert dict(zip(ids[t], w[t])) == dict(zip(ids_id[t], w_id[t]))


def test_all_equal_logits_pick_lowest_ids():
    w, ids = route(np.zeros((2, 8), np.float32), 3)
    assert ids.tolist() == [[0, 1, 2]] * 2
    assert (w == np.float32(1 / 3)).all()


def reference_weights(row, ids, scoring, renormalize):
    """Python-float (binary64) transcription of spec/11's arithmetic, element by element."""
    x = [float(v) for v in row]
    if scoring == "sigmoid":
        s = [1.0 / (1.0 + math.exp(-v)) for v in x]
        sel = [s[i] for i in ids]
        if not renormalize:
            return sel
    else:
        m = max(x)
        e = [math.exp(v - m) for v in x]
        sel = [e[i] for i in ids]
        if not renormalize and scoring == "softmax":
            tot = 0.0
            for v in e:
                tot += v
            return [v / tot for v in sel]
    tot = 0.0
    for i in sorted(ids):
        tot += (s if scoring == "sigmoid" else e)[i]
    return [v / tot for v in sel]


@pytest.mark.parametrize("scoring,renormalize", [("softmax", True), ("softmax", False), ("topk_softmax", True),
                                                 ("sigmoid", True), ("sigmoid", False)])
@pytest.mark.parametrize("order", ["weight", "id"])
def test_weights_follow_the_spec_arithmetic(scoring, renormalize, order):
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(50, 32)) * 4).astype(np.float32)
    w, ids = route(logits, 4, scoring=scoring, renormalize=renormalize, order=order)
    assert w.dtype == np.float32 and ids.dtype == np.int32 and w.shape == ids.shape == (50, 4)
    for t in range(50):
        ref = np.array(reference_weights(logits[t], ids[t].tolist(), scoring, renormalize)).astype(np.float32)
        assert (w[t].view(np.uint32) == ref.view(np.uint32)).all()


def test_topk_softmax_equals_softmax_renormalized_bitwise():
    rng = np.random.default_rng(5)
    logits = (rng.normal(size=(200, 128)) * 3).astype(np.float32)
    a = route(logits, 4, scoring="softmax")
    b = route(logits, 4, scoring="topk_softmax")
    assert (a[0].view(np.uint32) == b[0].view(np.uint32)).all() and (a[1] == b[1]).all()


def test_order_weight_is_descending_and_renormalized_sums_to_one():
    rng = np.random.default_rng(1)
    w, _ = route(rng.normal(size=(100, 32)).astype(np.float32), 4)
    assert (np.diff(w, axis=1) <= 0).all()
    assert np.allclose(w.astype(np.float64).sum(1), 1.0, atol=4 * 2**-24)


def test_bf16_and_fp16_logits_are_read_exactly():
    rng = np.random.default_rng(2)
    x32 = rng.normal(size=(10, 16)).astype(ml_dtypes.bfloat16).astype(np.float32)
    for dt in (ml_dtypes.bfloat16, np.float16):
        xs = x32.astype(dt)
        a, b = route(xs, 4), route(xs.astype(np.float32), 4)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


@pytest.mark.parametrize("bad,exc,match", [
    (np.zeros((2, 4), np.float64), TypeError, "router_logits: expected dtype"),
    (np.zeros(4, np.float32), ValueError, "router_logits: expected shape"),
    ([[0.0, 1.0]], TypeError, "router_logits: expected a numpy.ndarray"),
])
def test_bad_logits(bad, exc, match):
    with pytest.raises(exc, match=match):
        route(bad, 1)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_rejected(value):
    x = np.zeros((3, 4), np.float32)
    x[1, 2] = value
    with pytest.raises(ValueError, match="token 1, expert 2"):
        route(x, 2)


def test_bad_top_k_and_options():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="top_k: expected 1 <= top_k <= num_experts \\(4\\), got 5"):
        route(x, 5)
    with pytest.raises(ValueError, match="top_k"):
        route(x, 0)
    with pytest.raises(TypeError, match="top_k"):
        route(x, 2.0)
    with pytest.raises(ValueError, match="scoring"):
        route(x, 2, scoring="softplus")
    with pytest.raises(ValueError, match="order"):
        route(x, 2, order="random")
    with pytest.raises(ValueError, match="renormalize"):
        route(x, 2, scoring="topk_softmax", renormalize=False)


# ---- expert maps -----------------------------------------------------------------------------

@pytest.mark.parametrize("E,ep", [(128, 1), (128, 4), (32, 3), (10, 4), (7, 7)])
@pytest.mark.parametrize("placement", ["linear", "round_robin"])
def test_expert_map_partitions_the_experts(E, ep, placement):
    maps = [make_expert_map(E, ep, r, placement) for r in range(ep)]
    owner = np.stack([m >= 0 for m in maps])
    assert (owner.sum(0) == 1).all()                                  # each expert on exactly one rank
    counts = owner.sum(1)
    assert counts.tolist() == [E // ep + (r < E % ep) for r in range(ep)]
    for r, m in enumerate(maps):
        assert m.dtype == np.int32
        local = m[m >= 0]
        assert (local == np.arange(local.size)).all()                 # local ids in ascending global order
        if placement == "round_robin":
            assert (np.nonzero(m >= 0)[0] == np.arange(r, E, ep)).all()
        else:
            start = r * (E // ep) + min(r, E % ep)
            assert (np.nonzero(m >= 0)[0] == np.arange(start, start + counts[r])).all()


def test_expert_map_example_from_vllm_rule():
    # 10 experts on 4 ranks, linear: ranks own 3, 3, 2, 2 (the first 10 % 4 = 2 ranks get one more)
    assert make_expert_map(10, 4, 1).tolist() == [-1, -1, -1, 0, 1, 2, -1, -1, -1, -1]
    assert make_expert_map(10, 4, 3).tolist() == [-1] * 8 + [0, 1]


def test_expert_map_bad_input():
    with pytest.raises(ValueError, match="ep_rank"):
        make_expert_map(8, 2, 2)
    with pytest.raises(ValueError, match="ep_size"):
        make_expert_map(8, 9, 0)
    with pytest.raises(ValueError, match="placement"):
        make_expert_map(8, 2, 0, "random")
    with pytest.raises(TypeError, match="global_num_experts"):
        make_expert_map(8.0, 2, 0)


def test_sigmoid_underflow():
    x = np.full((2, 4), -800.0, np.float32)
    x[0, 1] = 0.0
    w, ids = route(x, 2, scoring="sigmoid", renormalize=False)
    assert (w[1] == 0).all() and w[0, 0] == 0.5
    with pytest.raises(ValueError, match="token 1's 2 selected sigmoid scores all underflow"):
        route(x, 2, scoring="sigmoid")


def test_vllm_style_float32_routing_differs_only_in_last_bits():
    """spec/11 'Known divergence': an emulation of vLLM's topk_softmax arithmetic (float32 expf, float32
    sum, multiply by 1/sum, select on probabilities) picks the same ids on untied logits; its weights
    differ by a few float32 ulps."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 128)) * 2).astype(np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e * (np.float32(1) / e.sum(axis=1, keepdims=True, dtype=np.float32))
    ids = np.argsort(-p, axis=1, kind="stable")[:, :4]
    w = np.take_along_axis(p, ids, 1)
    w_renorm = w / w.sum(axis=1, keepdims=True, dtype=np.float32)
    ulps = lambda a, b: np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64)).max()
    ref, ref_ids = route(x, 4)
    assert (ids == ref_ids).all() and 0 < ulps(w_renorm, ref) <= 8
    assert 0 < ulps(w, route(x, 4, renormalize=False)[0]) <= 32
