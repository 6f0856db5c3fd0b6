"""`mxfp4ref explain`: every number it prints is the spec's number.

The Explanation's fields are checked against independent computations and the public API
(quantize, dequantize, unpack_fp4), and the printed page is parsed back line by line.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import mxfp4ref
from mxfp4ref import cli, explain
from mxfp4ref.e2m1 import E2M1_GRID, E2M1_VALUES
from mxfp4ref.presets import PRESETS
from mxfp4ref.scales import ScaleRule

BLOCKS = {
    "default": np.array(explain.DEFAULT_BLOCK, np.float32),
    "seed0": explain.seeded_block(0),
    "seed7": explain.seeded_block(7),
    "tiny": (np.linspace(-1, 1, 32) * 2.0 ** -130).astype(np.float32),
    "huge": (np.linspace(-1, 1, 32) * 3.3e38).astype(np.float32),
    "zeros": np.zeros(32, np.float32),
    "nan": np.r_[np.float32(np.nan), np.linspace(-3, 3, 31)].astype(np.float32),
    "inf": np.r_[np.float32(-np.inf), np.linspace(-3, 3, 31)].astype(np.float32),
}
CONVENTIONS = ([dict(scale_rule=r.value) for r in ScaleRule]
               + [dict(rounding=r) for r in ("away", "zero")]
               + [dict(preset=p) for p in PRESETS])


def conv_id(c):
    return ",".join(f"{k}={v}" for k, v in c.items())


@pytest.mark.parametrize("conv", CONVENTIONS, ids=conv_id)
@pytest.mark.parametrize("name", list(BLOCKS))
def test_fields_match_the_spec(name, conv):
    x = BLOCKS[name]
    ex = explain.explain_block(x, **conv)
    t = mxfp4ref.quantize(x.reshape(1, 32), **conv)
    # the chosen byte, codes, packed bytes and decoded values are quantize()'s
    assert ex.byte == t.scales[0, 0]
    assert np.array_equal(ex.codes, mxfp4ref.unpack_fp4(t.packed)[0])
    assert np.array_equal(ex.packed, t.packed[0])
    deq64 = mxfp4ref.dequantize(t.packed, t.scales, dtype=np.float64)[0]
    assert np.array_equal(ex.decoded, deq64, equal_nan=True)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(ex.error, deq64 - x.astype(np.float64), equal_nan=True)
    # amax: max |x|, NaN-propagating or not as the convention says
    mag = np.abs(x.astype(np.float64))
    if ex.cfg.amax_nan.value == "ignore":
        mag = mag[~np.isnan(mag)]
    expect_amax = np.max(mag) if mag.size else 0.0
    assert (np.isnan(ex.amax) and np.isnan(expect_amax)) or float(ex.amax) == expect_amax
    # the byte of every rule for the amax shown (plain OCP edge conventions), by the public API;
    # a NaN-ignoring amax is the amax of the block with its NaNs replaced by 0
    xr = np.where(np.isnan(x), 0, x) if ex.cfg.amax_nan.value == "ignore" else x
    for r in ScaleRule:
        assert ex.rule_bytes[r] == mxfp4ref.quantize(xr.reshape(1, 32), scale_rule=r.value).scales[0, 0]
    # the scaled values: x * 2^(127-b), exactly, for an ordinary byte
    if 0 < ex.byte < 255:
        with np.errstate(over="ignore"):
            expect = (x.astype(np.float64) * 2.0 ** (127 - ex.byte)).astype(np.float32)
        assert np.array_equal(ex.scaled, expect, equal_nan=True)
    # neighbours: adjacent grid points around |scaled|, and the code is one of them
    for i in range(32):
        s = float(ex.scaled[i])
        if np.isnan(s):
            assert np.isnan(ex.lower[i]) and np.isnan(ex.upper[i])
            continue
        lo, hi, m = abs(ex.lower[i]), abs(ex.upper[i]), abs(s)
        assert lo in E2M1_GRID and hi in E2M1_GRID
        if m >= 6:
            assert lo == hi == 6
        else:
            assert lo <= m <= hi
            k = int(np.searchsorted(E2M1_GRID, lo))
            assert hi == lo or hi == E2M1_GRID[k + 1]
            assert (lo == hi) == (m == lo)
        v = abs(float(E2M1_VALUES[ex.codes[i]]))
        assert v in (lo, hi), (i, s, lo, hi, v)


def test_default_block_shows_the_rules_disagreeing():
    """The module's claim: amax 6.5 -> floor and even pick 2^0, ceil and rceil 2^1."""
    ex = explain.explain_block(BLOCKS["default"])
    b = ex.rule_bytes
    assert b[ScaleRule.FLOOR] == b[ScaleRule.EVEN] == 127
    assert b[ScaleRule.CEIL] == b[ScaleRule.RCEIL] == 128
    # and at 2^0 it holds every E2M1 midpoint
    mids = (E2M1_GRID[1:] + E2M1_GRID[:-1]) / 2
    assert set(mids) <= set(np.abs(ex.scaled.astype(np.float64)))


ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+([01]) ([01]{2}) ([01]) \(0x([0-9a-f])\)"
                 r"\s+(\S+)\s+(\S+)\s+(.*)$")


@pytest.mark.parametrize("conv", [{}, dict(preset="torchao-rceil"), dict(rounding="away")],
                         ids=conv_id)
@pytest.mark.parametrize("name", ["default", "seed7", "nan"])
def test_rendered_page_matches_the_fields(name, conv):
    ex = explain.explain_block(BLOCKS[name], **conv)
    text = explain.render(ex)
    bits = int(np.array(ex.amax, np.float32).view(np.uint32))
    assert f"amax = max|x| = {float(ex.amax)!r}" in text
    assert f"{bits:#010x} = sign {bits >> 31} | exponent {(bits >> 23) & 0xFF:08b}" in text
    assert f"mantissa {bits & 0x7FFFFF:023b}" in text
    for r in ScaleRule:
        assert re.search(rf"^\s+{r.value}\s+b = {re.escape(explain.byte_text(ex.rule_bytes[r]))}", text, re.M)
    rows = [ROW.match(line) for line in text.splitlines()]
    rows = [m for m in rows if m]
    assert [int(m.group(1)) for m in rows] == list(range(32))
    for i, m in enumerate(rows):
        code = int(m.group(9), 16)
        assert code == ex.codes[i]
        assert int(m.group(6) + m.group(7) + m.group(8), 2) == code          # s ee m spells the code
        # 9 significant digits: input and scaled value read back to the same float32
        for col, want in ((2, ex.x[i]), (3, ex.scaled[i])):
            got = np.float32(float(m.group(col)))
            assert got == want or (np.isnan(got) and np.isnan(want)), (i, m.group(col), want)
        got_dec = float(m.group(10))
        assert (np.isnan(got_dec) and np.isnan(ex.decoded[i])) or \
            abs(got_dec - ex.decoded[i]) <= 1e-6 * abs(ex.decoded[i])
    assert "packed bytes (element 2i in the low nibble, 2i+1 in the high): " + \
        bytes(ex.packed).hex(" ") in text
    assert f"scale byte: 0x{ex.byte:02x}" in text


def test_torchao_nan_block_page():
    ex = explain.explain_block(BLOCKS["nan"], preset="torchao-floor")
    assert ex.byte == 0xFF and set(ex.codes.tolist()) == {0x3}
    assert "0xFF = NaN" in explain.render(ex)


def test_cli_default_seed_values(capsys):
    assert cli.main(["explain"]) == 0
    out = capsys.readouterr().out
    assert "the default block" in out and "amax = max|x| = 6.5" in out and "<- chosen" in out
    assert cli.main(["explain", "--seed", "7", "--scale-rule", "rceil"]) == 0
    out = capsys.readouterr().out
    ex = explain.explain_block(explain.seeded_block(7), scale_rule="rceil")
    assert f"scale byte: 0x{ex.byte:02x}" in out and "--seed 7" in out
    vals = ",".join(["0x1.8p1"] + ["0.25"] * 30 + ["-inf"])
    assert cli.main(["explain", "--values", vals, "--preset", "flashinfer"]) == 0
    out = capsys.readouterr().out
    assert "preset 'flashinfer'" in out


@pytest.mark.parametrize("argv, msg", [
    (["--values", "1,2,3"], "expected 32 comma-separated numbers"),
    (["--values", ",".join(["1"] * 31 + ["x"])], "cannot read 'x'"),
    (["--preset", "quark", "--scale-rule", "floor"], "scale_rule: preset 'quark' uses 'even'"),
])
def test_cli_errors(argv, msg, capsys):
    assert cli.main(["explain", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_explain_block_rejects_wrong_length():
    with pytest.raises(ValueError, match="values: expected 32 values"):
        explain.explain_block(np.zeros(31, np.float32))
