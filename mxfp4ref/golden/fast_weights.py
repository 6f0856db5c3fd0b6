"""``random_moe_weights`` expert by expert, with a progress bar and optionally across processes.

The golden default (gpt-oss-20b: 32 experts of 5760 x 2880 and 2880 x 2880) spends most of its time
here. This module produces exactly the bytes of :func:`mxfp4ref.moe.random_weights.random_moe_weights`
(tests/test_golden.py compares them) by drawing from the same PCG64 stream: expert ``e`` starts at a
known stream position, so ``PCG64(seed).advance(offset)`` lets experts be made independently, in any
order, in worker processes. Quantization uses ``backend="numba"`` when that backend is installed
(bit-identical to NumPy by the numba backend's own tests), else NumPy.
"""
from __future__ import annotations

import os

import numpy as np

from ..moe.random_weights import assemble, random_biases, random_expert, random_moe_weights
from ..moe.weights import MoEWeights
from .parallel import can_fork


_BACKEND: list[str] = []


def _backend() -> str:
    """"numba" if that backend imports, compiles and agrees with NumPy on a probe block, else "numpy"."""
    if not _BACKEND:
        from .. import quantize

        probe = np.linspace(-7, 7, 64, dtype=np.float32).reshape(2, 32)
        try:
            a = quantize(probe, preset="ocp", backend="numba")
            b = quantize(probe, preset="ocp")
            ok = np.array_equal(a.packed, b.packed) and np.array_equal(a.scales, b.scales)
        except Exception:                        # not installed, not compiling: NumPy is always right
            ok = False
        _BACKEND.append("numba" if ok else "numpy")
    return _BACKEND[0]


def make_expert(seed: int, e: int, H: int, I: int, preset: str):
    """Expert ``e`` (see :func:`random_expert`) with the fastest quantizer backend that agrees."""
    return random_expert(seed, e, H, I, preset=preset, backend=_backend())


def _job(args):
    return make_expert(*args)


def random_weights_with_progress(E: int, H: int, I: int, *, seed: int, bias: bool, preset: str,
                                 gate_up: str, progress, workers: int | None = None,
                                 min_elements: int = 2**22) -> MoEWeights:
    """Same result as ``random_moe_weights(E, H, I, seed=seed, bias=bias, preset=preset, gate_up=gate_up)``."""
    if E * H * I < min_elements:                           # small: not worth processes or a bar
        return random_moe_weights(E, H, I, seed=seed, bias=bias, preset=preset, gate_up=gate_up)
    workers = workers or min(E, os.cpu_count() or 1)
    if not can_fork():                                     # no fork here, or numba already running in this
        workers = 1                                        # process (forking it can deadlock): stay serial
    jobs = [(seed, e, H, I, preset) for e in range(E)]
    progress.stage(f"weights ({E} experts)", E)

    def experts():
        if workers > 1:
            import multiprocessing as mp

            # fork before numba runs in this process (a forked numba runtime can deadlock); each
            # worker probes the backend itself
            with mp.get_context("fork").Pool(workers) as pool:
                yield from pool.imap(_job, jobs)
        else:
            yield from map(_job, jobs)

    def counted():
        for e, parts in enumerate(experts()):
            yield parts
            progress.update(e + 1)

    return assemble(E, H, I, counted(), random_biases(seed, E, H, I) if bias else None, gate_up)
