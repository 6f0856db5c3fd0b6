"""Gated activations: formulas vs scalar Python, both layouts, clamps, Lipschitz constants, bad input."""
import math

import numpy as np
import pytest

from mxfp4ref.moe.activations import gelu_and_mul, silu_and_mul, swigluoai
from mxfp4ref.moe.error_bound import LIPSCHITZ_GELU, LIPSCHITZ_SILU


def swiglu_scalar(g, u, alpha=1.702, limit=7.0):
    g = min(g, limit)
    u = max(-limit, min(u, limit))
    return g / (1.0 + math.exp(-alpha * g)) * (u + 1.0)


def interleave(g, u):
    h = np.empty(g.shape[:-1] + (2 * g.shape[-1],), g.dtype)
    h[..., 0::2], h[..., 1::2] = g, u
    return h


@pytest.fixture
def gu():
    rng = np.random.default_rng(0)
    g = rng.normal(0, 6, size=(3, 40))
    u = rng.normal(0, 6, size=(3, 40))
    g[0, :4] = [7.0, 7.5, -100.0, 0.0]                     # at, above the limit; far negative; zero
    u[0, :4] = [-7.0, -9.0, 8.0, -1.0]
    return g, u


def test_swigluoai_matches_scalar_formula_and_layouts(gu):
    g, u = gu
    ref = np.vectorize(swiglu_scalar)(g, u)
    out_i = swigluoai(interleave(g, u))
    out_c = swigluoai(np.concatenate([g, u], axis=-1), layout="concatenated")
    assert np.allclose(out_i, ref, rtol=1e-14, atol=0) and np.array_equal(out_i, out_c)
    assert out_i[0, 0] == swiglu_scalar(7.0, -7.0) and out_i[0, 1] == out_i[0, 1]


def test_swigluoai_clamps():
    h = interleave(np.array([7.0, 8.0, 100.0]), np.array([7.0, 9.0, -50.0]))
    out = swigluoai(h)
    assert out[0] == out[1]                                 # gate clamped above at 7, up clamped at 7
    assert out[2] == pytest.approx(7 / (1 + math.exp(-1.702 * 7)) * (-6.0))
    no_limit = swigluoai(h, limit=None)
    assert no_limit[1] == pytest.approx(8 / (1 + math.exp(-1.702 * 8)) * 10.0)
    g_neg = interleave(np.array([-9.0]), np.array([0.0]))
    assert swigluoai(g_neg)[0] == pytest.approx(-9 / (1 + math.exp(1.702 * 9)))   # no lower gate clamp


def test_silu_and_gelu_match_scalar_formulas(gu):
    g, u = gu
    silu = np.vectorize(lambda a, b: a / (1 + math.exp(-a)) * b)(g, u)
    gelu = np.vectorize(lambda a, b: 0.5 * a * (1 + math.erf(a / math.sqrt(2))) * b)(g, u)
    cat = np.concatenate([g, u], axis=-1)
    assert np.allclose(silu_and_mul(cat), silu, rtol=1e-14, atol=0)
    assert np.allclose(gelu_and_mul(cat), gelu, rtol=1e-14, atol=1e-300)
    assert np.array_equal(silu_and_mul(interleave(g, u), layout="interleaved"), silu_and_mul(cat))
    assert np.array_equal(gelu_and_mul(interleave(g, u), layout="interleaved"), gelu_and_mul(cat))


def test_float32_in_float32_out(gu):
    g, u = gu
    h = interleave(g, u).astype(np.float32)
    for f in (swigluoai, silu_and_mul, gelu_and_mul):
        out = f(h) if f is swigluoai else f(h, layout="interleaved")
        assert out.dtype == np.float32 and out.shape == (3, 40)


def test_lipschitz_constants_are_upper_bounds():
    t = np.linspace(-30, 30, 600001)
    sig = 1 / (1 + np.exp(-t))
    d_silu = sig + t * sig * (1 - sig)                     # d/dt [t sigmoid(t)]
    assert np.abs(d_silu).max() < LIPSCHITZ_SILU and np.abs(d_silu).max() > LIPSCHITZ_SILU - 0.01
    phi = np.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + np.vectorize(math.erf)(t / math.sqrt(2)))
    d_gelu = Phi + t * phi
    assert np.abs(d_gelu).max() < LIPSCHITZ_GELU and np.abs(d_gelu).max() > LIPSCHITZ_GELU - 0.01


@pytest.mark.parametrize("bad,exc,match", [
    (np.zeros((2, 3)), ValueError, "gate_up: expected an even last dimension"),
    (np.zeros((2, 4), np.float16), TypeError, "gate_up: expected dtype float32 or float64"),
    ([1.0, 2.0], TypeError, "gate_up: expected a numpy.ndarray"),
])
def test_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        swigluoai(bad)


def test_bad_layout_and_limit():
    with pytest.raises(ValueError, match="layout"):
        silu_and_mul(np.zeros((1, 4)), layout="split")
    with pytest.raises(ValueError, match="limit"):
        swigluoai(np.zeros((1, 4)), limit=-1.0)
