"""Run a few independent, long computations side by side in forked worker processes.

Used by ``mxfp4ref golden`` so that the default bundle fits its time budget on a 2-core machine: the
inputs (hundreds of MB of weights) are shared with the workers by ``fork`` (no copy, no pickling),
only the results travel back. Results do not depend on the number of workers: each job is one plain
function call, exactly as it would run in this process.
"""
from __future__ import annotations

import os
import sys

_SHARED: dict = {}


def can_fork() -> bool:
    """Fork only where it is safe: POSIX, and numba's runtime not already started in this process."""
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods() and "mxfp4ref._numba_quant" not in sys.modules


def _call(name):
    fn, args, kwargs = _SHARED[name]
    return name, fn(*args, **kwargs)


def run_jobs(jobs: dict, progress=None, label: str = "jobs", workers: int | None = None) -> dict:
    """jobs: {name: (function, args, kwargs)} -> {name: result}; in parallel when possible."""
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if progress is not None:
        progress.stage(label, len(jobs))
    results = {}
    if workers > 1 and can_fork():
        import multiprocessing as mp

        _SHARED.clear()
        _SHARED.update(jobs)
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                for name, res in pool.imap_unordered(_call, list(jobs)):
                    results[name] = res
                    if progress is not None:
                        progress.update(len(results))
        finally:
            _SHARED.clear()
    else:
        for name, (fn, args, kwargs) in jobs.items():
            results[name] = fn(*args, **kwargs)
            if progress is not None:
                progress.update(len(results))
    return results
