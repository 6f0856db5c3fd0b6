"""Benchmarks of cupy_kernels, with the peer (triton_kernels) timed in the same run.

    python -m cupy_kernels.bench [--only quantize,dequantize,...] [--peers .peers/tk] [--reps 50]
                                 [--json FILE] [--markdown FILE]

Per kernel and size: median time of CUDA-event-timed launches after warm-up, bytes moved (each
input read once + each output written once), GB/s, the fraction of the device-to-device copy
bandwidth measured at the start of this run (bytes read + written by cupy's copy of 1 GiB), and the
peer's number from the same run where one exists (triton_kernels ``downcast_to_mxfp`` /
``upcast_from_mxfp`` on the same bf16 matrix, through .peers/bench_triton_kernels.py). The
fused_moe rows are timed as the peer's timer times triton_kernels (forwards back to back in one CUDA
graph, see bench_fused_moe) and give their fraction of the layer's roofline instead, against ceilings
measured through their own part of the run (bench_fused_moe.Ceilings).

Extending: write ``def bench_x(ctx) -> list[dict]`` decorated with ``@register("x")``; each row dict
has at least ``kernel``, ``size``, ``time_us``, and optionally ``bytes``, ``peer_us``,
``peer_GBps``, ``note``. ``ctx`` has ``cp``, ``copy_GBps``, ``reps``, ``peers`` (folder holding
triton_kernels/ or None), ``timeit(fn)`` -> median microseconds. Inputs are random (never zeros) and
each benchmark rotates between two input buffers when they fit in L2 twice over.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import numpy as np

REGISTRY: dict = {}


def register(name: str):
    def deco(fn):
        REGISTRY[name] = fn
        return fn
    return deco


class Ctx:
    def __init__(self, reps: int, peers: str | None):
        from ._loader import cupy
        self.cp = cupy()
        self.reps = reps
        self.peers = peers
        self.copy_GBps = None

    def timeit(self, fn, warmup: int = 3, inner: int = 10) -> float:
        """Median microseconds of one ``fn()``: ``reps`` samples, each ``inner`` back-to-back launches
        between two CUDA events (so host launch overhead overlaps the device work), divided by inner."""
        cp = self.cp
        for _ in range(warmup):
            fn()
        cp.cuda.Device().synchronize()
        times = []
        for _ in range(self.reps):
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record()
            for _ in range(inner):
                fn()
            b.record()
            b.synchronize()
            times.append(cp.cuda.get_elapsed_time(a, b) * 1e3 / inner)
        return statistics.median(times)


def measure_copy(ctx: Ctx) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written)."""
    cp = ctx.cp
    n = 1 << 30
    src = cp.ones(n // 4, cp.float32)
    dst = cp.empty_like(src)
    t = ctx.timeit(lambda: cp.copyto(dst, src))
    del src, dst
    return 2 * n / t / 1e3


def _rand_bf16(cp, shape, seed=0):
    """Random bf16 bits (cupy uint16): normal values times 2^U(-8, 8), never zero-filled."""
    rs = cp.random.RandomState(seed)
    x = (rs.standard_normal(shape, dtype=cp.float32) * cp.exp2(rs.uniform(-8, 8, shape).astype(cp.float32)))
    return (x.view(cp.uint32) >> 16).astype(cp.uint16)


QUANT_SHAPES = [(8192, 8192), (32 * 5760, 2880), (32 * 2880, 2880)]   # square; gpt-oss-20b w13, w2


def _peer_quant(ctx: Ctx, rows: int, cols: int):
    if not ctx.peers:
        return None
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(ctx.peers)))
        from bench_triton_kernels import quant_bandwidth
        return quant_bandwidth(rows, cols, tk_dir=ctx.peers)
    except Exception as e:  # the peer is optional: say why it is missing
        return {"error": f"{type(e).__name__}: {e}"[:200]}


def _quant_launcher(cp, x, in_dtype, preset=None, naive=False, elem=None, variant="auto"):
    """A no-argument function that only enqueues the quantize kernel (outputs preallocated)."""
    import dataclasses
    from mxfp4ref.quantize import resolve_config
    from .quantize import _launch
    cfg = resolve_config(None, None, 32, preset)
    div = 2
    if elem is not None:
        cfg = dataclasses.replace(cfg, elem=elem)
        div = 1
    rows, cols = x.shape
    codes = cp.empty((rows, cols // div), cp.uint8)
    scales = cp.empty((rows, cols // 32), cp.uint8)
    return lambda: _launch(x, in_dtype, codes, scales, 1, cfg, naive, variant)


@register("quantize")
def bench_quantize(ctx: Ctx):
    cp = ctx.cp
    rows_out = []
    for rows, cols in QUANT_SHAPES:
        n = rows * cols
        x = _rand_bf16(cp, (rows, cols))
        t = ctx.timeit(_quant_launcher(cp, x, "bfloat16", preset="triton-round-up"))
        peer = _peer_quant(ctx, rows, cols) if (rows, cols) == (8192, 8192) else None
        row = {"kernel": "quantize bf16->mxfp4 (fast, triton-round-up)", "size": f"{rows}x{cols}", "time_us": t,
               "bytes": n * 2 + n // 2 + n // 32}
        if peer and "quantize_GBps" in peer:
            row["peer_GBps"] = peer["quantize_GBps"]
        elif peer:
            row["note"] = peer.get("error", "")
        rows_out.append(row)
        if (rows, cols) == (8192, 8192):
            for preset in ("ocp", "torchao-even"):
                t = ctx.timeit(_quant_launcher(cp, x, "bfloat16", preset=preset))
                rows_out.append({"kernel": f"quantize bf16->mxfp4 (fast, {preset})", "size": f"{rows}x{cols}",
                                 "time_us": t, "bytes": n * 2 + n // 2 + n // 32})
            t = ctx.timeit(_quant_launcher(cp, x, "bfloat16", preset="triton-round-up", variant="lanes"))
            rows_out.append({"kernel": "quantize bf16->mxfp4 (4 lanes/block kernel, triton-round-up)",
                             "size": f"{rows}x{cols}", "time_us": t, "bytes": n * 2 + n // 2 + n // 32})
            t = ctx.timeit(_quant_launcher(cp, x, "bfloat16", naive=True))
            rows_out.append({"kernel": "quantize bf16->mxfp4 (naive)", "size": f"{rows}x{cols}",
                             "time_us": t, "bytes": n * 2 + n // 2 + n // 32})
            xf = x.astype(cp.uint32) << 16
            xf = xf.view(cp.float32)
            t = ctx.timeit(_quant_launcher(cp, xf, "float32"))
            rows_out.append({"kernel": "quantize f32->mxfp4 (fast)", "size": f"{rows}x{cols}",
                             "time_us": t, "bytes": n * 4 + n // 2 + n // 32})
            del xf
            if peer and "dequantize_GBps" in peer:
                ctx._peer_dequant = peer["dequantize_GBps"]
        del x
    return rows_out


def _dequant_launcher(cp, packed, scales, out_dtype, naive=False):
    """A no-argument function that only enqueues the dequantize kernel (output preallocated)."""
    from .dequantize import NAMES, KERNEL_FILE, THREADS
    from ._args import grid_for
    from ._loader import get_kernel
    rows, half = packed.shape
    n = rows * half * 2
    o = 0 if out_dtype == "float32" else 1
    out = cp.empty((rows, half * 2), cp.float32 if o == 0 else cp.uint16)
    if naive:
        k = get_kernel(KERNEL_FILE, f"mx_dequantize_naive<{o}>", NAMES)
        args = (packed, scales, out, np.int64(rows), np.int64(2 * half), np.int64(1), np.int32(32))
        grid = grid_for(n, THREADS, cap=1 << 16)
    else:
        k = get_kernel(KERNEL_FILE, f"mx_dequantize_fast<{o}>", NAMES)
        from .dequantize import CHUNK, UNROLL
        args = (packed, scales, out, np.int64(n // CHUNK[o]))
        grid = grid_for(n // CHUNK[o], THREADS * UNROLL[o])
    return lambda: k((grid,), (THREADS,), args)


@register("dequantize")
def bench_dequantize(ctx: Ctx):
    cp = ctx.cp
    rows_out = []
    for rows, cols in QUANT_SHAPES:
        n = rows * cols
        rs = cp.random.RandomState(1)
        packed = rs.randint(0, 256, (rows, cols // 2), dtype=cp.int32).astype(cp.uint8)
        scales = rs.randint(110, 140, (rows, cols // 32), dtype=cp.int32).astype(cp.uint8)
        for out, size in (("bfloat16", 2), ("float32", 4)):
            if out == "float32" and (rows, cols) != (8192, 8192):
                continue
            t = ctx.timeit(_dequant_launcher(cp, packed, scales, out))
            row = {"kernel": f"dequantize mxfp4->{out} (fast)", "size": f"{rows}x{cols}", "time_us": t,
                   "bytes": n // 2 + n // 32 + n * size}
            if out == "bfloat16" and (rows, cols) == (8192, 8192) and getattr(ctx, "_peer_dequant", None):
                row["peer_GBps"] = ctx._peer_dequant
            rows_out.append(row)
        if (rows, cols) == (8192, 8192):
            t = ctx.timeit(_dequant_launcher(cp, packed, scales, "bfloat16", naive=True))
            rows_out.append({"kernel": "dequantize mxfp4->bfloat16 (naive)", "size": f"{rows}x{cols}",
                             "time_us": t, "bytes": n // 2 + n // 32 + n * 2})
        del packed, scales
    return rows_out


@register("mxfp8")
def bench_mxfp8(ctx: Ctx):
    from mxfp4ref.config import ElemFormat
    cp = ctx.cp
    rows, cols = 16384, 2880
    n = rows * cols
    x = _rand_bf16(cp, (rows, cols), seed=2)
    t = ctx.timeit(_quant_launcher(cp, x, "bfloat16", elem=ElemFormat.E4M3))
    return [{"kernel": "quantize_mxfp8 bf16->e4m3 (fast)", "size": f"{rows}x{cols}", "time_us": t,
             "bytes": n * 2 + n + n // 32}]


def routing_buffers(cp, T: int = 16384, E: int = 128, k: int = 4, bs: int = 64, seed: int = 3):
    """Inputs and preallocated outputs of route + align_block_size at the benchmark's shape (16384 tokens,
    128 experts, top-4, block 64): random float32 ``logits`` (T, E), the routing outputs ``weights`` and
    ``ids`` (T, k), the error flag ``bad``, and align's ``sorted_ids`` (``size`` entries), ``expert_ids``
    and ``post``, as ``routing.launch`` / ``align.launch`` take them (also used by
    tools/profile_kernels.py)."""
    from types import SimpleNamespace
    from mxfp4ref.moe.align import max_num_tokens_padded
    rs = cp.random.RandomState(seed)
    size = max_num_tokens_padded(T * k, bs, E)
    return SimpleNamespace(
        T=T, E=E, k=k, bs=bs, size=size,
        logits=rs.standard_normal((T, E), dtype=cp.float32),
        weights=cp.empty((T, k), cp.float32), ids=cp.empty((T, k), cp.int32), bad=cp.zeros((1,), cp.int32),
        sorted_ids=cp.empty((size,), cp.int32), expert_ids=cp.empty((-(-size // bs),), cp.int32),
        post=cp.empty((1,), cp.int32))


@register("routing")
def bench_routing(ctx: Ctx):
    """route (softmax, renormalize, top-4) + align_block_size for 16384 tokens x 128 experts: each a
    CUDA graph of 20 back-to-back copies (time / 20), alone and both together (the number the 20 us
    target is about), and route_and_align's pair (align's counts written by the routing kernel)."""
    from . import align as _align
    from . import routing as _routing
    cp = ctx.cp
    buf = routing_buffers(cp)
    T, E, k, bs, size = buf.T, buf.E, buf.k, buf.bs, buf.size
    logits, weights, ids, bad = buf.logits, buf.weights, buf.ids, buf.bad
    sorted_ids, expert_ids, post = buf.sorted_ids, buf.expert_ids, buf.post
    emap = None

    def route():
        _routing.launch(logits, "float32", k, 0, True, False, weights, ids, bad)

    counts = _align.workspace(T * k, E)

    def align():
        _align.launch(ids, bs, E, emap, sorted_ids, expert_ids, post, bad, counts=counts)

    def align_naive():
        _align.launch(ids, bs, E, emap, sorted_ids, expert_ids, post, bad, naive=True)

    def route_naive():
        _routing.launch(logits, "float32", k, 0, True, False, weights, ids, bad, naive=True)

    rows_out = []
    # tiny kernels: time CUDA-graph replays (host launch overhead is larger than the kernels)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        route()
        align()
        stream.synchronize()

        reps = 20

        def graph_of(*fns):
            """One CUDA graph holding `reps` back-to-back copies of the launches (no host gaps)."""
            stream.begin_capture()
            for _ in range(reps):
                for fn in fns:
                    fn()
            return stream.end_capture()
        route_naive()
        graphs = {"route": graph_of(route), "align": graph_of(align), "both": graph_of(route, align),
                  "align_naive": graph_of(align_naive), "route_naive": graph_of(route_naive)}
        t = {name: ctx.timeit(lambda g=g: g.launch(stream=stream), inner=1) / reps
             for name, g in graphs.items()}
        # two-kernel align with other block shapes (module settings; restored after)
        saved = _align.IDS_PER_BLOCK, _align.MAX_WARPS
        variants = []
        try:
            counts_r = cp.empty((-(-T // _routing.TOKENS_PER_ROW), E), cp.int32)

            def route_cnt():
                _routing.launch(logits, "float32", k, 0, True, False, weights, ids, bad, counts=counts_r)
            for ipb, mw in ((4096, 32), (2048, 16), (1024, 16), (1024, 8)):
                _align.IDS_PER_BLOCK, _align.MAX_WARPS = ipb, mw
                cnt_v = _align.workspace(T * k, E)

                def align_v(c=cnt_v):
                    _align.launch(ids, bs, E, emap, sorted_ids, expert_ids, post, bad, counts=c)

                def align_c():
                    _align.launch(ids, bs, E, emap, sorted_ids, expert_ids, post, bad, counts=counts_r,
                                  counted=_routing.TOKENS_PER_ROW * k)
                align_v()
                route_cnt()
                align_c()
                stream.synchronize()
                ga, gb2, gc = graph_of(align_v), graph_of(route, align_v), graph_of(route_cnt, align_c)
                variants.append((ipb, mw, ctx.timeit(lambda: ga.launch(stream=stream), inner=1) / reps,
                                 ctx.timeit(lambda: gb2.launch(stream=stream), inner=1) / reps,
                                 ctx.timeit(lambda: gc.launch(stream=stream), inner=1) / reps))
            _align.IDS_PER_BLOCK, _align.MAX_WARPS = saved

            def align_c0():
                _align.launch(ids, bs, E, emap, sorted_ids, expert_ids, post, bad, counts=counts_r,
                              counted=_routing.TOKENS_PER_ROW * k)
            g0 = graph_of(route_cnt, align_c0)
            t["route_align"] = ctx.timeit(lambda: g0.launch(stream=stream), inner=1) / reps
            gr = graph_of(route_cnt)
            t["route_cnt"] = ctx.timeit(lambda: gr.launch(stream=stream), inner=1) / reps
        finally:
            _align.IDS_PER_BLOCK, _align.MAX_WARPS = saved
    rows_out.append({"kernel": "route softmax top-4 (fp32 logits)", "size": f"{T}x{E}", "time_us": t["route"],
                     "bytes": T * E * 4 + T * k * 8, "note": "logits L2-resident across replays"})
    rows_out.append({"kernel": "route softmax top-4 (fp32 logits, naive: 1 warp/token)", "size": f"{T}x{E}",
                     "time_us": t["route_naive"], "bytes": T * E * 4 + T * k * 8})
    rows_out.append({"kernel": "align_block_size bs=64 (2 kernels)", "size": f"{T}x{k}", "time_us": t["align"],
                     "bytes": T * k * 4 * 2 + size * 4})
    rows_out.append({"kernel": "route softmax top-4 + align counts (1024 threads/block)", "size": f"{T}x{E}",
                     "time_us": t["route_cnt"], "bytes": T * E * 4 + T * k * 8})
    for ipb, mw, ta, tb2, tc in variants:
        rows_out.append({"kernel": f"route+counts, align scatter ({ipb} ids x <={mw} warps/block)",
                         "size": f"{T}x{E} top-{k}", "time_us": tc, "note": "2 kernels; target < 20 us"})
        rows_out.append({"kernel": f"align bs=64 (2 kernels, {ipb} ids x <={mw} warps/block)", "size": f"{T}x{k}",
                         "time_us": ta, "bytes": T * k * 4 * 2 + size * 4})
        rows_out.append({"kernel": f"route + align ({ipb} ids x <={mw} warps/block)", "size": f"{T}x{E} top-{k}",
                         "time_us": tb2, "note": "target < 20 us"})
    rows_out.append({"kernel": "align_block_size bs=64 (naive, 1 block)", "size": f"{T}x{k}",
                     "time_us": t["align_naive"], "bytes": T * k * 4 * 2 + size * 4})
    rows_out.append({"kernel": "route + align (one CUDA graph)", "size": f"{T}x{E} top-{k}",
                     "time_us": t["both"], "note": "target < 20 us"})
    rows_out.append({"kernel": "route_and_align (counts fused into route; one CUDA graph)",
                     "size": f"{T}x{E} top-{k}", "time_us": t["route_align"], "note": "2 kernels; target < 20 us"})
    try:                                      # the one-kernel cooperative variant, if the graph takes it

        def align_fused():
            _align.launch(ids, bs, E, emap, sorted_ids, expert_ids, post, bad, counts=counts, fused=True)
        with stream:
            align_fused()
            stream.synchronize()
            gf, gb = graph_of(align_fused), graph_of(route, align_fused)
            tf = ctx.timeit(lambda: gf.launch(stream=stream), inner=1) / reps
            tb = ctx.timeit(lambda: gb.launch(stream=stream), inner=1) / reps
        rows_out.append({"kernel": "align_block_size bs=64 (fused, cooperative)", "size": f"{T}x{k}",
                         "time_us": tf, "bytes": T * k * 4 * 2 + size * 4})
        rows_out.append({"kernel": "route + align fused (one CUDA graph)", "size": f"{T}x{E} top-{k}",
                         "time_us": tb, "note": "target < 20 us"})
    except Exception as e:
        rows_out.append({"kernel": "align fused", "size": "-", "time_us": float("nan"),
                         "note": f"FAILED {type(e).__name__}: {e}"[:160]})
    peer = _peer_routing(ctx, T, E, k)
    if peer is not None:
        rows_out[-1]["peer_us"] = peer
    return rows_out


def _peer_routing(ctx: Ctx, T, E, k):
    """triton_kernels.routing (top-k + softmax + expert metadata) on the same logits shape."""
    if not ctx.peers:
        return None
    try:
        sys.path.insert(0, os.path.abspath(ctx.peers))
        import torch
        import triton
        from triton_kernels.routing import routing
        logits = torch.randn(T, E, device="cuda", dtype=torch.float32)
        routing(logits, k)
        return triton.testing.do_bench(lambda: routing(logits, k), return_mode="median") * 1e3
    except Exception as e:
        print(f"peer routing unavailable: {type(e).__name__}: {e}"[:300], flush=True)
        return None


@register("fused_moe")
def bench_fused_moe(ctx: Ctx):
    """The full gpt-oss MoE layer (GPU routing + fused_moe, CUDA-graph replay) for gpt-oss-120b and -20b
    at 1..16384 tokens, with triton_kernels' time from the same run (cupy_kernels/bench_fused_moe.py)."""
    from .bench_fused_moe import MODELS, TOKENS, Ceilings, layer_rows
    ceilings = Ceilings()
    peers = os.path.dirname(os.path.abspath(ctx.peers)) if ctx.peers else None
    rows = layer_rows(list(MODELS), TOKENS, reps=ctx.reps, peers=peers, ceilings=ceilings, verbose=False)
    print(f"fused_moe rooflines: {ceilings.describe()}", flush=True)
    return [{"kernel": f"fused_moe {r['model']} ({r['config']})", "size": f"T={r['tokens']}", "time_us": r["ours_us"],
             "peer_us": r["triton_us"],
             "note": f"{100 * r['frac_roofline']:.0f}% of roofline {r['roofline_us']:.1f} us"} for r in rows]


def fmt_table(rows, copy_GBps, gpu) -> str:
    head = (f"GPU: {gpu}; device-to-device copy: {copy_GBps:.0f} GB/s (read + write)\n\n"
            "| kernel | size | time (us) | bytes | GB/s | of copy | peer |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        gbps = r["bytes"] / r["time_us"] / 1e3 if r.get("bytes") else None
        frac = f"{gbps / copy_GBps:.0%}" if gbps else ""
        peer = ""
        if r.get("peer_GBps"):
            peer = f"triton_kernels {r['peer_GBps']:.0f} GB/s"
        elif r.get("peer_us"):
            peer = f"triton_kernels {r['peer_us']:.1f} us"
        if r.get("note"):
            peer = (peer + " " + r["note"]).strip()
        lines.append(f"| {r['kernel']} | {r['size']} | {r['time_us']:.1f} | "
                     f"{r.get('bytes', '') or ''} | {'' if gbps is None else f'{gbps:.0f}'} | {frac} | {peer} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    ap.add_argument("--peers", default=None, help="folder holding triton_kernels/ (e.g. .peers/tk)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args(argv)
    ctx = Ctx(a.reps, a.peers)
    cp = ctx.cp
    gpu = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"]
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    ctx.copy_GBps = measure_copy(ctx)
    print(f"GPU {gpu}, copy {ctx.copy_GBps:.0f} GB/s", flush=True)
    names = [n for n in a.only.split(",") if n] or list(REGISTRY)
    rows = []
    for name in names:
        try:
            got = REGISTRY[name](ctx)
        except Exception as e:
            got = [{"kernel": name, "size": "-", "time_us": float("nan"), "note": f"FAILED {type(e).__name__}: {e}"[:200]}]
        for r in got:
            print(json.dumps(r), flush=True)
        rows.extend(got)
        cp.get_default_memory_pool().free_all_blocks()
    table = fmt_table(rows, ctx.copy_GBps, gpu)
    print(table)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gpu": gpu, "copy_GBps": ctx.copy_GBps, "rows": rows}, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
