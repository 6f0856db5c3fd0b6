"""Compile every cupy_kernels/kernels/*.cu with the NVRTC that the installed CuPy loads, for sm_80 and
sm_90 (and sm_90a for the loader's SM90A_FILES), with exactly the loader's options. No GPU needed: NVRTC is
a host library.

    python tools/nvrtc_compile.py          # exit code = number of failures (a warning counts)

Useful to check that a kernel compiles with both cupy-cuda12x (NVRTC 12) and cupy-cuda13x (NVRTC 13):
install each in its own virtual environment (``pip install "cupy-cuda12x[ctk]"`` brings NVRTC 12).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cupy.cuda import nvrtc  # noqa: E402

from cupy_kernels._loader import COMPILE_OPTIONS, KERNEL_DIR, NVRTC_ONLY_OPTIONS, SM90A_FILES, kernel_source  # noqa: E402


def main() -> int:
    print("NVRTC", nvrtc.getVersion())
    bad = 0
    for f in sorted(KERNEL_DIR.glob("*.cu")):
        for arch in ("80", "90") + (("90a",) if f.name in SM90A_FILES else ()):
            # what CuPy's RawModule passes: the loader's options (+ -arch=sm_90a on a cc 9.0 device for the
            # Hopper files), CuPy's own -arch, --std=c++17 and -ftz=true
            archs = ["-arch=sm_90a", "-arch=sm_90"] if arch == "90a" else [f"-arch=compute_{arch}"]
            opts = [*COMPILE_OPTIONS, *NVRTC_ONLY_OPTIONS, *archs, "--std=c++17", "-ftz=true"]
            prog = nvrtc.createProgram(kernel_source(f.name), f.name, [], [])
            try:
                nvrtc.compileProgram(prog, opts)
                log = nvrtc.getProgramLog(prog).strip()
                warned = "warning" in log.lower()
                bad += warned
                print(f"{f.name:16s} sm_{arch}  {'WARN' if warned else 'ok'}  {log[:800]}")
            except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
                bad += 1
                print(f"{f.name:16s} sm_{arch}  FAILED {e}\n{nvrtc.getProgramLog(prog)[:3000]}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
