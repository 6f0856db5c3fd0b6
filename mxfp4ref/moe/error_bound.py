"""A rigorous per-element bound on |kernel - exact| for the MoE forward (spec/12, "Error bound").

The kernel model (KernelModel): bf16 x; weights upcast exactly to bf16; every dot product (plus its fp32
bias) accumulated in fp32 in ANY order with any faithful rounding (|error| <= gamma_n * sum|terms|,
gamma_n = n*u/(1 - n*u), Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1 and 4.2);
activation in fp32 to within rho(g) relative; intermediate, each (token, expert) row and the output
rounded to bf16 (u = 2**-8); router weights possibly rounded to bf16 first; a token's rows summed in fp32
in any order. The bound is propagated stage by stage from the exact (float64) values; each line of
``_expert_bound`` is one line of the derivation in the spec.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import check_choice
from .activations import SWIGLU_ALPHA, SWIGLU_LIMIT, Activation, apply_activation
from ..quantize import dequantize
from .forward import BF16, _bias, _check_inputs, local_expert_ids
from .weights import MoEWeights, split_gate_up

# Lipschitz constants (max |derivative|) of the gate nonlinearities, rounded UP; the tests check them.
LIPSCHITZ_SILU = 1.1          # d/dt [t*sigmoid(t)] lies in [-0.0998, 1.0998]; alpha scales t, not the max
LIPSCHITZ_GELU = 1.13         # d/dg [g*Phi(g)] lies in [-0.1289, 1.1289]
TINY = 2.0 ** -100            # absolute floor per rounding step: covers underflow (fp32 / bf16 subnormals)


@dataclass(frozen=True)
class KernelModel:
    """Unit roundoffs of the kernel the bound is for (defaults: vLLM Triton / any bf16+fp32 kernel).

    lam=None: worst case, rigorous for every summation order and any faithful rounding.
    lam=7.0 (say): PROBABILISTIC bound of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019): rounding
    errors are modelled as independent, mean-zero random variables; each sum of n rounding errors is
    then bounded by lam*sqrt(n)-type terms, failing with probability <= 2*exp(-lam**2/2) per sum. Not
    valid for biased (truncating) accumulators; meant for catching small mutations at full shapes."""

    u_io: float = 2.0 ** -8        # bf16 rounding (nearest) of intermediate, rows, output
    u_acc: float = 2.0 ** -23      # fp32 accumulation, one ulp per add: allows truncating adders too
    u_gamma: float = 2.0 ** -8     # router weight rounded to bf16 (triton make_routing_data); 0 if fp32
    act_ulps: float = 8.0          # fp32 activation error beyond exp's argument: act_ulps * 2**-23 relative
    lam: float | None = None       # None: worst case; a number: probabilistic confidence parameter

    def gamma(self, n) -> np.ndarray:
        """Higham's gamma_n = n*u/(1-n*u); probabilistic: min(gamma_n, exp(lam*sqrt(n)*u + n*u*u/(1-u)) - 1)."""
        n = np.asarray(n, np.float64)
        u = self.u_acc
        if np.any(n * u >= 0.5):
            raise ValueError(f"KernelModel: n*u_acc must stay < 1/2, got n={np.max(n)}")
        worst = n * u / (1.0 - n * u)
        if self.lam is None:
            return worst
        return np.minimum(worst, np.expm1(self.lam * np.sqrt(n) * u + n * u * u / (1.0 - u)))

    def error_sum(self, errs: np.ndarray, abs_w: np.ndarray) -> np.ndarray:
        """Bound on |sum_j eps_j w_cj| given |eps_j| <= errs[:, j]: errs @ |W|.T (worst case), or its
        minimum with lam * sqrt(errs**2 @ W**2.T) (Hoeffding, independent mean-zero eps; probabilistic)."""
        worst = errs @ abs_w.T
        if self.lam is None:
            return worst
        return np.minimum(worst, self.lam * np.sqrt((errs * errs) @ (abs_w * abs_w).T))


def _activation_parts(h, d1, activation, layout, alpha, limit):
    """Per channel j: |f(h)|, the propagated |f(h^) - f(h)|, the fp32 evaluation's relative error and its
    absolute error term (GELU only).

    h, d1: (n, 2I) exact pre-activation and its error bound."""
    g, u = split_gate_up(h, layout)                                         # (n, I) each, exact
    dg, du = split_gate_up(d1, layout)                                      # their error bounds
    F = np.abs(apply_activation(h, activation, layout, alpha=alpha, limit=limit))
    act = Activation(activation)
    if act is Activation.SWIGLUOAI:
        gc = g if limit is None else np.minimum(g, limit)
        uc = u if limit is None else np.clip(u, -limit, limit)
        up_mag = np.abs(uc + 1.0) + du                                      # |c(u^) + 1|
        if limit is not None:
            up_mag = np.minimum(up_mag, limit + 1.0)
        gate_val = np.abs(gc / (1.0 + np.exp(-alpha * gc)))                 # |g*sigmoid(alpha g)|
        prop = LIPSCHITZ_SILU * dg * up_mag + gate_val * du
        slope = alpha
    elif act is Activation.SILU:
        prop = LIPSCHITZ_SILU * dg * (np.abs(u) + du) + np.abs(g / (1.0 + np.exp(-g))) * du
        slope = 1.0
    else:
        from .activations import _erf
        prop = LIPSCHITZ_GELU * dg * (np.abs(u) + du) + np.abs(0.5 * g * (1 + _erf(g / np.sqrt(2.0)))) * du
        slope = 1.0
    # fp32 evaluation: a few ulps plus exp's argument rounding (|arg| ulps; exp overflows past ~88)
    rho = (np.minimum(slope * (np.abs(g) + dg), 104.0) + 8.0) * 2.0 ** -23
    absolute = np.zeros_like(F)
    if act is Activation.GELU:        # 1 + erf(z) cancels for z << 0: an absolute error term as well
        absolute = 2.0 ** -22 * 0.5 * (np.abs(g) + dg) * (np.abs(u) + du)
    return F, prop, rho, absolute


def _expert_bound(x_rows, x_hat, gammas, weights: MoEWeights, e, *, activation, on_input, alpha, limit,
                  model: KernelModel):
    """(exact rows (n, H), row magnitudes R (n, H), row error bounds D4 (n, H), S3 (n, H)) for expert e."""
    layout = weights.gate_up.value
    H, I2 = weights.hidden_size, 2 * weights.intermediate_size
    g = gammas.astype(np.float64)[:, None]                                  # (n, 1) exact gamma
    mu = (1.0 + model.u_gamma) * (1.0 + model.u_acc) - 1.0                  # fl32(v * bf16(gamma))
    # Stage 1: h = W13 x + b13;  D1 = sum|x^-x||W| + gamma_H (sum|x^||W| + |b|)
    w13 = dequantize(weights.w13_weight[e], weights.w13_weight_scale[e], dtype=np.float64)  # (2I, H)
    b13 = _bias(weights.w13_bias, e, I2).astype(np.float64)
    h = x_rows @ w13.T + b13                                                # (n, 2I) exact
    aw13 = np.abs(w13)
    del w13
    S1 = np.abs(x_hat) @ aw13.T + np.abs(b13)                               # (n, 2I)
    D1 = model.error_sum(np.abs(x_hat - x_rows), aw13) + model.gamma(H) * S1
    del aw13
    # Stage 2: a = act(h) (times gamma if on input), rounded to bf16
    with np.errstate(over="ignore"):                                       # exp(-alpha g) -> inf is fine
        F, P, rho, absolute = _activation_parts(h, D1, activation, layout, alpha, limit)   # (n, I) each
    a = apply_activation(h, activation, layout, alpha=alpha, limit=limit)   # exact
    E_y = P + rho * (F + P) + absolute + TINY                               # |fp32 act(h^) - act(h)|
    if on_input:
        E_z, A = g * (E_y + mu * (F + E_y)), g * F
        a = a * g
    else:
        E_z, A = E_y, F
    D2 = E_z + model.u_io * (A + E_z) + TINY                                # bf16 intermediate
    # Stage 3: y = W2 a + b2;  D3 = sum D2|W2| + gamma_I (sum (|a|+D2)|W2| + |b2|)
    w2 = dequantize(weights.w2_weight[e], weights.w2_weight_scale[e], dtype=np.float64)    # (H, I)
    b2 = _bias(weights.w2_bias, e, H).astype(np.float64)
    s = a @ w2.T + b2                                                       # (n, H) exact
    aw2 = np.abs(w2)
    del w2
    S3 = (A + D2) @ aw2.T + np.abs(b2)
    D3 = model.error_sum(D2, aw2) + model.gamma(I2 // 2) * S3
    # Stage 4: row = gamma * y (unless on input), rounded to bf16
    if on_input:
        E4, R, rows = D3, np.abs(s), s
    else:
        E4, R, rows = g * (D3 + mu * (np.abs(s) + D3)), g * np.abs(s), g * s
        S3 = g * S3
    D4 = E4 + model.u_io * (R + E4) + TINY
    return rows, R, D4, S3


def error_bound(x: np.ndarray, weights: MoEWeights, topk_weights: np.ndarray, topk_ids: np.ndarray, *,
                activation: str = "swigluoai", expert_map: np.ndarray | None = None,
                apply_router_weight_on_input: bool = False, global_num_experts: int | None = None,
                alpha: float = SWIGLU_ALPHA, limit: float | None = SWIGLU_LIMIT,
                model: KernelModel = KernelModel(), return_exact: bool = False):
    """float64 (T, H) bound B with |kernel_out - exact_out| <= B elementwise for any kernel of ``model``.

    Same arguments as fused_moe. return_exact=True returns (bound, exact float64 output)."""
    _check_inputs(x, weights, topk_weights, topk_ids)
    check_choice(activation, "activation", [a.value for a in Activation])
    if np.any(topk_weights < 0):
        raise ValueError("topk_weights: the bound assumes non-negative router weights")
    local = local_expert_ids(topk_ids, weights, expert_map, global_num_experts)   # (T, k)
    T, k = local.shape
    H = weights.hidden_size
    x64 = x.astype(np.float64)
    x_hat = x.astype(np.float32).astype(BF16).astype(np.float64)            # what a bf16 kernel reads
    exact_rows = np.zeros((T, k, H))                                        # as fused_moe keeps them
    sum_R = np.zeros((T, H))
    sum_D4 = np.zeros((T, H))
    sum_S = np.zeros((T, H))
    for e in np.unique(local[local >= 0]):
        tok, slot = np.nonzero(local == e)
        rows, R, D4, S3 = _expert_bound(x64[tok], x_hat[tok], topk_weights[tok, slot], weights, int(e),
                                        activation=activation, on_input=bool(apply_router_weight_on_input),
                                        alpha=alpha, limit=limit, model=model)
        exact_rows[tok, slot] = rows
        np.add.at(sum_R, tok, R)
        np.add.at(sum_D4, tok, D4)
        np.add.at(sum_S, tok, S3)
    n_rows = (local >= 0).sum(axis=1)[:, None]                              # (T, 1) rows per token
    exact = exact_rows.sum(axis=1)                                          # same sum as fused_moe
    # Stage 5: fp32 sum of the rows in any order, then bf16
    E5 = sum_D4 + model.gamma(n_rows) * (sum_R + sum_D4)
    D5 = E5 + model.u_io * (np.abs(exact) + E5) + TINY
    # float64 slack: the bound and the exact reference are themselves computed in float64
    bound = D5 * (1.0 + 2.0 ** -20) + 2.0 ** -30 * sum_S
    return (bound, exact) if return_exact else bound


@dataclass(frozen=True)
class BoundCheck:
    """Result of check_within_bound: ok, how many elements exceed, the worst (token, column) pairs."""

    ok: bool
    num_violations: int
    worst_indices: list
    worst_ratio: float            # max |out - exact| / bound

    def __bool__(self) -> bool:
        return self.ok


def check_within_bound(out: np.ndarray, exact: np.ndarray, bound: np.ndarray, *, top: int = 10) -> BoundCheck:
    """Is |out - exact| <= bound everywhere? out: any float dtype incl. bfloat16; NaN/inf in out fail."""
    for name, a in (("out", out), ("exact", exact), ("bound", bound)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if not out.shape == exact.shape == bound.shape:
        raise ValueError(f"out/exact/bound: expected equal shapes, got {out.shape}, {exact.shape}, {bound.shape}")
    err = np.abs(out.astype(np.float64) - exact.astype(np.float64))
    err = np.where(np.isfinite(err), err, np.inf)
    ratio = err / bound
    bad = ~(err <= bound)
    flat = np.argsort(-ratio, axis=None, kind="stable")[:top]
    worst = [tuple(int(i) for i in np.unravel_index(f, ratio.shape)) for f in flat]
    return BoundCheck(bool(not bad.any()), int(bad.sum()), worst, float(ratio.max()) if ratio.size else 0.0)
