"""The layer benchmark's roofline bookkeeping (host only: no GPU, no timing).

Under test: cupy_kernels/bench_fused_moe.py's Ceilings (each ceiling is the highest of the medians measured
through a run), set_roofline and format_row. The measurements are stubbed with fixed numbers.
"""
from __future__ import annotations

import pytest

from cupy_kernels import bench_fused_moe as bfm


def _ceilings(monkeypatch, readings):
    it = iter(readings)
    monkeypatch.setattr(bfm, "measure_ceilings", lambda: next(it))
    c = bfm.Ceilings()
    for i in range(len(readings)):
        c.measure(f"point {i}")
    return c


def _row(us, nbytes, flops):
    return dict(model="gpt-oss-120b", tokens=1, config="direct", ours_us=us, triton_us=None, touched=4,
                bytes=nbytes, flops=flops, tflops=flops / us / 1e6, gbps=nbytes / us / 1e3)


def test_each_ceiling_is_the_highest_median(monkeypatch):
    c = _ceilings(monkeypatch, [(4071.0, 790.0), (4175.0, 698.0), (4030.0, None)])
    assert c.copy_GBps == 4175.0
    assert c.bf16_TFLOPs == 790.0
    text = c.describe()
    assert "4175 GB/s" in text and "4071, 4175, 4030" in text and "790, 698" in text


def test_no_bf16_rate_anywhere(monkeypatch):
    c = _ceilings(monkeypatch, [(4000.0, None), (4100.0, None)])
    assert c.bf16_TFLOPs is None
    rows = [_row(26.0, 53_000_000, 1.0e9)]
    bfm.set_roofline(rows, c)
    assert rows[0]["roofline_us"] == pytest.approx(53_000_000 / 4100e9 * 1e6)


def test_roofline_is_the_slower_of_bytes_and_flops(monkeypatch):
    c = _ceilings(monkeypatch, [(4000.0, 800.0), (4200.0, 700.0)])
    byte_bound = _row(26.0, 4.2e7, 8.0e9)            # 10 us of bytes, 10 ns of flops
    flop_bound = _row(9000.0, 4.2e9, 6.4e12)         # 1000 us of bytes, 8000 us of flops
    bfm.set_roofline([byte_bound, flop_bound], c)
    assert byte_bound["roofline_us"] == pytest.approx(10.0)
    assert byte_bound["frac_roofline"] == pytest.approx(10.0 / 26.0)
    assert flop_bound["roofline_us"] == pytest.approx(8000.0)
    assert "roofline   8000.0 us ( 88.9%)" in bfm.format_row(flop_bound)


def test_a_row_prints_before_its_roofline_is_known():
    line = bfm.format_row(_row(25.6, 5.3e7, 8.0e9))
    assert "roofline" not in line and "ours      25.6 us" in line and "[direct]" in line


def test_the_single_replay_time_shows_when_it_differs():
    r = _row(25.0, 5.3e7, 8.0e9)
    r["ours_replay_us"] = 25.8
    assert "ours      25.0 us (one replay 25.8)" in bfm.format_row(r)
    r["ours_replay_us"] = None                       # cold L2: one method only
    assert "one replay" not in bfm.format_row(r)
