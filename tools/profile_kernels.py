"""Launch the main cupy_kernels kernels once each at benchmark sizes (warmed up), for Nsight Compute:

    ncu --kernel-name regex:mx_ --launch-skip 0 --section SpeedOfLight ... python3 tools/profile_kernels.py
The kernels before the marker launch (warm-up, compilation) are also mx_ kernels; the script launches
each benchmark kernel twice and ncu's --launch-skip/--launch-count pick the second of each.
"""
import numpy as np

import cupy as cp
import cupy_kernels as ck
from cupy_kernels import align as _align, routing as _routing


def main():
    rs = cp.random.RandomState(0)
    x = (rs.standard_normal((8192, 8192), dtype=cp.float32).view(cp.uint32) >> 16).astype(cp.uint16)
    logits = rs.standard_normal((16384, 128), dtype=cp.float32)
    T, E, k, bs = 16384, 128, 4, 64
    w = cp.empty((T, k), cp.float32)
    ids = cp.empty((T, k), cp.int32)
    bad = cp.zeros((1,), cp.int32)
    from mxfp4ref.moe.align import max_num_tokens_padded
    size = max_num_tokens_padded(T * k, bs, E)
    sorted_ids = cp.empty((size,), cp.int32)
    expert_ids = cp.empty((-(-size // bs),), cp.int32)
    post = cp.empty((1,), cp.int32)
    for _ in range(2):
        q = ck.quantize(x, dtype="bfloat16", preset="triton-round-up")
        ck.dequantize(q.packed, q.scales, dtype="bfloat16")
        _routing.launch(logits, "float32", k, 0, True, False, w, ids, bad)
        _align.launch(ids, bs, E, None, sorted_ids, expert_ids, post, bad)
        _align.launch(ids, bs, E, None, sorted_ids, expert_ids, post, bad, naive=True)
    cp.cuda.Device().synchronize()
    print("profile_kernels: done")


if __name__ == "__main__":
    main()
