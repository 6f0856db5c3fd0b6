"""Launch the fused MoE forward a few times for Nsight Compute (no timing here):

    ncu --kernel-name regex:moe_gemm --launch-skip 2 --launch-count 2 python3 tools/profile_moe.py \
        [--model gpt-oss-120b] [--tokens 4096] [--config hopper]

Random layer and routing as in cupy_kernels.bench_fused_moe; launches each kernel of the forward three
times (the first is warm-up: module load, workspace)."""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402

from cupy_kernels.bench_fused_moe import MODELS, random_device_layer  # noqa: E402
from cupy_kernels.moe import fused_moe  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt-oss-120b")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--config", default=None)
    a = ap.parse_args()
    E, k, H, I = MODELS[a.model]
    dw = random_device_layer(E, H, I)
    rng = np.random.default_rng(0)
    x = cp.asarray((rng.standard_normal((a.tokens, H)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16))
    ids = np.stack([rng.permutation(E)[:k] for _ in range(a.tokens)]).astype(np.int32)
    tw = cp.asarray(rng.random((a.tokens, k)).astype(np.float32))
    ids = cp.asarray(ids)
    for _ in range(3):
        fused_moe(x, dw, tw, ids, config=a.config)
    cp.cuda.Device().synchronize()


if __name__ == "__main__":
    main()
