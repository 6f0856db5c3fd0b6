"""Benchmark of the full gpt-oss MoE layer: cupy_kernels.fused_moe vs triton_kernels in the same run.

    python -m cupy_kernels.bench_fused_moe [--models gpt-oss-120b,gpt-oss-20b] [--tokens 1,4,...]
                                           [--peers .peers] [--reps 50] [--cold-l2] [--json FILE]

Per (model, tokens): our time and triton_kernels' (``.peers/bench_triton_kernels.py`` TritonKernelsLayer:
routing + 2 matmul_ogs), both timed as triton.testing.do_bench_cudagraph(rep=200, median) times the peer:
~200 ms of forwards back to back in one CUDA graph, per-forward time = elapsed / count, median of 10 such
replays. Ours is moe_forward = GPU routing + the fused layer. Also printed: ours timed one graph replay per
event pair (median of --reps), which adds the graph launch in front of each forward. Then their ratio,
and our fraction of the roofline: max(touched weight bytes / copy bandwidth, flops / bf16 matmul rate).
Each ceiling is the highest of several medians measured through the run on this card (before each model
and at the end; see Ceilings): the rates move by up to 8% with what the card ran just before, and a
ceiling taken in a slow moment would flatter every fraction. The rows are printed as
they are timed, and again at the end with the roofline against the run's ceilings.
Inputs: ours gets the very inputs the peer's timer makes for itself (peer_inputs: torch.randn from seed 1,
rounded to bf16), so both route every token the same way and time the same tile mix. Weights (--weights):
by default N(0, 0.02^2) quantized with triton_kernels' ROUND_UP scales, as the peer quantizes its own;
"codes" gives the uniform random FP4 codes and scale bytes 118..123 that runs before v25 used. --sweep
times each configuration on the same inputs (the peer's, as the table).
Note: each replay reuses the same inputs (as the peer's timer does), so weights that fit in L2 may hit
(at 1-4 tokens the touched weights are about L2's size). --cold-l2 writes a buffer of 4x the L2 size
before every timed replay, outside the timed region, for both ours and the peer; both are then timed one
replay per event pair (the peer's forward as one torch CUDA graph of TritonKernelsLayer.__call__ on the
same inputs its own timer makes).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

MODELS = {"gpt-oss-120b": (128, 4, 2880, 2880), "gpt-oss-20b": (32, 4, 2880, 2880)}
TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384]


def measure_ceilings():
    """(copy GB/s counting read + write, bf16 matmul TFLOP/s via torch or None): the median of 10 timed runs
    each, after a few untimed ones."""
    import cupy as cp
    n = 1 << 30
    a = cp.empty(n, cp.uint8)
    a.fill(1)
    b = cp.empty_like(a)
    for _ in range(3):
        cp.copyto(b, a)
    ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
    ts = []
    for _ in range(10):
        ev0.record()
        cp.copyto(b, a)
        ev1.record()
        ev1.synchronize()
        ts.append(cp.cuda.get_elapsed_time(ev0, ev1))
    bw = 2 * n / (np.median(ts) * 1e-3) / 1e9
    del a, b
    cp.get_default_memory_pool().free_all_blocks()
    rate = None
    try:
        import torch
        m = 8192
        x = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
        y = torch.randn(m, m, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            x @ y
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(10):
            e0.record()
            x @ y
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
        rate = 2 * m ** 3 / (np.median(ts) * 1e-3) / 1e12
        del x, y
        torch.cuda.empty_cache()
    except Exception as exc:                      # noqa: BLE001 - report and go on without torch
        print(f"# bf16 matmul ceiling not measured: {exc}", flush=True)
    return bw, rate


class Ceilings:
    """The run's two ceilings, each the highest of its medians measured at several points (``measure``).

    The rates a card reaches move with its state (H200s, 2026-11-27): the copy median read 4130-4147 GB/s
    while the card was busy with copies, 4023-4035 after 3 s idle following them, 4071 / 4175 at the start of
    two bench processes of one call, and 4040 / 3751 / 3954 before each model and at the end of one full run
    (3751 right after the 120b rows up to 16384 tokens); the bf16 rate fell from 790 to 698 TFLOP/s within
    four rounds of matrix products. A slow moment only lowers a ceiling, so the highest median is the
    estimate, and a fraction of the roofline never rests on one low reading. It is still a lower bound of
    what the card can do: a run that starts on a hot card has no cool reading. Every measurement is kept
    (``samples``)."""

    def __init__(self):
        self.samples = []                         # (tag, copy GB/s, bf16 TFLOP/s or None)

    def measure(self, tag):
        self.samples.append((tag, *measure_ceilings()))

    @property
    def copy_GBps(self):
        return max(s[1] for s in self.samples)

    @property
    def bf16_TFLOPs(self):
        rates = [s[2] for s in self.samples if s[2]]
        return max(rates) if rates else None

    def describe(self):
        copies = ", ".join(f"{s[1]:.0f}" for s in self.samples)
        text = f"copy {self.copy_GBps:.0f} GB/s (read+write; highest of {copies})"
        if self.bf16_TFLOPs:
            rates = ", ".join(f"{s[2]:.0f}" for s in self.samples if s[2])
            text += f"; bf16 matmul {self.bf16_TFLOPs:.0f} TFLOP/s (highest of {rates})"
        return text + "; measured " + ", ".join(s[0] for s in self.samples)


def random_device_layer(E, H, I, seed=0, weights="gaussian"):
    """A layer of random weights on the device. weights="gaussian": N(0, 0.02^2) float32 weights quantized
    with triton_kernels' ROUND_UP scales (preset triton-round-up), the distribution the peer's benchmark
    quantizes for itself (it rounds them to bf16 first); "codes": uniform random FP4 codes and scale bytes
    118..123. Biases N(0, 0.1^2) in both, as the peer's."""
    import cupy as cp
    from .moe import to_device
    from .quantize import quantize
    rs = cp.random.RandomState(seed)
    b = lambda shape: (rs.standard_normal(shape, dtype=cp.float32) * 0.1).astype(cp.float32)
    if weights == "codes":
        u8 = lambda shape: rs.randint(0, 256, size=shape, dtype=cp.int32).astype(cp.uint8)
        sc = lambda shape: rs.randint(118, 124, size=shape, dtype=cp.int32).astype(cp.uint8)
        w13, w13s = u8((E, 2 * I, H // 2)), sc((E, 2 * I, H // 32))
        w2, w2s = u8((E, H, I // 2)), sc((E, H, I // 32))
    elif weights == "gaussian":
        def gauss(rows, cols):                    # (E, rows, cols) quantized along cols, a few experts at a time
            packed = cp.empty((E, rows, cols // 2), cp.uint8)
            scales = cp.empty((E, rows, cols // 32), cp.uint8)
            for e in range(0, E, 8):
                q = quantize(rs.standard_normal((min(8, E - e), rows, cols), dtype=cp.float32) * 0.02,
                             axis=-1, preset="triton-round-up")
                packed[e:e + 8], scales[e:e + 8] = q.packed, q.scales
            return packed, scales
        (w13, w13s), (w2, w2s) = gauss(2 * I, H), gauss(H, I)
    else:
        raise ValueError(f"weights: 'codes' or 'gaussian', got {weights!r}")
    dw = to_device(w13_weight=w13, w13_weight_scale=w13s, w2_weight=w2, w2_weight_scale=w2s,
                   w13_bias=b((E, 2 * I)), w2_bias=b((E, H)))
    del w13, w13s, w2, w2s
    cp.get_default_memory_pool().free_all_blocks()
    return dw


def layer_bytes_per_expert(H, I):
    """MXFP4 bytes of one expert as stored (codes + scales + fp32 biases)."""
    return (2 * I * H // 2 + 2 * I * H // 32 + H * I // 2 + H * I // 32) + 4 * (2 * I + H)


def l2_scrub_bytes():
    """Bytes of the buffer --cold-l2 writes before each timed replay: 4x this device's L2 cache."""
    import cupy as cp
    return 4 * int(cp.cuda.Device().attributes["L2CacheSize"])


def _median_us(fn, reps, stream, scrub=None):
    """Median us of fn() between two events on ``stream``; ``scrub`` (a cupy array): written on the stream
    before each timed call, outside the events (evicts L2)."""
    import cupy as cp
    for _ in range(3):
        fn()
    stream.synchronize()
    evs = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(reps)]
    for i, (e0, e1) in enumerate(evs):
        if scrub is not None:
            with stream:
                scrub.fill(i & 0xff)
        e0.record(stream)
        fn()
        e1.record(stream)
    stream.synchronize()
    return float(np.median([cp.cuda.get_elapsed_time(a, b) for a, b in evs]) * 1e3)


def peer_cold_us(tk, T, reps, seed=1):
    """The peer's forward (TritonKernelsLayer.__call__, inputs made as its time_us makes them) as one torch
    CUDA graph, median us per replay with L2 evicted before each (the --cold-l2 counterpart of time_us)."""
    import torch
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(T, tk.H, device="cuda", generator=g).to(torch.bfloat16)
    logits = torch.randn(T, tk.E, device="cuda", generator=g).to(torch.bfloat16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            tk(x, logits)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        tk(x, logits)
    scrub = torch.empty(l2_scrub_bytes(), dtype=torch.uint8, device="cuda")
    evs = []
    with torch.cuda.stream(stream):
        for i in range(reps + 3):
            scrub.fill_(i & 0xff)
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record(stream)
            graph.replay()
            e1.record(stream)
            if i >= 3:
                evs.append((e0, e1))
    torch.cuda.synchronize()
    us = float(np.median([a.elapsed_time(b) for a, b in evs]) * 1e3)
    del graph, scrub
    return us


def _unrolled_us(g, rep_ms=200.0, retries=10):
    """Median us per forward of ``g`` (a MoEGraph) timed as triton.testing.do_bench_cudagraph times the
    peer: estimate one forward (5 replays), capture n = rep_ms / estimate forwards back to back in one CUDA
    graph, replay that graph ``retries`` times between two events, per-forward time = elapsed / n, median.
    Unlike one replay per event pair, this leaves out the graph launch in front of every forward (inside a
    model's graph a layer has none), and it times ~rep_ms of sustained load per sample, as the peer's."""
    import cupy as cp
    s = g.stream
    ev0, ev1 = cp.cuda.Event(), cp.cuda.Event()
    ev0.record(s)
    for _ in range(5):
        g.graph.launch(s)
    ev1.record(s)
    ev1.synchronize()
    n = max(1, int(rep_ms / (cp.cuda.get_elapsed_time(ev0, ev1) / 5)))
    with s:
        s.begin_capture()
        for _ in range(n):
            g.forward()
        big = s.end_capture()
    ts = []
    for _ in range(retries):
        ev0.record(s)
        big.launch(s)
        ev1.record(s)
        ev1.synchronize()
        ts.append(cp.cuda.get_elapsed_time(ev0, ev1) / n)
    del big
    return float(np.median(ts) * 1e3)


def peer_inputs(T, H, E, seed=1):
    """The inputs TritonKernelsLayer.time_us makes for itself (torch.randn on the GPU from ``seed``, rounded
    to bf16): x (T, H) as bf16 bits (cupy uint16) and router logits (T, E) as float32 (the bf16 values,
    exactly). Given the same logits, ours and the peer route every token to the same experts (but for a
    tie at the k-th logit), so the two time the same tile mix; None where torch is missing."""
    try:
        import torch
    except ImportError:
        return None
    import cupy as cp
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(T, H, device="cuda", generator=g).to(torch.bfloat16)
    logits = torch.randn(T, E, device="cuda", generator=g).to(torch.bfloat16)
    torch.cuda.synchronize()
    return (cp.from_dlpack(x.view(torch.int16)).view(cp.uint16).copy(),
            cp.from_dlpack(logits.float()).copy())


def time_ours(dw, T, k, rng, reps, config=None, breakdown=False, pdl=None, cold_l2=False, inputs=None):
    """(us, us_replay, touched experts, {kernel: us} if breakdown) of moe_forward (GPU routing + layer).
    us: timed as the peer is (_unrolled_us); with cold_l2, one CUDA-graph replay per event pair with L2
    evicted before each (median of reps). us_replay: warm, one replay per event pair (median of reps); None
    with cold_l2. pdl: programmatic dependent launches (None = where available). inputs: (x bits, logits) as
    peer_inputs gives them; None: drawn from ``rng``."""
    import cupy as cp
    from .moe import MoEGraph, fused_moe
    g = MoEGraph(dw, T, k, config=config, routing=True, pdl=pdl)
    if inputs is None:
        x = rng.standard_normal((T, dw.hidden_size)).astype(np.float32)
        g.x[...] = cp.asarray((x.view(np.uint32) >> 16).astype(np.uint16))      # truncation is fine here
        g.router_logits[...] = cp.asarray(rng.standard_normal((T, dw.num_experts)).astype(np.float32))
    else:
        g.x[...], g.router_logits[...] = inputs
    cp.cuda.get_current_stream().synchronize()
    s = g.stream
    scrub = cp.empty(l2_scrub_bytes(), cp.uint8) if cold_l2 else None
    us_replay = _median_us(lambda: g.graph.launch(s), reps, s, scrub)
    del scrub
    us = us_replay if cold_l2 else _unrolled_us(g)
    touched = int(np.unique(cp.asnumpy(g.workspace.route_ids)).size)
    parts = {}
    if breakdown:
        launches = []
        with s:
            fused_moe(g.x, dw, g.workspace.route_w, g.workspace.route_ids, config=config, workspace=g.workspace,
                      _launches=launches)
            for name, run in launches:                    # each is idempotent (fused_moe)
                parts[name] = _median_us(run, max(5, reps // 2), s)
    del g                  # its CUDA graph goes now, not during the peer's capture (MoEGraph.forward)
    return us, (None if cold_l2 else us_replay), touched, parts


def layer_rows(models, tokens, *, reps, peers, ceilings, config=None, breakdown=False, verbose=True,
               cold_l2=False, weights="gaussian"):
    """Rows (dicts) of the layer benchmark: ours vs triton_kernels per (model, tokens). ``peers``: the
    folder holding bench_triton_kernels.py and tk/ (None: no peer). ``ceilings`` (a Ceilings): measured
    before each model and once more at the end; the rows' rooflines use the run's highest medians
    (set_roofline), so they are final only when this returns. cold_l2: L2 evicted before every timed
    replay, ours and the peer's. weights: our layer's weight distribution (random_device_layer)."""
    import cupy as cp
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"]
    dev = dev.decode() if isinstance(dev, bytes) else dev
    rows = []
    for name in models:
        E, k, H, I = MODELS[name]
        ceilings.measure(f"before {name}")
        dw = random_device_layer(E, H, I, weights=weights)
        tk = None
        if peers:
            try:
                sys.path.insert(0, peers)
                from bench_triton_kernels import TritonKernelsLayer
                tk = TritonKernelsLayer(num_experts=E, hidden=H, intermediate=I, top_k=k, tk_dir=f"{peers}/tk")
            except Exception as exc:              # noqa: BLE001 - the peer is optional: say why it is missing
                print(f"# triton_kernels unavailable: {type(exc).__name__}: {exc}"[:300], flush=True)
        rng = np.random.default_rng(0)
        for T in tokens:
            inputs = peer_inputs(T, H, E)             # the peer's own inputs: both route the same way
            us, us_replay, touched, parts = time_ours(dw, T, k, rng, reps, config, breakdown, cold_l2=cold_l2,
                                                      inputs=inputs)
            source = "numpy" if inputs is None else "peer's (torch seed 1)"
            del inputs
            if parts and verbose:
                print(f"{name:13s} T={T:6d} kernels: " + ", ".join(f"{n} {v:.1f}" for n, v in parts.items()),
                      flush=True)
            tk_us = None
            if tk is not None:
                try:
                    tk_us = peer_cold_us(tk, T, reps) if cold_l2 else tk.time_us(T)
                except Exception as exc:          # noqa: BLE001
                    print(f"# triton_kernels failed at T={T}: {exc}"[:300], flush=True)
            from .moe import _default_config
            row = dict(model=name, tokens=T, config=config or _default_config(T * k, dw), ours_us=us, triton_us=tk_us,
                       ours_replay_us=us_replay, touched=touched,
                       bytes=touched * layer_bytes_per_expert(H, I) + 2 * T * H * 2,
                       flops=2.0 * T * k * (2 * I * H + H * I), device=dev, l2="cold" if cold_l2 else "warm",
                       weights=weights, inputs=source)
            row["tflops"] = row["flops"] / us / 1e6
            row["gbps"] = row["bytes"] / us / 1e3
            rows.append(row)
            if verbose:
                print(format_row(row), flush=True)
        del dw, tk
        cp.get_default_memory_pool().free_all_blocks()
        try:
            import torch
            torch.cuda.empty_cache()
        except Exception:                          # noqa: BLE001
            pass
    ceilings.measure("at the end")
    set_roofline(rows, ceilings)
    return rows


def set_roofline(rows, ceilings):
    """roofline_us = max(bytes / copy rate, flops / bf16 rate) against the run's ceilings, and our fraction."""
    bw, rate = ceilings.copy_GBps, ceilings.bf16_TFLOPs
    for r in rows:
        r["roofline_us"] = max(r["bytes"] / (bw * 1e9), r["flops"] / (rate * 1e12) if rate else 0.0) * 1e6
        r["frac_roofline"] = r["roofline_us"] / r["ours_us"]


def format_row(r):
    """One line of the table; the roofline columns once set_roofline has run."""
    ratio = f"{r['triton_us'] / r['ours_us']:6.2f}x" if r["triton_us"] else "   n/a"
    tks = f"{r['triton_us']:9.1f}" if r["triton_us"] else "      n/a"
    roof = (f"roofline {r['roofline_us']:8.1f} us ({100 * r['frac_roofline']:5.1f}%)  " if "roofline_us" in r
            else "")
    rr = r.get("ours_replay_us")
    replay = f" (one replay {rr:.1f})" if rr is not None else ""
    return (f"{r['model']:13s} T={r['tokens']:6d} ours {r['ours_us']:9.1f} us{replay}  triton_kernels {tks} us  "
            f"speedup {ratio}  {roof}{r['tflops']:6.1f} TFLOP/s  {r['gbps']:6.0f} GB/s  experts {r['touched']}  "
            f"[{r['config']}]")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt-oss-120b,gpt-oss-20b")
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--peers", default=".peers", help="folder with bench_triton_kernels.py and tk/ ('' = skip)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--config", default=None, help="force a kernel configuration (a key of cupy_kernels.moe.CONFIGS)")
    ap.add_argument("--sweep", default=None, help="comma list of configurations to time each (ours only; as the "
                    "table, in parentheses one replay per event pair)")
    ap.add_argument("--breakdown", action="store_true", help="also time each kernel of the forward")
    ap.add_argument("--pdl-ab", action="store_true",
                    help="with --sweep: time each configuration without and with programmatic dependent launch, "
                         "alternating twice (off, on, off, on)")
    ap.add_argument("--cold-l2", action="store_true",
                    help="evict L2 (write 4x its size) before every timed replay, ours and the peer's")
    ap.add_argument("--weights", default="gaussian", choices=("codes", "gaussian"),
                    help="our layer's weights: uniform random FP4 codes, or N(0, 0.02^2) quantized as the peer's "
                         "(random_device_layer)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import cupy as cp
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    ceilings = Ceilings()
    print(f"# device {dev}", flush=True)
    if a.cold_l2:
        print(f"# cold L2: {l2_scrub_bytes() >> 20} MB written before every timed replay (outside the timing)",
              flush=True)
    tokens = [int(t) for t in a.tokens.split(",")]
    rows = []
    if a.sweep:
        for name in a.models.split(","):
            E, k, H, I = MODELS[name]
            dw = random_device_layer(E, H, I, weights=a.weights)
            for T in tokens:
                res = []
                # the table's inputs; without torch each configuration draws from numpy's default_rng(T),
                # which is not the table's draw (layer_rows: one default_rng(0) stream over the token counts)
                inputs = peer_inputs(T, H, E)
                for cfg in a.sweep.split(","):
                    for pdl in ((False, True, False, True) if a.pdl_ab else (None,)):
                        us_c, us_r, _, _ = time_ours(dw, T, k, np.random.default_rng(T), a.reps, cfg, pdl=pdl,
                                                     cold_l2=a.cold_l2, inputs=inputs)
                        tag = "" if pdl is None else (" pdl" if pdl else " plain")
                        res.append(f"{cfg}{tag} {us_c:8.1f}" + ("" if us_r is None else f" ({us_r:.1f})"))
                        rows.append(dict(model=name, tokens=T, config=cfg, pdl=pdl, ours_us=us_c, ours_replay_us=us_r,
                                         weights=a.weights, device=dev))
                print(f"{name:13s} T={T:6d} sweep: " + " | ".join(res), flush=True)
            del dw
            cp.get_default_memory_pool().free_all_blocks()
    else:
        rows = layer_rows(a.models.split(","), tokens, reps=a.reps, peers=a.peers or None, ceilings=ceilings,
                          config=a.config, breakdown=a.breakdown, cold_l2=a.cold_l2, weights=a.weights)
        print(f"# the table, roofline against the run's ceilings: {ceilings.describe()}", flush=True)
        for r in rows:
            print(format_row(r), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(device=dev, copy_GBps=ceilings.copy_GBps if ceilings.samples else None,
                           bf16_TFLOPs=ceilings.bf16_TFLOPs if ceilings.samples else None,
                           ceiling_samples=ceilings.samples, rows=rows), f, indent=1)
    return rows


if __name__ == "__main__":
    main()
