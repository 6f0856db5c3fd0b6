"""mxfp4ref golden: bundle contents, determinism (same flags, same bytes; across processes), options."""
import hashlib
import subprocess
import sys
import time

import numpy as np
import pytest

from mxfp4ref import check
from mxfp4ref.cli import build_parser, main
from mxfp4ref.golden import load_bundle, write_bundle
from mxfp4ref.golden.fast_weights import random_weights_with_progress
from mxfp4ref.golden.generate import GoldenOptions, make_golden
from mxfp4ref.golden.progress import Progress
from mxfp4ref.moe.forward import fused_moe
from mxfp4ref.moe.random_weights import random_moe_weights


def _hashes(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    assert main(["golden", "--config", "tiny", "--tokens", "9", "--quiet", "--out", str(d)]) == 0
    return d


def test_bundle_has_every_group_and_valid_manifest(tiny):
    b = load_bundle(tiny)
    m = b.manifest
    assert m["generator"]["name"] == "mxfp4ref" and m["seed"] == 0 and m["tokens"] == 9
    assert m["config"]["name"] == "tiny"
    conv = m["conventions"]
    assert (conv["preset"], conv["scale_rule"], conv["rounding"]) == ("ocp", "floor", "rne")
    assert conv["padding_backend"] is None and conv["routing_order"] == "weight"
    names = set(m["tensors"])
    for n in ("hidden_states", "router_logits", "w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale",
              "w13_bias", "w2_bias", "topk_weights", "topk_ids", "sorted_token_ids", "expert_ids",
              "num_tokens_post_padded", "exact.gate_up", "exact.activation", "exact.rows", "bf16.gate_up",
              "bf16.activation", "bf16.rows", "output", "output_exact", "output_bound", "packed", "scales"):
        assert n in names, n
    t = m["tensors"]
    assert t["w13_weight"]["check"] == "exact" and t["w13_weight"]["encoding"] == "fp4x2"
    assert t["w13_weight_scale"]["encoding"] == "e8m0"
    assert t["hidden_states"]["dtype"] == "bfloat16" and t["hidden_states"]["shape"] == [9, 96]
    assert (t["output"]["check"], t["output"]["reference"], t["output"]["bound"]) == \
        ("bounded", "output_exact", "output_bound")
    assert t["output"]["dtype"] == "bfloat16" and t["output_exact"]["dtype"] == "float64"


def test_bundle_tensors_are_the_spec_functions(tiny):
    """Recompute the outputs from the bundle's own inputs with the spec functions: identical bits."""
    b = load_bundle(tiny)
    w = random_moe_weights(5, 96, 160, seed=0)
    assert np.array_equal(b["w13_weight"], w.w13_weight) and np.array_equal(b["w2_bias"], w.w2_bias)
    out = fused_moe(b["hidden_states"], w, b["topk_weights"], b["topk_ids"], pipeline="bf16")
    assert np.array_equal(out.view(np.uint16), b["output"].view(np.uint16))
    ex = fused_moe(b["hidden_states"], w, b["topk_weights"], b["topk_ids"], pipeline="exact")
    assert np.array_equal(ex, b["output_exact"])
    assert (b["output_bound"] > 0).all()


def test_own_bf16_output_and_exact_tensors_pass_check(tiny):
    b = load_bundle(tiny)
    names = [n for n, e in b.tensors.items() if e["check"] != "none"]
    rep = check(tiny, {n: b[n] for n in names})
    assert rep.passed, rep.format()
    assert rep["output"].check == "bounded" and rep["output"].worst_ratio < 1


def test_same_flags_same_bytes_across_processes(tiny, tmp_path):
    """A second, separate Python process writes byte-identical files."""
    out = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "mxfp4ref", "golden", "--config", "tiny", "--tokens", "9", "--quiet",
                    "--out", str(out)], check=True)
    assert _hashes(out) == _hashes(tiny)


def test_seed_changes_bytes(tiny, tmp_path):
    assert main(["golden", "--config", "tiny", "--tokens", "9", "--seed", "1", "--quiet", "--out",
                 str(tmp_path)]) == 0
    a, b = _hashes(tmp_path), _hashes(tiny)
    assert a["weights.safetensors"] != b["weights.safetensors"] and a["inputs.safetensors"] != b["inputs.safetensors"]


def test_parallel_expert_generation_equals_random_moe_weights():
    """fast_weights (experts from their PCG64 stream offsets, in worker processes) == random_moe_weights."""
    ref = random_moe_weights(3, 64, 96, seed=11, preset="torchao-even")
    for workers in (1, 2):
        got = random_weights_with_progress(3, 64, 96, seed=11, bias=True, preset="torchao-even",
                                           gate_up="interleaved", progress=Progress(quiet=True),
                                           workers=workers, min_elements=0)
        for n in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias"):
            assert np.array_equal(getattr(got, n), getattr(ref, n)), (workers, n)


def _write(opts, d):
    specs, meta = make_golden(opts)
    write_bundle(d, specs, meta)
    return load_bundle(d)


def test_padding_pads_weights_and_keeps_output(tmp_path, tiny):
    b = _write(GoldenOptions(config="tiny", tokens=9, padding="flashinfer-trtllm-bf16"), tmp_path)
    ref = load_bundle(tiny)
    assert b.tensors["w13_weight"]["shape"] == [5, 2 * 256, 256 // 2]         # I 160 -> 256, H 96 -> 256
    assert b.tensors["hidden_states_padded"]["shape"] == [9, 256]
    assert b.manifest["conventions"]["padded_hidden"] == 256
    # the padded layer gives exactly the unpadded output (padding adds exact zeros)
    assert np.array_equal(b["output_exact"], ref["output_exact"])
    assert np.array_equal(b["output"].view(np.uint16), ref["output"].view(np.uint16))


def test_tp_and_ep_ranks_sum_to_the_full_layer(tmp_path, tiny):
    full = load_bundle(tiny)["output_exact"]
    for size, key in ((2, "tp"), (2, "ep")):
        parts = []
        for r in range(size):
            b = _write(GoldenOptions(config="tiny", tokens=9, **{f"{key}_size": size, f"{key}_rank": r}),
                       tmp_path / f"{key}{r}")
            parts.append(b["output_exact"])
            assert b.manifest["conventions"][key] == [size, r]
        np.testing.assert_allclose(sum(parts), full, rtol=1e-12, atol=1e-12)
    assert "expert_map" in load_bundle(tmp_path / "ep1").tensors


def test_checkpoint_layer_round_trip(tmp_path, tiny):
    from mxfp4ref.moe.checkpoint import write_checkpoint

    w = random_moe_weights(5, 96, 160, seed=0)
    (tmp_path / "ckpt").mkdir()
    write_checkpoint(tmp_path / "ckpt" / "model.safetensors", {3: w})
    b = _write(GoldenOptions(config="tiny", tokens=9, checkpoint=str(tmp_path / "ckpt"), layer=3), tmp_path / "b")
    ref = load_bundle(tiny)
    for n in ("w13_weight", "w2_weight_scale", "output_exact"):
        assert np.array_equal(b[n], ref[n]), n


def test_layout_flag_writes_kernel_buffers(tmp_path):
    b = _write(GoldenOptions(config="tiny", tokens=3, layout="strided"), tmp_path)
    names = [n for n in b.tensors if n.startswith("layout.")]
    assert "layout.w13_weight" in names and b.tensors["layout.w13_weight"]["check"] == "exact"


@pytest.mark.parametrize("argv, flag", [
    (["--tokens", "0"], "--tokens"),
    (["--tp-size", "2", "--tp-rank", "2"], "--tp-rank"),
    (["--ep-size", "2", "--ep-rank", "-1"], "--ep-rank"),
    (["--layer", "1"], "--checkpoint and --layer"),
    (["--layout", "marlin"], "--layout marlin: marlin: hidden_size"),
    (["--checkpoint", "/nonexistent", "--layer", "0"], "--checkpoint /nonexistent --layer 0: "),
    (["--bound", "tight"], None),
])
def test_bad_flags_name_the_flag(argv, flag, capsys, tmp_path):
    if flag is None:                                   # argparse's own check of choices
        with pytest.raises(SystemExit) as e:
            main(["golden", "--config", "tiny", "--quiet", "--out", str(tmp_path)] + argv)
        assert e.value.code == 2 and "argument --bound: invalid choice" in capsys.readouterr().err
        return
    assert main(["golden", "--config", "tiny", "--quiet", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mxfp4ref golden: error: " + flag) and "Traceback" not in err


def test_every_flag_of_golden_check_vectors_shows_its_default():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("golden", "check", "vectors"):
        assert name in sub.choices, f"subcommand {name} is not registered in mxfp4ref/cli.py"
        p = sub.choices[name]
        text = p.format_help()
        for action in p._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and "%(default)s" not in action.help
                assert action.option_strings[-1] in text
        assert text.count("(default:") >= sum(1 for a in p._actions if a.option_strings and a.dest != "help")


def test_default_golden_is_gpt_oss_20b_16_tokens():
    args = build_parser().parse_args(["golden"])
    assert (args.config, args.tokens, args.out) == ("gpt-oss-20b", 16, None)


@pytest.mark.slow
def test_default_run_is_a_gpt_oss_20b_bundle_in_under_two_minutes(tmp_path):
    """The README's first command: no flags, gpt-oss-20b, 16 tokens; < 2 min on a 2-core machine."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mxfp4ref", "golden", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    d = tmp_path / "golden-gpt-oss-20b"
    b = load_bundle(d)
    assert b.tensors["w13_weight"]["shape"] == [32, 5760, 1440] and b.tensors["output"]["shape"] == [16, 2880]
    assert check(d, {"output": b["output"], "topk_ids": b["topk_ids"]}).passed
    assert elapsed < 120, f"default golden run took {elapsed:.0f} s"


def test_quantizer_tensors_judge_a_quantizer(tiny):
    """`packed`/`scales` are quantize(quant_input, preset=ocp); another scale rule fails on its scales."""
    from mxfp4ref import quantize

    b = load_bundle(tiny)
    q = quantize(b["quant_input"], preset="ocp")
    assert check(tiny, {"packed": q.packed, "scales": q.scales}).passed
    q2 = quantize(b["quant_input"], preset="torchao-ceil")
    rep = check(tiny, {"packed": q2.packed, "scales": q2.scales})
    assert not rep["scales"].passed and rep["scales"].mismatches[0].expected.startswith("0x")
