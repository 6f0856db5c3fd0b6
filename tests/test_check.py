"""The checker on a small hand-made bundle: verdicts, messages, integrity errors, exit codes."""
import json
import shutil

import ml_dtypes
import numpy as np
import pytest

from mxfp4ref.cli import main
from mxfp4ref.golden import CheckInputError, TensorSpec, check, load_bundle, write_bundle
from mxfp4ref.golden import st_io
from mxfp4ref.golden.show import nibble_note, show

BF16 = ml_dtypes.bfloat16


def _tensors():
    rng = np.random.default_rng(7)
    exact = rng.standard_normal((3, 5))
    return {
        "w": rng.integers(0, 256, (2, 4, 8), dtype=np.uint8),
        "s": rng.integers(120, 130, (2, 4, 1), dtype=np.uint8),
        "ids": rng.integers(0, 4, (3, 2)).astype(np.int32),
        "x": rng.standard_normal((3, 5)).astype(BF16),
        "output_exact": exact,
        "output_bound": np.full((3, 5), 0.02),
        "output": exact.astype(BF16),
    }


@pytest.fixture()
def bundle(tmp_path):
    t = _tensors()
    specs = [
        TensorSpec("w", t["w"], "weights.safetensors", encoding="fp4x2"),
        TensorSpec("s", t["s"], "weights.safetensors", encoding="e8m0"),
        TensorSpec("ids", t["ids"], "routing.safetensors"),
        TensorSpec("x", t["x"], "inputs.safetensors"),
        TensorSpec("output", t["output"], "outputs.safetensors", check="bounded",
                   reference="output_exact", bound="output_bound"),
        TensorSpec("output_exact", t["output_exact"], "outputs.safetensors", check="none"),
        TensorSpec("output_bound", t["output_bound"], "outputs.safetensors", check="none"),
    ]
    d = tmp_path / "bundle"
    write_bundle(d, specs, {"seed": 7})
    return d, t


def test_identical_candidate_passes(bundle):
    d, t = bundle
    rep = check(d, {k: t[k] for k in ("w", "s", "ids", "x", "output")})
    assert rep.passed and rep.exit_code == 0
    assert [r.failures for r in rep.results] == [0] * 5


def test_bf16_roundtrip_through_safetensors(bundle):
    d, t = bundle
    b = load_bundle(d)
    assert b["x"].dtype == BF16
    np.testing.assert_array_equal(b["x"].view(np.uint16), t["x"].view(np.uint16))


def test_bf16_file_readable_by_safetensors_header_contract(tmp_path):
    # The header must say BF16 so PyTorch/JAX read the file as bfloat16.
    p = tmp_path / "a.safetensors"
    st_io.save_file({"a": np.array([1.0, -2.5], dtype=BF16)}, p)
    header, _ = st_io.read_header(p)
    assert header["a"]["dtype"] == "BF16"
    assert p.read_bytes()[-4:] == bytes([0x80, 0x3F, 0x20, 0xC0])     # little-endian bf16 bits


def test_exact_mismatch_lists_index_hex_value_and_nibble(bundle):
    d, t = bundle
    w = t["w"].copy()
    w[1, 2, 3] = 0x3A
    w[0, 0, 0] = ((t["w"][0, 0, 0] & 0xF) << 4) | (t["w"][0, 0, 0] >> 4)
    s = t["s"].copy()
    s[1, 1, 0] += 1
    rep = check(d, {"w": w, "s": s})
    assert not rep.passed and rep.exit_code == 1
    r = rep["w"]
    n_expected = int((w != t["w"]).sum())
    assert r.failures == n_expected
    text = rep.format()
    e = int(t["s"][1, 1, 0])
    assert f"at [1, 1, 0]: expected 0x{e:02X} (2^{e - 127}), got 0x{e + 1:02X} (2^{e - 126})" in text
    assert "got 0x3A (lo 0xA=-1, hi 0x3=+1.5)" in text
    if t["w"][0, 0, 0] & 0xF != t["w"][0, 0, 0] >> 4:
        assert "nibbles swapped" in text


def test_exact_compares_bits_not_values(tmp_path):
    x = np.array([0.0, 1.0, np.nan], dtype=np.float32)
    write_bundle(tmp_path, [TensorSpec("x", x, "a.safetensors")], {})
    assert check(tmp_path, {"x": x.copy()}).passed
    neg_zero = np.array([-0.0, 1.0, np.nan], dtype=np.float32)
    rep = check(tmp_path, {"x": neg_zero})
    assert rep["x"].failures == 1 and "got 0x80000000 (-0.0)" in rep.format()
    other_nan = x.copy()
    other_nan.view(np.uint32)[2] |= 1
    assert check(tmp_path, {"x": other_nan})["x"].failures == 1


def test_bounded_fails_outside_and_reports_worst(bundle):
    d, t = bundle
    out = t["output"].copy()
    out[2, 2] = np.float32(out[2, 2]) + np.float32(0.5)
    rep = check(d, {"output": out})
    r = rep["output"]
    assert not r.passed and r.failures == 1 and r.worst_ratio > 20
    assert r.mismatches[0].index == (2, 2) and r.mismatches[0].note == "OUT OF BOUND"
    out[2, 2] = np.nan
    assert check(d, {"output": out})["output"].failures == 1


def test_bounded_accepts_float32_and_float64(bundle):
    d, t = bundle
    assert check(d, {"output": t["output_exact"]}).passed
    assert check(d, {"output": t["output_exact"].astype(np.float32)}).passed


def test_none_check_is_reported_not_checked(bundle):
    d, t = bundle
    rep = check(d, {"output_bound": t["output_bound"] * 7})
    assert rep.passed and rep["output_bound"].verdict == "not checked"


@pytest.mark.parametrize("cand, msg", [
    ({"nope": np.zeros(1)}, "unknown tensor name(s) ['nope']"),
    ({"w": np.zeros((2, 4, 7), np.uint8)}, "candidate['w']: expected shape (2, 4, 8), got (2, 4, 7)"),
    ({"w": np.zeros((2, 4, 8), np.int8)}, "candidate['w']: expected dtype uint8, got int8"),
    ({"output": np.zeros((3, 5), np.int32)}, "expected dtype bfloat16, float16, float32 or float64, got int32"),
    ({}, "holds no tensors"),
])
def test_unusable_candidate_raises(bundle, cand, msg):
    d, _ = bundle
    with pytest.raises(CheckInputError) as e:
        check(d, cand)
    assert msg in str(e.value)


def _copy(d, tmp_path):
    c = tmp_path / "copy"
    shutil.copytree(d, c)
    return c


def test_integrity_missing_truncated_edited(bundle, tmp_path):
    d, t = bundle
    c = _copy(d, tmp_path)
    (c / "routing.safetensors").unlink()
    with pytest.raises(CheckInputError, match="routing.safetensors is missing"):
        check(c, {"w": t["w"]})
    shutil.rmtree(c)
    c = _copy(d, tmp_path)
    data = (c / "weights.safetensors").read_bytes()
    (c / "weights.safetensors").write_bytes(data[:-3])
    with pytest.raises(CheckInputError, match="weights.safetensors is truncated"):
        check(c, {"w": t["w"]})
    (c / "weights.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckInputError, match="weights.safetensors was modified: SHA-256"):
        check(c, {"w": t["w"]})
    (c / "manifest.json").unlink()
    with pytest.raises(CheckInputError, match="manifest.json is missing"):
        check(c, {"w": t["w"]})


def test_cli_exit_codes_and_json(bundle, tmp_path, capsys):
    d, t = bundle
    good = tmp_path / "good.safetensors"
    st_io.save_file({"w": t["w"], "output": t["output"]}, good)
    assert main(["check", str(d), str(good)]) == 0
    assert "PASS: 2 of 2 tensors pass" in capsys.readouterr().out

    bad = tmp_path / "bad.npz"
    w = t["w"].copy()
    w[0, 1, 2] ^= 0x10
    np.savez(bad, w=w, x=t["x"])                   # bf16 in .npz arrives as void2: accepted
    js = tmp_path / "r.json"
    assert main(["check", str(d), str(bad), "--json", str(js)]) == 1
    out = capsys.readouterr().out
    assert "FAIL w: 1 of 64 elements differ" in out and "[hi nibble differs; elements 4, 5 of the row]" in out
    rep = json.loads(js.read_text())
    assert rep["passed"] is False and rep["exit_code"] == 1
    assert {r["name"]: r["verdict"] for r in rep["tensors"]} == {"w": "FAIL", "x": "PASS"}

    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, w=np.zeros(3, np.uint8))
    assert main(["check", str(d), str(wrong)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mxfp4ref check: error: candidate['w']: expected shape") and "Traceback" not in err
    assert main(["check", str(tmp_path / "nowhere"), str(good)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["check", str(d), str(tmp_path / "c.txt")]) == 2


def test_show_formats():
    assert show(np.uint8(0x7F), "e8m0") == "0x7F (2^0)"
    assert show(np.uint8(0xFF), "e8m0") == "0xFF (NaN)"
    assert show(np.float32(1.0), "f32") == "0x3F800000 (1.0)"
    assert show(np.array(1.0, BF16), "bf16") == "0x3F80 (1.0)"
    assert show(np.uint8(0x72), "fp4x2") == "0x72 (lo 0x2=+1, hi 0x7=+6)"
    assert nibble_note(0x72, 0x27) == "nibbles swapped"
    assert nibble_note(0x72, 0x73) == "lo nibble differs"
    assert nibble_note(0x72, 0x81) == "lo and hi nibbles differ"


def test_manifest_is_deterministic(bundle, tmp_path):
    d, _ = bundle
    m = json.loads((d / "manifest.json").read_text())
    assert m["format"] == "mxfp4ref-golden" and m["format_version"] == 1
    assert m["tensors"]["output"]["reference"] == "output_exact"
    assert len(m["files"]["weights.safetensors"]["sha256"]) == 64


def test_show_limits_listed_mismatches(bundle, capsys, tmp_path):
    d, t = bundle
    w = t["w"] ^ np.uint8(0x11)                     # every byte differs
    assert len(check(d, {"w": w}, show=3)["w"].mismatches) == 3
    assert check(d, {"w": w}, show=0)["w"].failures == w.size
    cand = tmp_path / "c.npz"
    np.savez(cand, w=w)
    assert main(["check", str(d), str(cand), "--show", "2"]) == 1
    assert "first 2:" in capsys.readouterr().out
    assert main(["check", str(d), str(cand), "--show", "-1"]) == 2
    assert "--show: expected an int >= 0, got -1" in capsys.readouterr().err


def test_edited_manifest_is_a_clear_error(bundle, tmp_path):
    d, t = bundle
    c = _copy(d, tmp_path)
    m = json.loads((c / "manifest.json").read_text())
    m["tensors"]["w"]["shape"] = [2, 4, 4]
    (c / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckInputError, match=r"manifest says 'w' is uint8 \[2, 4, 4\], weights.safetensors holds"):
        check(c, {"w": np.zeros((2, 4, 4), np.uint8)})
    del m["tensors"]["w"]["dtype"]
    (c / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CheckInputError, match="manifest entry of tensor 'w' lacks"):
        check(c, {"s": t["s"]})
    (c / "manifest.json").write_text("{not json")
    with pytest.raises(CheckInputError, match="is not valid JSON"):
        check(c, {"s": t["s"]})


def test_npz_bf16_as_uint16_bits_and_json_to_stdout(bundle, tmp_path, capsys):
    d, t = bundle
    cand = tmp_path / "u16.npz"
    np.savez(cand, x=t["x"].view(np.uint16), output=t["output"].view(np.uint16))
    assert main(["check", str(d), str(cand), "--json", "-"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["passed"] and [r["verdict"] for r in rep["tensors"]] == ["PASS", "PASS"]
