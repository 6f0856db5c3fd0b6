"""spec/vectors: the committed files equal a fresh regeneration byte for byte, and they say what they claim."""
import json
from pathlib import Path

import numpy as np
import pytest

from mxfp4ref.cli import main
from mxfp4ref.golden import check, load_bundle
from mxfp4ref.golden.vectors import VERSION

COMMITTED = Path(__file__).resolve().parent.parent / "spec" / "vectors" / VERSION


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors")
    assert main(["vectors", "--out", str(out)]) == 0
    return out / VERSION


def test_committed_vectors_equal_regeneration(fresh):
    want, got = _files(COMMITTED), _files(fresh)
    assert sorted(want) == sorted(got), "file lists differ: run `mxfp4ref vectors --out spec/vectors`"
    differ = [name for name in want if want[name] != got[name]]
    assert not differ, f"regenerated files differ: {differ}; run `mxfp4ref vectors --out spec/vectors`"


def test_vectors_are_small():
    assert sum(len(b) for b in _files(COMMITTED).values()) < 2 * 2**20


def _bits(d):
    return np.array([int(b, 16) for b in d["bits"]], np.uint32).view(np.float32).reshape(d["shape"])


def test_float_encodings_agree():
    q = json.loads((COMMITTED / "quantize.json").read_text())
    for blk in q["blocks"]:
        vals = np.array([float(v) for v in blk["x"]["values"]], np.float64)
        assert np.array_equal(_bits(blk["x"]).astype(np.float64).ravel(), vals)


def test_quantize_vectors_decode_independently():
    """Dequantized bits = E2M1 table[nibble] * 2**(scale - 127), decoded here with ml_dtypes."""
    import ml_dtypes

    q = json.loads((COMMITTED / "quantize.json").read_text())
    for case in q["scale_rule_x_rounding"] + q["presets"]:
        r = case["finite"]
        assert "error" not in r
        packed = np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in r["packed_hex"]])
        codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(len(packed), 32)
        elems = codes.view(ml_dtypes.float4_e2m1fn).astype(np.float64)
        scales = np.array(r["scales"], np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
        with np.errstate(over="ignore"):                  # 6 * 2^127 overflows float32 to inf, as it should
            want = (elems * scales[:, None]).astype(np.float32)
        got = np.array([int(b, 16) for b in r["dequantized"]], np.uint32).view(np.float32).reshape(want.shape)
        assert np.array_equal(want.view(np.uint32), got.view(np.uint32)), case.get("preset") or case["scale_rule"]


def test_routing_vectors_break_ties_to_lower_id():
    r = json.loads((COMMITTED / "routing.json").read_text())
    row = r["rows"].index("all equal")
    for c in r["cases"]:
        ids = np.array(c["topk_ids"]["values"]).reshape(c["topk_ids"]["shape"])
        assert sorted(ids[row]) == list(range(c["top_k"]))


def test_moe_tiny_is_a_valid_bundle_and_its_output_passes():
    b = load_bundle(COMMITTED / "moe-tiny")
    assert b.manifest["config"]["name"] == "tiny"
    assert check(COMMITTED / "moe-tiny", {"output": b["output"], "topk_ids": b["topk_ids"]}).passed


def test_mxfp8_vectors_decode_independently():
    import ml_dtypes

    v = json.loads((COMMITTED / "mxfp8.json").read_text())
    elem = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
    assert {c["fmt"] for c in v["cases"]} == {"e4m3", "e5m2"}
    for case in v["cases"]:
        r = case["finite"]
        assert "error" not in r
        data = np.array([np.frombuffer(bytes.fromhex(h), np.uint8) for h in r["data_hex"]])
        scales = np.array(r["scales"], np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
        with np.errstate(over="ignore"):
            want = (data.view(elem[case["fmt"]]).astype(np.float64) * scales[:, None]).astype(np.float32)
        got = np.array([int(b, 16) for b in r["dequantized"]], np.uint32).view(np.float32).reshape(want.shape)
        assert np.array_equal(want.view(np.uint32), got.view(np.uint32)), case
