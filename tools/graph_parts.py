"""Where the time of one fused-MoE forward goes *inside* a CUDA graph (the benchmark's setting):

    python3 tools/graph_parts.py [--model gpt-oss-120b] [--tokens 1,256] [--config decode]

For each token count, captures graphs of growing prefixes of the forward's launch list (routing, sort,
GEMM1, GEMM2, combine) and prints each prefix's median replay time; the differences are the in-graph cost
of each kernel including its launch gap (per-kernel timing outside a graph adds launch overhead the
graph hides). Random layer and routing as cupy_kernels.bench_fused_moe."""
import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402

from cupy_kernels import routing as _routing  # noqa: E402
from cupy_kernels.bench_fused_moe import MODELS, _median_us, random_device_layer  # noqa: E402
from cupy_kernels.moe import CONFIGS, Workspace, _default_config, fused_moe  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt-oss-120b")
    ap.add_argument("--tokens", default="1,256")
    ap.add_argument("--config", default=None)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--no-pdl", action="store_true", help="plain launches (no programmatic dependent launch)")
    a = ap.parse_args()
    E, k, H, I = MODELS[a.model]
    dw = random_device_layer(E, H, I)
    rng = np.random.default_rng(0)
    for T in [int(t) for t in a.tokens.split(",")]:
        cfg = a.config or _default_config(T * k, dw)
        ws = Workspace(dw, T, k, CONFIGS[cfg][1])
        x = cp.asarray((rng.standard_normal((T, H)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16))
        logits = cp.asarray(rng.standard_normal((T, E)).astype(np.float32))
        tw, ids, bad = cp.empty((T, k), cp.float32), cp.empty((T, k), cp.int32), cp.zeros(1, cp.int32)
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            route = lambda: _routing.launch(logits, "float32", k, 0, True, False, tw, ids, bad)  # noqa: E731
            route()
            launches = []
            pdl = False if a.no_pdl else None
            fused_moe(x, dw, tw, ids, config=cfg, workspace=ws, pdl=pdl, _chained=True)   # warm-up
            fused_moe(x, dw, tw, ids, config=cfg, workspace=ws, pdl=pdl, _chained=True, _launches=launches)
            stream.synchronize()
            steps = [("route", route)] + [(n, f) for n, f in launches]
            prev = 0.0
            out = []
            for i in range(1, len(steps) + 1):
                stream.begin_capture()
                for _, f in steps[:i]:
                    f()
                g = stream.end_capture()
                us = _median_us(lambda: g.launch(stream), a.reps, stream)
                out.append(f"+{steps[i - 1][0]} {us:.1f} ({us - prev:+.1f})")
                prev = us
        print(f"{a.model} T={T} [{cfg}{'' if pdl is None else ', no PDL'}]: " + ", ".join(out), flush=True)


if __name__ == "__main__":
    main()
