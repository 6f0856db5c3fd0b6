"""Throughput of the two quantize/dequantize backends: ``python -m mxfp4ref.bench``.

Prints elements per second of ``quantize`` and ``dequantize`` with ``backend="numpy"`` (the readable
spec) and ``backend="numba"`` (the compiled fast path, bit-identical), on ``--size`` float32 values
(default 2**26) shaped (size // K, K) and quantized along the last axis. Each figure is the median of
``--repeat`` timed runs after one untimed warm-up run (which also pays numba's JIT/cache load).
Before timing, the two backends' outputs are compared byte for byte; a difference is an error.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np


def _median_seconds(fn, repeat: int) -> float:
    fn()                                            # warm-up: JIT compile / cache load, page faults
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _machine() -> str:
    try:
        import numba
        threads = numba.get_num_threads()
        nver = numba.__version__
    except Exception:  # pragma: no cover - numba is a core dependency
        threads, nver = "?", "missing"
    return (f"{platform.machine()} {platform.processor() or ''} | {os.cpu_count()} CPUs, numba threads "
            f"{threads} | Python {platform.python_version()}, NumPy {np.__version__}, numba {nver}")


def run(size: int, k: int, repeat: int, scale_rule: str, rounding: str, seed: int = 0, out=sys.stdout) -> dict:
    """Time both backends; return {(op, backend): elements per second}."""
    from . import dequantize, quantize
    from .quantize import resolve_config

    resolve_config(scale_rule, rounding)                # bad names fail before any work

    if k <= 0 or k % 32:
        raise ValueError(f"--k: expected a positive multiple of 32, got {k}")
    if size <= 0 or size % k:
        raise ValueError(f"--size: expected a positive multiple of --k={k}, got {size}")
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((size // k, k), dtype=np.float32)
         * np.exp2(rng.integers(-20, 20, (size // k, k // 32)).repeat(32, axis=1)).astype(np.float32))

    ref = quantize(x, scale_rule=scale_rule, rounding=rounding, backend="numpy")
    fast = quantize(x, scale_rule=scale_rule, rounding=rounding, backend="numba")
    if not (np.array_equal(ref.packed, fast.packed) and np.array_equal(ref.scales, fast.scales)):
        raise AssertionError("numba and numpy quantize disagree; refusing to report timings")
    d_ref = dequantize(ref.packed, ref.scales, backend="numpy")
    d_fast = dequantize(ref.packed, ref.scales, backend="numba")
    if not np.array_equal(d_ref.view(np.uint32), d_fast.view(np.uint32)):
        raise AssertionError("numba and numpy dequantize disagree; refusing to report timings")

    print(f"mxfp4ref.bench: {size} float32 values as ({size // k}, {k}), scale_rule={scale_rule}, "
          f"rounding={rounding}; median of {repeat} runs after a warm-up", file=out)
    print(f"machine: {_machine()}", file=out)
    result = {}
    for op in ("quantize", "dequantize"):
        for backend in ("numpy", "numba"):
            if op == "quantize":
                fn = lambda: quantize(x, scale_rule=scale_rule, rounding=rounding, backend=backend)  # noqa: E731
            else:
                fn = lambda: dequantize(ref.packed, ref.scales, backend=backend)  # noqa: E731
            sec = _median_seconds(fn, repeat)
            result[(op, backend)] = size / sec
            print(f"  {op:10s} {backend:6s} {size / sec:14.4e} elements/s   ({sec * 1e3:9.1f} ms)", file=out)
        speedup = result[(op, "numba")] / result[(op, "numpy")]
        print(f"  {op:10s} numba / numpy = {speedup:.1f}x", file=out)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mxfp4ref.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=2 ** 26, help="number of float32 values")
    p.add_argument("--k", type=int, default=4096, help="row length (quantized axis), a multiple of 32")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median reported)")
    p.add_argument("--scale-rule", default="floor")
    p.add_argument("--rounding", default="rne")
    a = p.parse_args(argv)
    if a.repeat < 1:
        p.error(f"--repeat: expected at least 1, got {a.repeat}")
    try:
        run(a.size, a.k, a.repeat, a.scale_rule, a.rounding)
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
