"""Shared test fixtures. GPU tests carry ``@pytest.mark.gpu`` and skip cleanly without a device."""
import os

# The spec's matrix products are small; a multithreaded BLAS on a loaded 2-core machine makes them
# ~100x slower. Set before NumPy first loads OpenBLAS (conftest is imported before test modules).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402


def _have_gpu() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HAVE_GPU = _have_gpu()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords and not HAVE_GPU:
            item.add_marker(skip)
