#!/usr/bin/env bash
# Run the GPU tests of cupy_kernels under cupy-cuda12x (CUDA 12 runtime, NVRTC 12) on a device machine
# whose Python has only cupy-cuda13x. The pieces travel as two git-ignored archives (the `device` tool
# carries at most 64 MiB per call, the full cupy-cuda12x wheel alone is 130 MB):
#   .cp12a/nvrtc12.tar.xz  nvidia/cuda_nvrtc/lib/{libnvrtc.so.12, libnvrtc-builtins.so.12.*}   (~30 MB)
#   .cp12b/cupy12.tar.xz   the cupy-cuda12x cp312 wheel's files minus cupy/cuda/thrust*.so      (~46 MB)
#                          (thrust is optional in CuPy: only cupy.sort & co. need it; cub is imported
#                          by `import cupy` and stays)
# On the device both are unpacked into the site-packages of a venv made with --system-site-packages: its
# own site-packages come first on sys.path (so `import cupy` is cupy-cuda12x) and first in
# cuda-pathfinder's search (so NVRTC is libnvrtc.so.12, not the system's NVRTC 13); numpy, ml_dtypes,
# pytest and cuda-pathfinder come from python3's own packages (added after it by a .pth file). The `test` step prints the versions and stops if
# CuPy, the CUDA runtime or NVRTC is not 12.x.
#
# Usage (steps in order; OUT defaults to /tmp/device_out):
#   tools/cupy12_check.sh pack WHEEL NVRTC_LIB_DIR   here: build the two archives (NVRTC_LIB_DIR holds
#                                                    libnvrtc.so.12, e.g. a cupy-cuda12x[ctk] venv's
#                                                    site-packages/nvidia/cuda_nvrtc/lib)
#   tools/cupy12_check.sh nvrtc                      device, call 1 (carry .cp12a): venv + NVRTC 12
#   tools/cupy12_check.sh cupy test                  device, call 2 right after (carry .cp12b): CuPy 12,
#                                                    then the GPU tests -> $OUT/cupy12_env.txt,
#                                                    $OUT/cupy12_tests.log
# The venv lives outside the repo (/tmp), so it survives between the two calls only on the same warm
# machine: make call 2 at once (the machine goes back after ~30 s idle; a fresh one has no venv, and
# `test` then stops at the version check). Both archives together (~76 MB) are over one call's 64 MiB;
# cub (17 MB compressed) cannot be dropped too: cupy._core cimports it at `import cupy`.
# Env: TESTS (default: the quantize/dequantize and routing/align GPU tests), VENV (default /tmp/cupy12venv).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_out}
VENV=${VENV:-/tmp/cupy12venv}
TESTS=${TESTS:-"tests/test_gpu_quantize.py tests/test_gpu_routing.py"}

site_dir() { "$VENV/bin/python" -c "import site; print(site.getsitepackages()[0])"; }

make_venv() {
    [ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages --without-pip "$VENV" || exit 1
    # python3 may itself be a venv (then --system-site-packages reaches only its base interpreter's
    # packages): its site/dist-packages go in through a .pth file, i.e. on sys.path AFTER the venv's own
    # site-packages and outside site.getsitepackages(), which is where cuda-pathfinder looks for NVRTC
    env -u PYTHONPATH python3 -c "import sys; print('\n'.join(p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))))" \
        > "$(site_dir)/zz_system_packages.pth"
}

step=${1:-}
while [ -n "$step" ]; do
  shift
  case $step in
  pack)
    wheel=$1 libdir=$2; shift 2
    tmp=$(mktemp -d)
    mkdir -p .cp12a .cp12b "$tmp/site" "$tmp/nv/nvidia/cuda_nvrtc/lib"
    (cd "$tmp/site" && python3 -m zipfile -e "$wheel" . ) || exit 1
    rm -f "$tmp"/site/cupy/cuda/thrust*.so
    cp "$libdir"/libnvrtc.so.12 "$libdir"/libnvrtc-builtins.so.12.* "$tmp/nv/nvidia/cuda_nvrtc/lib/"
    touch "$tmp/nv/nvidia/__init__.py" "$tmp/nv/nvidia/cuda_nvrtc/__init__.py"
    tar -C "$tmp/site" -cf - . | xz -T0 -9 > .cp12b/cupy12.tar.xz
    tar -C "$tmp/nv" -cf - . | xz -T0 -9 > .cp12a/nvrtc12.tar.xz
    rm -rf "$tmp"
    ls -l .cp12a .cp12b ;;
  nvrtc)
    make_venv
    tar -C "$(site_dir)" -xJf .cp12a/nvrtc12.tar.xz && echo "NVRTC 12 unpacked into $(site_dir)" ;;
  cupy)
    make_venv
    tar -C "$(site_dir)" -xJf .cp12b/cupy12.tar.xz && echo "cupy-cuda12x unpacked into $(site_dir)" ;;
  test)
    mkdir -p "$OUT"
    make_venv
    export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
    "$VENV/bin/python" - > "$OUT/cupy12_env.txt" 2>&1 <<'EOF'
import sys
import cupy
from cupy.cuda import nvrtc, runtime
from cuda.pathfinder import load_nvidia_dynamic_lib
rt, nv, drv = runtime.runtimeGetVersion(), nvrtc.getVersion(), runtime.driverGetVersion()
dev = runtime.getDeviceProperties(0)["name"]
print("python", sys.version.split()[0])
print("cupy", cupy.__version__, cupy.__file__)
print("CUDA runtime", rt, "driver", drv, "NVRTC", nv, "device", dev.decode() if isinstance(dev, bytes) else dev)
print("libnvrtc", load_nvidia_dynamic_lib("nvrtc").abs_path)
print("cupy.cuda.thrust available:", not type(cupy.cuda.thrust).__name__ == "_UnavailableModule")
ok = cupy.__file__.startswith(sys.prefix) and rt // 1000 == 12 and nv[0] == 12   # sys.prefix: the venv
print("CUDA 12 stack:", "yes" if ok else "NO")
sys.exit(0 if ok else 1)
EOF
    rc=$?
    cat "$OUT/cupy12_env.txt"
    [ $rc -eq 0 ] || { echo "not a CUDA 12 stack: tests not run"; exit 1; }
    timeout ${TESTS_TIMEOUT:-300} "$VENV/bin/python" -m pytest -q -m gpu -p no:cacheprovider $TESTS \
        > "$OUT/cupy12_tests.log" 2>&1
    echo "cupy12 gpu tests rc=$?"; tail -5 "$OUT/cupy12_tests.log" ;;
  *) echo "unknown step $step"; exit 2 ;;
  esac
  step=${1:-}
done
