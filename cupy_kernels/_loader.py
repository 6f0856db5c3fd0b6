"""The one loader for cupy_kernels/kernels/*.cu: CuPy RawModules, compiled once per device.

* Compile options live in :data:`COMPILE_OPTIONS` (and NVRTC's extra :data:`NVRTC_ONLY_OPTIONS`)
  and nowhere else.
* ``#include "name"`` lines of kernels/*.cu/.cuh are pasted in by this loader (NVRTC has no include
  path for our headers, and CuPy's kernel cache hashes only the source text it is given: pasting
  makes a header edit invalidate the cache).
* Templates are reached through name expressions (``load_module(file, ("k<1>", ...))`` then
  ``module.get_function("k<1>")``); extern "C" kernels need none.
* Works with cupy-cuda12x (CuPy 13) and cupy-cuda13x (CuPy 14): only RawModule(code=, options=,
  name_expressions=) and get_function are used.

CuPy adds -arch for the current device, --std=c++17 and -ftz=true itself; every kernel here is
written so that -ftz cannot change a result (integer bit arithmetic, see kernels/mx_common.cuh).
"""
from __future__ import annotations

import functools
import pathlib
import re

KERNEL_DIR = pathlib.Path(__file__).resolve().parent / "kernels"

# The only compile options (besides what CuPy adds). -DMXK_NVRTC lets a file tell NVRTC from nvcc.
COMPILE_OPTIONS = ("-DMXK_NVRTC=1",)
# NVRTC only (nvcc has no such flag and needs none): NVRTC 12 treats an unannotated (generic) lambda
# inside device code as a host function and rejects it; NVRTC 13 makes it __device__ already. With
# every function a device function by default, both compile moe_fused.cu's lambdas the same way
# (checked with NVRTC 12.9 and 13.0: tools/nvrtc_compile.py).
NVRTC_ONLY_OPTIONS = ("-default-device",)

# Files with Hopper-only code paths (wgmma, guarded by __CUDA_ARCH_FEAT_SM90_ALL): on a compute capability
# 9.0 device they are compiled for sm_90a (NVRTC keeps the arch-specific target when CuPy then appends its
# own -arch=sm_90: checked with NVRTC 12.9); on any other device the guarded code compiles to stubs.
SM90A_FILES = frozenset({"moe_fused.cu"})

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.M)
_PRAGMA_ONCE = re.compile(r'^\s*#\s*pragma\s+once\s*$', re.M)   # pasted headers are included once anyway


def cupy():
    """Import CuPy, or raise an ImportError that says how to get it."""
    try:
        import cupy as cp
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError("cupy_kernels needs CuPy: pip install 'mxfp4ref[cuda12]' or "
                          "'mxfp4ref[cuda13]' (cupy-cuda12x / cupy-cuda13x)") from e
    return cp


def kernel_source(filename: str) -> str:
    """Text of kernels/<filename> with its quoted #includes pasted in (each header once)."""
    seen: set[str] = set()

    def expand(name: str) -> str:
        path = KERNEL_DIR / name
        if not path.is_file():
            raise FileNotFoundError(f"filename: no kernel file {name!r} in {KERNEL_DIR}")
        text = _PRAGMA_ONCE.sub("", path.read_text()) if name.endswith(".cuh") else path.read_text()

        def sub(m):
            inc = m.group(1)
            if inc in seen:
                return f"// (already included: {inc})"
            seen.add(inc)
            return f"// ---- begin {inc}\n{expand(inc)}\n// ---- end {inc}"
        return _INCLUDE.sub(sub, text)

    return expand(filename)


@functools.lru_cache(maxsize=None)
def _load(filename: str, name_expressions: tuple, device_id: int, options: tuple):
    cp = cupy()
    dev = cp.cuda.Device(device_id)
    with dev:
        arch = ("-arch=sm_90a",) if filename in SM90A_FILES and str(dev.compute_capability) == "90" else ()
        mod = cp.RawModule(code=kernel_source(filename), options=options + NVRTC_ONLY_OPTIONS + arch,
                           name_expressions=name_expressions or None)
        mod.compile()
    return mod


def load_module(filename: str, name_expressions=()):
    """cupy.RawModule of kernels/<filename> for the current device, compiled once per device and per value
    of COMPILE_OPTIONS (an A/B script that adds a -D switch at run time gets a new module, not the cached
    one; the cache once ignored the options, and such scripts silently timed the first variant only)."""
    cp = cupy()
    return _load(filename, tuple(name_expressions), cp.cuda.Device().id, tuple(COMPILE_OPTIONS))


def get_kernel(filename: str, name: str, name_expressions=()):
    """One kernel (cupy.RawKernel) of kernels/<filename>; ``name`` may be a name expression."""
    names = tuple(name_expressions) or ((name,) if "<" in name else ())
    return load_module(filename, names).get_function(name)
