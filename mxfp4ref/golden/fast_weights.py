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

from ..moe.random_weights import _float_rows, random_moe_weights, unit_normalish
from ..moe.weights import MoEWeights
from .parallel import can_fork


def words_per_expert(H: int, I: int) -> int:
    """Raw 64-bit words one expert consumes: w13 (2I magnitudes + 2I*H elements), w2 (H + H*I)."""
    return 2 * I + 2 * I * H + H + H * I


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
    """Expert ``e``'s (w13 packed, w13 scales, w2 packed, w2 scales) from its stream position."""
    from .. import quantize

    bg = np.random.PCG64(int(seed))
    bg.advance(e * words_per_expert(H, I))
    backend = _backend()
    q13 = quantize(_float_rows(bg, 2 * I, H), axis=-1, preset=preset, backend=backend)
    q2 = quantize(_float_rows(bg, H, I), axis=-1, preset=preset, backend=backend)
    return q13.packed, q13.scales, q2.packed, q2.scales


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
    w13 = np.empty((E, 2 * I, H // 2), np.uint8)
    s13 = np.empty((E, 2 * I, H // 32), np.uint8)
    w2 = np.empty((E, H, I // 2), np.uint8)
    s2 = np.empty((E, H, I // 32), np.uint8)
    jobs = [(seed, e, H, I, preset) for e in range(E)]
    progress.stage(f"weights ({E} experts)", E)
    if workers > 1:
        import multiprocessing as mp

        # fork before numba runs in this process (a forked numba runtime can deadlock); each worker
        # probes the backend itself
        with mp.get_context("fork").Pool(workers) as pool:
            for e, parts in enumerate(pool.imap(_job, jobs)):
                w13[e], s13[e], w2[e], s2[e] = parts
                progress.update(e + 1)
    else:
        for e, job in enumerate(jobs):
            w13[e], s13[e], w2[e], s2[e] = _job(job)
            progress.update(e + 1)
    b13 = b2 = None
    if bias:                                               # the stream after the last expert
        import ml_dtypes

        bg = np.random.PCG64(int(seed))
        bg.advance(E * words_per_expert(H, I))
        to_bf16 = lambda z: (z / 2).astype(ml_dtypes.bfloat16).astype(np.float32)
        b13 = to_bf16(unit_normalish(bg.random_raw(E * 2 * I)).reshape(E, 2 * I))
        b2 = to_bf16(unit_normalish(bg.random_raw(E * H)).reshape(E, H))
    return MoEWeights(w13, s13, w2, s2, b13, b2, gate_up="interleaved").with_gate_up(gate_up)
