"""Acceptance self-test: each mutation of the MoE reference issue fails ``check``; the bundle's own
bf16 pipeline output (and a fp32-accumulating kernel that sums in another order) passes."""
import ml_dtypes
import numpy as np
import pytest

from mxfp4ref import check
from mxfp4ref.cli import main
from mxfp4ref.golden import load_bundle
from mxfp4ref.golden import st_io
from mxfp4ref.moe.forward import fused_moe
from mxfp4ref.moe.weights import MoEWeights

BF16 = ml_dtypes.bfloat16
TOKENS = 16


@pytest.fixture(scope="module", params=["worst-case", "probabilistic"])
def bundle(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("tiny")
    assert main(["golden", "--config", "tiny", "--tokens", str(TOKENS), "--bound", request.param, "--quiet",
                 "--out", str(d)]) == 0
    b = load_bundle(d)
    assert b.manifest["conventions"]["bound"]["model"] == request.param
    return d, b


def _weights(b, **changes) -> MoEWeights:
    f = {n: b[n] for n in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias")}
    f.update(changes)
    return MoEWeights(**f, gate_up=b.manifest["conventions"]["gate_up"])


def _run(b, w=None, topk_weights=None, topk_ids=None, **kw):
    return fused_moe(b["hidden_states"], w or _weights(b),
                     b["topk_weights"] if topk_weights is None else topk_weights,
                     b["topk_ids"] if topk_ids is None else topk_ids, pipeline="bf16", **kw)


def _swap_pairs(a):               # rows 2j <-> 2j+1 along axis 1
    out = a.copy()
    out[:, 0::2], out[:, 1::2] = a[:, 1::2], a[:, 0::2]
    return out


def mutations(b):
    ids = b["topk_ids"]
    e = int(ids[0, 0])                                    # an expert token 0 uses
    s2 = b["w2_weight_scale"].copy()
    s2[e, 5, 1] += 1                                      # one scale byte, one expert: x2 on 32 weights
    wrong_ids = ids.copy()
    wrong_ids[0, 0] = next(x for x in range(5) if x not in ids[0])
    nib = lambda p: ((p >> 4) | (p << 4)).astype(np.uint8)
    zeros = lambda n: np.zeros_like(b[n])
    return {
        "one wrong scale byte in one expert": lambda: _run(b, _weights(b, w2_weight_scale=s2)),
        "gate/up swapped": lambda: _run(b, _weights(b, w13_weight=_swap_pairs(b["w13_weight"]),
                                                   w13_weight_scale=_swap_pairs(b["w13_weight_scale"]),
                                                   w13_bias=_swap_pairs(b["w13_bias"]))),
        "nibble order swapped": lambda: _run(b, _weights(b, w13_weight=nib(b["w13_weight"]),
                                                        w2_weight=nib(b["w2_weight"]))),
        "one token routed to a wrong expert": lambda: _run(b, topk_ids=wrong_ids),
        "bias dropped": lambda: _run(b, _weights(b, w13_bias=zeros("w13_bias"), w2_bias=zeros("w2_bias"))),
        "router weight applied twice": lambda: _run(b, topk_weights=b["topk_weights"] * b["topk_weights"]),
        "activation limit missing": lambda: _run(b, limit=None),
    }


MUTATIONS = [
    "one wrong scale byte in one expert", "gate/up swapped", "nibble order swapped",
    "one token routed to a wrong expert", "bias dropped", "router weight applied twice",
    "activation limit missing"]


def test_activation_limit_is_exercised(bundle):
    _, b = bundle
    h = b["exact.gate_up"]
    assert np.abs(h).max() > 7.0, "the tiny bundle never reaches the swiglu limit: mutation untestable"


@pytest.mark.parametrize("name", MUTATIONS)
def test_mutation_fails_check(bundle, name, tmp_path):
    d, b = bundle
    out = mutations(b)[name]()
    assert not np.array_equal(out.view(np.uint16), b["output"].view(np.uint16)), "mutation changed nothing"
    rep = check(d, {"output": out})
    assert not rep.passed and rep.exit_code == 1, f"{name}: {rep.format()}"
    cand = tmp_path / "mutant.safetensors"
    st_io.save_file({"output": out}, cand)
    assert main(["check", str(d), str(cand)]) == 1


def test_wrong_routing_also_fails_bit_exact_topk(bundle):
    d, b = bundle
    ids = b["topk_ids"].copy()
    ids[0, 0] = next(x for x in range(5) if x not in ids[0])
    rep = check(d, {"topk_ids": ids})
    assert rep["topk_ids"].failures == 1 and rep["topk_ids"].mismatches[0].index == (0, 0)


def test_bundle_bf16_output_passes(bundle, tmp_path):
    d, b = bundle
    assert check(d, {"output": b["output"]}).passed
    cand = tmp_path / "own.safetensors"
    st_io.save_file({"output": b["output"]}, cand)
    assert main(["check", str(d), str(cand)]) == 0


def test_other_summation_order_passes(bundle):
    """A correct kernel summing a token's rows in reverse slot order (fp32) is accepted."""
    d, b = bundle
    rows = b["bf16.rows"]                                  # (T, k, H) bf16 values in float32
    acc = np.zeros(rows.shape[::2], np.float32)
    for s in reversed(range(rows.shape[1])):
        acc = acc + rows[:, s]
    assert check(d, {"output": acc.astype(BF16)}).passed
