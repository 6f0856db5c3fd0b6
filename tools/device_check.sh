#!/usr/bin/env bash
# One device round for cupy_kernels (run by the `device` tool from the repo root, carry .peers .whl):
#   1. environment (GPU, CuPy, torch, triton)       -> $OUT/env.txt
#   2. GPU tests (pytest -m gpu)                    -> $OUT/gpu_tests.log
#   3. compute-sanitizer memcheck + racecheck       -> $OUT/sanitizer.log
#   4. python -m cupy_kernels.bench (+ peer)        -> $OUT/bench.txt, $OUT/bench.json
# Usage: tools/device_check.sh [env|tests|sanitize|profile|bench ...]  (default: env tests sanitize bench;
# profile = Nsight Compute sections of the quantize/dequantize/route/align kernels -> $OUT/ncu.txt).
# Env: TESTS="tests/test_gpu_quantize.py ..." (default tests/test_gpu_*.py), PYTEST_ARGS="-k quantize",
# BENCH_ARGS="--only quantize,routing". Each step is time-limited; the script always runs to the end.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STEPS=${*:-"env tests sanitize bench"}

if ! python3 -c "import pytest" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

for step in $STEPS; do
  case $step in
  env)
    { nvidia-smi; python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)";
      python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)";
      python3 -c "import ml_dtypes, pytest; print('ml_dtypes', ml_dtypes.__version__, 'pytest', pytest.__version__)";
      nvcc --version | tail -1; which compute-sanitizer; } > "$OUT/env.txt" 2>&1
    tail -5 "$OUT/env.txt" ;;
  tests)
    timeout ${TESTS_TIMEOUT:-900} python3 -m pytest -q -m gpu -p no:cacheprovider ${PYTEST_ARGS:-} \
        ${TESTS:-tests/test_gpu_*.py} > "$OUT/gpu_tests.log" 2>&1
    echo "gpu tests rc=$?"; tail -25 "$OUT/gpu_tests.log" ;;
  sanitize)
    { for tool in memcheck racecheck; do
        echo "== compute-sanitizer --tool $tool"
        timeout 300 compute-sanitizer --tool $tool --error-exitcode 99 python3 tools/sanitize_kernels.py
        echo "rc=$?"
      done; } > "$OUT/sanitizer.log" 2>&1
    grep -E "^==|rc=|ERROR SUMMARY|RACECHECK SUMMARY|values" "$OUT/sanitizer.log" ;;
  profile)
    # second launch of each kernel (the first is warm-up); sections that say where the time goes
    timeout ${PROFILE_TIMEOUT:-240} ncu --kernel-name regex:${NCU_KERNELS:-mx_} --launch-skip ${NCU_SKIP:-6} \
        --launch-count ${NCU_COUNT:-6} --section SpeedOfLight --section Occupancy --section LaunchStats \
        --section WarpStateStats --section SchedulerStats ${NCU_EXTRA:-} \
        python3 tools/profile_kernels.py > "$OUT/ncu.txt" 2>&1
    echo "profile rc=$?"; grep -E "mx_|Duration|Throughput|Achieved Occupancy|Warp Cycles Per Issued|Registers Per" "$OUT/ncu.txt" | head -60 ;;
  bench)
    timeout ${BENCH_TIMEOUT:-600} python3 -m cupy_kernels.bench --peers .peers/tk ${BENCH_ARGS:-} --json "$OUT/bench.json" \
        --markdown "$OUT/bench.md" > "$OUT/bench.txt" 2>&1
    echo "bench rc=$?"; tail -30 "$OUT/bench.txt" ;;
  esac
done
