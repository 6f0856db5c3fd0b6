"""Per-kernel times of the fused MoE forward with every expert at exactly C tokens (all tiles one size):

    python3 tools/tile_probe.py 192 hopper192,hopper192w,hopper192w:0b100000 [--model gpt-oss-20b]
    ncu --kernel-name regex:gemm1_hopper192 --launch-skip 2 --launch-count 1 \
        python3 tools/tile_probe.py 192 hopper192w --ncu

Each run is a configuration, optionally with ``:MASK``, the tile widths its width kernel may use
(moe.KERNEL_WIDTHS of hopper192w or hopper128w; e.g. hopper192w:0b100000 runs every big tile at 192; a
MASK on a configuration without widths is an error). Each kernel of the launch list is timed alone,
one launch per event pair (median of 20), in two rounds, the second in reverse order. The layer is
bench_fused_moe's (Gaussian weights); top-4 routing with expert e in exactly C slots, in random order.
--ncu launches the first run's list 4 times, without timing, for Nsight Compute. The BENCHMARKS.md v25
table of hopper192w's GEMM1 at full tiles came from this probe (the session copy). This version ran on an
H200 in v26 without a MASK. The MASK handling was fixed after that and has not run on a GPU (before, a MASK
set hopper192w's widths whatever the configuration)."""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402

import cupy_kernels.moe as fm  # noqa: E402
from cupy_kernels.bench_fused_moe import MODELS, _median_us, random_device_layer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("count", type=int, help="tokens per expert (C)")
    ap.add_argument("runs", help="comma list of configurations, each optionally CONFIG:MASK")
    ap.add_argument("--model", default="gpt-oss-20b")
    ap.add_argument("--ncu", action="store_true", help="launch the first run's kernels 4 times, no timing")
    a = ap.parse_args()
    runs = [r.split(":") for r in a.runs.split(",")]
    for run in runs:
        if len(run) > 1 and run[0] not in fm.KERNEL_WIDTHS:
            ap.error(f"{run[0]}: only {sorted(fm.KERNEL_WIDTHS)} take a widths MASK")
    E, k, H, I = MODELS[a.model]
    dw = random_device_layer(E, H, I)
    rng = np.random.default_rng(5)
    ids = rng.permutation(np.repeat(np.arange(E, dtype=np.int32), a.count)).reshape(-1, k)
    T = ids.shape[0]
    x = cp.asarray((rng.standard_normal((T, H)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16))
    tw = cp.asarray(rng.random((T, k)).astype(np.float32))
    ids = cp.asarray(ids)
    default_masks = dict(fm.KERNEL_WIDTHS)
    s = cp.cuda.Stream(non_blocking=True)
    for r in range(1 if a.ncu else 2):
        for run in runs[:1] if a.ncu else (runs if r == 0 else runs[::-1]):
            cfg = run[0]
            if len(run) > 1:
                fm.KERNEL_WIDTHS[cfg] = int(run[1], 0)
            try:
                ws = fm.Workspace(dw, T, k, fm.CONFIGS[cfg][1])
                launches = []
                with s:
                    fm.fused_moe(x, dw, tw, ids, config=cfg, workspace=ws, _launches=launches)
                    if a.ncu:
                        for _ in range(4):
                            for _name, launch in launches:
                                launch()
                        s.synchronize()
                        continue
                    parts = {name: _median_us(launch, 20, s) for name, launch in launches}
            finally:
                fm.KERNEL_WIDTHS.update(default_masks)
            print(f"C={a.count} T={T} {':'.join(run):20s} "
                  + ", ".join(f"{n.replace('moe_', '')} {v:.1f}" for n, v in parts.items() if "gemm" in n), flush=True)


if __name__ == "__main__":
    main()
