"""Every kernels/*.cu compiles for sm_80 and sm_90 with no error and no warning (no GPU needed), and the
files with Hopper-only code (the loader's SM90A_FILES) also for sm_90a, where that code is real.

What is compiled is exactly what NVRTC gets from cupy_kernels._loader (headers pasted in, the
loader's -D options), here with nvcc ``-cubin -Werror all-warnings`` so ptxas errors count too.

nvcc is required: without it this test FAILS with a message (CI has nvcc at /usr/local/bin/nvcc).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import concurrent.futures as cf

import pytest

from cupy_kernels._loader import COMPILE_OPTIONS, KERNEL_DIR, SM90A_FILES, kernel_source

ARCHS = ("80", "90")
CU_FILES = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))
JOBS = [(f, a) for f in CU_FILES for a in ARCHS] + [(f, "90a") for f in sorted(SM90A_FILES)]


def find_nvcc() -> str | None:
    for cand in (shutil.which("nvcc"), "/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc",
                 os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def compile_cu(nvcc: str, name: str, arch: str, tmp_path) -> subprocess.CompletedProcess:
    src = tmp_path / f"{name}.sm{arch}.cu"
    src.write_text(kernel_source(name))
    cmd = [nvcc, "-cubin", f"-arch=sm_{arch}", "-Werror", "all-warnings", *COMPILE_OPTIONS,
           "-o", str(tmp_path / f"{name}.sm{arch}.cubin"), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(file, arch) -> CompletedProcess, compiled in parallel once for the module."""
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.fail("nvcc not found (PATH, /usr/local/bin, /usr/local/cuda/bin, $CUDA_HOME/bin): "
                    "the kernels' compile check needs the CUDA toolkit's nvcc")
    tmp = tmp_path_factory.mktemp("cu")
    with cf.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futs = {job: pool.submit(compile_cu, nvcc, job[0], job[1], tmp) for job in JOBS}
        return {job: fut.result() for job, fut in futs.items()}


def test_kernel_files_exist():
    for name in ("quantize.cu", "dequantize.cu", "route.cu", "align.cu", "moe_fused.cu"):
        assert name in CU_FILES
    assert SM90A_FILES <= set(CU_FILES)


@pytest.mark.parametrize("name,arch", JOBS)
def test_compiles_without_warnings(compiled, name, arch):
    res = compiled[(name, arch)]
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 0, f"{name} sm_{arch} failed:\n{out[-4000:]}"
    assert "warning" not in out.lower(), f"{name} sm_{arch} warned:\n{out[-4000:]}"
    # ptxas' C7511 note: wgmma serialized (every wgmma waits for the previous one): a performance bug
    assert "serialized" not in out, f"{name} sm_{arch}: ptxas serialized wgmma:\n{out[-4000:]}"


def test_loader_pastes_headers_once():
    src = kernel_source("quantize.cu")
    assert not re.search(r'^\s*#\s*include\s+"', src, re.M)
    assert src.count("MXK_HD mxk_u32 mxk_scale_byte(") == 1
    assert not re.search(r"^\s*#\s*pragma\s+once", src, re.M)


def test_loader_caches_a_module_per_compile_options(monkeypatch):
    """load_module compiles once per (file, names, device, COMPILE_OPTIONS): the same options give the cached
    module, changed options a new one built with them (CuPy replaced by a recorder: no GPU needed)."""
    from cupy_kernels import _loader

    class Device:
        id, compute_capability = 0, "80"

        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class RawModule:
        def __init__(self, code, options, name_expressions):
            self.options = options

        def compile(self):
            pass

    fake = type("FakeCupy", (), {"cuda": type("cuda", (), {"Device": Device}), "RawModule": RawModule})
    monkeypatch.setattr(_loader, "cupy", lambda: fake)
    _loader._load.cache_clear()
    try:
        first = _loader.load_module("route.cu")
        assert _loader.load_module("route.cu") is first
        monkeypatch.setattr(_loader, "COMPILE_OPTIONS", COMPILE_OPTIONS + ("-DMXK_PROBE=1",))
        other = _loader.load_module("route.cu")
        assert other is not first and "-DMXK_PROBE=1" in other.options
        monkeypatch.setattr(_loader, "COMPILE_OPTIONS", COMPILE_OPTIONS)
        assert _loader.load_module("route.cu") is first
    finally:
        _loader._load.cache_clear()                 # no fake module may outlive the test
