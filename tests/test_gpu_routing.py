"""GPU: cupy_kernels.route / align_block_size equal mxfp4ref.route / align_block_size bit for bit.

Weights are compared as float32 bit patterns, ids and alignment arrays exactly. Logits are drawn
tie-heavy (few distinct values) as well as continuous. Marked gpu.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import mxfp4ref

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    import cupy
    return cupy


@pytest.fixture(scope="module")
def ck():
    import cupy_kernels
    return cupy_kernels


def logits(rng, T, E, kind):
    if kind == "ties":
        return rng.integers(-3, 4, (T, E)).astype(np.float32) * np.float32(0.5)
    if kind == "wide":
        return (rng.standard_normal((T, E)) * 30).astype(np.float32)
    return rng.standard_normal((T, E)).astype(np.float32)


def check_route(cp, ck, x_np, x_gpu, k, dtype=None, **kw):
    """Both kernels (8 lanes per token where it applies, and naive=True: one warp per token)."""
    w_want, i_want = mxfp4ref.route(x_np, k, **kw)
    for naive in (False, True):
        w, i = ck.route(x_gpu, k, dtype=dtype, naive=naive, **kw)
        w, i = w.get(), i.get()
        assert np.array_equal(i, i_want), f"naive={naive}: ids differ at {np.argwhere(i != i_want)[:3]}"
        bad = np.argwhere(w.view(np.uint32) != w_want.view(np.uint32))
        assert bad.size == 0, (f"naive={naive}: {len(bad)} weights differ, first {bad[0]}: "
                               f"{w[tuple(bad[0])]!r} vs {w_want[tuple(bad[0])]!r}")


@pytest.mark.parametrize("order", ["weight", "id"])
@pytest.mark.parametrize("scoring,renormalize", [("softmax", True), ("softmax", False),
                                                 ("topk_softmax", True), ("sigmoid", True),
                                                 ("sigmoid", False)])
@pytest.mark.parametrize("E,k", [(6, 1), (8, 2), (13, 3), (32, 4), (128, 4), (200, 8), (256, 5), (256, 32)])
def test_route_equals_spec(cp, ck, E, k, scoring, renormalize, order):
    rng = np.random.default_rng(E * 100 + k)
    for kind, T in (("ties", 300), ("normal", 301), ("wide", 302)):     # T % 4 != 0: partial warps
        x = logits(rng, T, E, kind)
        check_route(cp, ck, x, cp.asarray(x), k, scoring=scoring, renormalize=renormalize, order=order)


@pytest.mark.parametrize("E,k", [(8, 2), (32, 4), (128, 4), (256, 8)])
def test_route_few_tokens_takes_the_one_warp_kernel(cp, ck, E, k):
    """Up to LATENCY_MAX_TOKENS tokens the default is the one-warp kernel (lower latency), above it the
    8-lanes kernel: the same bits as the spec on both sides of the switch."""
    rng = np.random.default_rng(E + k)
    n = ck.routing.LATENCY_MAX_TOKENS
    for kind, T in (("ties", 1), ("normal", 2), ("wide", 7), ("normal", n), ("ties", n + 1)):
        x = logits(rng, T, E, kind)
        check_route(cp, ck, x, cp.asarray(x), k)
        check_route(cp, ck, x, cp.asarray(x), k, scoring="sigmoid", order="id")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_route_half_inputs(cp, ck, dtype):
    rng = np.random.default_rng(4)
    x32 = logits(rng, 1000, 128, "normal")
    if dtype == "bfloat16":
        x = x32.astype(ml_dtypes.bfloat16)
        check_route(cp, ck, x, cp.asarray(x.view(np.uint16)), 4, dtype="bfloat16")
    else:
        x = x32.astype(np.float16)
        check_route(cp, ck, x, cp.asarray(x), 4)


def test_route_gpt_oss_batch(cp, ck):
    """16384 tokens, 128 experts, top-4, the shape of the benchmark."""
    rng = np.random.default_rng(8)
    x = logits(rng, 16384, 128, "normal")
    check_route(cp, ck, x, cp.asarray(x), 4)
    check_route(cp, ck, x, cp.asarray(x), 4, scoring="topk_softmax", order="id")


def test_route_bad_input(cp, ck):
    x = cp.zeros((4, 8), cp.float32)
    x[1, 3] = cp.nan
    for naive in (False, True):
        with pytest.raises(ValueError, match="finite"):
            ck.route(x, 2, naive=naive)
    with pytest.raises(ValueError, match="top_k"):
        ck.route(cp.zeros((4, 8), cp.float32), 9)
    with pytest.raises(ValueError, match="num_experts"):
        ck.route(cp.zeros((4, 300), cp.float32), 2)
    with pytest.raises(ValueError, match="contiguous"):
        ck.route(cp.zeros((4, 16), cp.float32)[:, ::2], 2)
    deep = np.full((2, 8), -800.0, np.float32)                # sigmoid scores underflow to exactly 0
    with pytest.raises(ValueError, match="underflow"):
        mxfp4ref.route(deep, 2, scoring="sigmoid")
    for naive in (False, True):
        with pytest.raises(ValueError, match="underflow"):
            ck.route(cp.asarray(deep), 2, scoring="sigmoid", naive=naive)
    w, _ = ck.route(cp.asarray(deep), 2, scoring="sigmoid", renormalize=False)
    assert not cp.any(w)


def check_align(cp, ck, ids_np, bs, E, emap=None, **kw):
    want = mxfp4ref.align_block_size(ids_np, bs, E, emap, **kw)
    for naive, fused in ((False, False), (True, False), (False, True)):
        got = ck.align_block_size(cp.asarray(ids_np), bs, E, None if emap is None else cp.asarray(emap),
                                  naive=naive, fused=fused, **kw)
        for name, g, w in zip(("sorted_token_ids", "expert_ids", "num_tokens_post_padded"), got, want):
            g = g.get()
            assert g.shape == w.shape, f"naive={naive} {name}: shape {g.shape} vs {w.shape}"
            bad = np.flatnonzero(g != w)
            assert bad.size == 0, (f"naive={naive} {name}: {bad.size} entries differ, first at {bad[0]}: "
                                   f"{g[bad[0]]} vs {w[bad[0]]}")


@pytest.mark.parametrize("idt", [np.int32, np.int64])
@pytest.mark.parametrize("T,k,E,bs", [(1, 1, 8, 16), (3, 2, 8, 4), (7, 4, 128, 16), (333, 4, 32, 64),
                                      (1000, 8, 256, 128), (5000, 4, 128, 64), (16384, 4, 128, 64),
                                      (100, 6, 1000, 16)])
def test_align_equals_spec(cp, ck, T, k, E, bs, idt):
    rng = np.random.default_rng(T + E)
    ids = rng.integers(0, E, (T, k)).astype(idt)
    check_align(cp, ck, ids, bs, E)
    skewed = np.minimum(rng.geometric(0.3, (T, k)) - 1, E - 1).astype(idt)   # few hot experts
    check_align(cp, ck, skewed, bs, E, pad_sorted_ids=True)


def test_align_with_expert_map(cp, ck):
    rng = np.random.default_rng(2)
    E = 128
    ids = rng.integers(0, E, (2048, 4)).astype(np.int32)
    for ep_rank in (0, 3):
        emap = mxfp4ref.make_expert_map(E, 4, ep_rank)
        check_align(cp, ck, ids, 64, E, emap)


def test_align_bad_ids(cp, ck):
    for naive in (False, True):
        with pytest.raises(ValueError, match="topk_ids"):
            ck.align_block_size(cp.asarray(np.array([[0, 9]], np.int32)), 16, 8, naive=naive)
    with pytest.raises(TypeError, match="topk_ids"):
        ck.align_block_size(cp.zeros((2, 2), cp.float32), 16, 8)


@pytest.mark.parametrize("T,E,k,bs,scoring,renormalize", [
    (16384, 128, 4, 64, "softmax", True), (301, 13, 3, 16, "sigmoid", True), (1, 8, 2, 4, "topk_softmax", True),
    (1000, 256, 8, 128, "sigmoid", False), (257, 32, 4, 16, "softmax", False), (129, 64, 16, 32, "softmax", True)])
def test_route_and_align_equals_spec(cp, ck, T, E, k, bs, scoring, renormalize):
    """route_and_align == spec route, then spec align_block_size (count fused into the routing kernel
    where it applies; the last two rows take the unfused fallback: softmax without renormalization,
    top_k > 8)."""
    rng = np.random.default_rng(T + E + k)
    for kind in ("ties", "normal"):
        x = logits(rng, T, E, kind)
        for emap, pad in ((None, False), (mxfp4ref.make_expert_map(E, 2, 1), True)):
            w_want, i_want = mxfp4ref.route(x, k, scoring=scoring, renormalize=renormalize)
            want = mxfp4ref.align_block_size(i_want, bs, E, emap, pad_sorted_ids=pad)
            got = ck.route_and_align(cp.asarray(x), k, bs, scoring=scoring, renormalize=renormalize,
                                     expert_map=None if emap is None else cp.asarray(emap), pad_sorted_ids=pad)
            assert np.array_equal(got[0].get().view(np.uint32), w_want.view(np.uint32))
            assert np.array_equal(got[1].get(), i_want)
            for name, g, wv in zip(("sorted_token_ids", "expert_ids", "num_tokens_post_padded"), got[2:], want):
                g = g.get()
                assert g.shape == wv.shape, f"{name}: shape {g.shape} vs {wv.shape}"
                bad = np.flatnonzero(g != wv)
                assert bad.size == 0, f"{name}: {bad.size} entries differ, first at {bad[0]}: {g[bad[0]]} vs {wv[bad[0]]}"


@pytest.mark.parametrize("ipb,warps", [(512, 4), (1024, 8), (1024, 16), (2048, 16), (2048, 32)])
def test_align_block_shapes(cp, ck, monkeypatch, ipb, warps):
    """The two-kernel align path (and route_and_align's fused counts) with other ids-per-block /
    warps-per-block settings than the default, as the benchmark tries them."""
    from cupy_kernels import align as _align
    monkeypatch.setattr(_align, "IDS_PER_BLOCK", ipb)
    monkeypatch.setattr(_align, "MAX_WARPS", warps)
    rng = np.random.default_rng(ipb + warps)
    for T, k, E, bs in ((16384, 4, 128, 64), (5000, 4, 128, 64), (777, 6, 1000, 16)):
        ids = rng.integers(0, E, (T, k)).astype(np.int32)
        check_align(cp, ck, ids, bs, E)
    x = logits(rng, 16384, 128, "normal")
    w_want, i_want = mxfp4ref.route(x, 4)
    want = mxfp4ref.align_block_size(i_want, 64, 128)
    got = ck.route_and_align(cp.asarray(x), 4, 64)
    assert np.array_equal(got[1].get(), i_want)
    for g, wv in zip(got[2:], want):
        assert np.array_equal(g.get(), wv)


@pytest.mark.gpu
@pytest.mark.parametrize("E", [8, 32, 128, 256])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_lean_routing_kernel_gives_the_one_warp_kernels_bits(cp, E, k, dtype):
    """mx_route_lean (moe_forward's routing: softmax with renormalization, selection order) writes the
    one-warp reference kernel's ids and weights bit for bit over random, tied, +-0 and non-finite logits
    and 1..256 tokens (several blocks)."""
    from cupy_kernels import routing
    if k > E:
        pytest.skip("top_k > num_experts")
    rng = np.random.default_rng(E * 10 + k)
    for T, kind in [(1, "random"), (2, "ties"), (7, "zeros"), (3, "nonfinite"), (256, "random")]:
        x = rng.standard_normal((T, E)).astype(np.float32)
        if kind == "ties":
            x = rng.integers(-2, 3, (T, E)).astype(np.float32)
        elif kind == "zeros":
            x = np.where(rng.random((T, E)) < 0.5, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
        elif kind == "nonfinite":       # moe_forward does not check: both kernels select on the same keys
            x[0, E // 2], x[1, 0], x[1, E - 1], x[2, 1] = np.inf, -np.inf, np.nan, -np.nan
        if dtype == "bfloat16":
            xg, name = cp.asarray(x.astype(ml_dtypes.bfloat16).view(np.uint16)), "bfloat16"
        else:
            xg, name = cp.asarray(x.astype(dtype)), dtype
        assert routing.lean_applies(T, k, 0, True, False)
        out = {}
        for lean in (False, True):
            w, i, bad = cp.full((T, k), np.nan, cp.float32), cp.full((T, k), -7, cp.int32), cp.zeros(1, cp.int32)
            routing.launch(xg, name, k, 0, True, False, w, i, bad, naive=not lean, lean=lean)
            out[lean] = (cp.asnumpy(w).view(np.uint32), cp.asnumpy(i))
        assert (out[True][1] >= 0).all() and (out[True][1] < E).all()
        np.testing.assert_array_equal(out[True][1], out[False][1], err_msg=f"ids T={T} {kind}")
        np.testing.assert_array_equal(out[True][0], out[False][0], err_msg=f"weights T={T} {kind}")
