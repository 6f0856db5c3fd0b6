"""Ours against triton_kernels at one point, alternating, with the card's power sampled during each timing:

    python3 tools/ab_power.py gpt-oss-20b 4096 hopper192,hopper192w [--rounds 2] [--seeds 1,2,3]
                              [--weights gaussian,codes] [--peers .peers]

Per round, in this order (reversed every other round): the peer on its inputs from each seed, then ours
for each weight distribution x configuration x seed, on those same inputs (bench_fused_moe.peer_inputs).
Each entry is timed as the table times it (sustained: ~2 s of forwards back to back). nvidia-smi samples
power, SM clock, temperature and the power-cap throttle reason every 50 ms in the background; each line
prints their means over the last 2.2 s of its timing and the energy per forward (mean power x time). Use
it where a point may be power-capped (BENCHMARKS.md v24-v25: 20b T=4096 on the H200). The v25 numbers of
that point came from this probe (the session copy; this cleaned-up one has not run on a GPU yet)."""
import argparse
import pathlib
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cupy_kernels.bench_fused_moe import MODELS, peer_inputs, random_device_layer, time_ours  # noqa: E402

QUERY = "timestamp,power.draw,clocks.sm,temperature.gpu,clocks_throttle_reasons.sw_power_cap"


class PowerSampler:
    """nvidia-smi every 50 ms in a background thread; ``stats(t0, t1)`` over the samples taken in [t0, t1]."""

    def __init__(self):
        self.samples = []                          # (time.time(), [timestamp, W, MHz, C, cap state])
        self.proc = subprocess.Popen(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits",
                                      "-lms", "50"], stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.samples.append((time.time(), [v.strip() for v in line.split(",")]))

    def stats(self, t0, t1):
        """(mean W, mean MHz, max C, fraction of samples with the power cap active), or None."""
        xs = [v for t, v in self.samples if t0 <= t <= t1]
        if not xs:
            return None
        return (float(np.mean([float(v[1]) for v in xs])), float(np.mean([float(v[2]) for v in xs])),
                max(float(v[3]) for v in xs), float(np.mean([v[4] == "Active" for v in xs])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=list(MODELS))
    ap.add_argument("tokens", type=int)
    ap.add_argument("configs", help="comma list of our configurations")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seeds", default="1,2,3", help="input seeds (the peer's time_us uses 1)")
    ap.add_argument("--weights", default="gaussian", help="comma list of weight distributions (random_device_layer)")
    ap.add_argument("--peers", default=".peers", help="folder with bench_triton_kernels.py and tk/")
    a = ap.parse_args()
    E, k, H, I = MODELS[a.model]
    T, seeds = a.tokens, [int(v) for v in a.seeds.split(",")]
    power = PowerSampler()
    layers = {d: random_device_layer(E, H, I, weights=d) for d in a.weights.split(",")}
    sys.path.insert(0, a.peers)
    from bench_triton_kernels import TritonKernelsLayer
    tk = TritonKernelsLayer(num_experts=E, hidden=H, intermediate=I, top_k=k, tk_dir=f"{a.peers}/tk")
    tk.time_us(T)                                  # compile
    entries = ([("peer", "", s) for s in seeds]
               + [(d, c, s) for d in layers for c in a.configs.split(",") for s in seeds])
    for r in range(a.rounds):
        for name, cfg, seed in (entries if r % 2 == 0 else entries[::-1]):
            if name == "peer":
                us = tk.time_us(T, seed=seed)
            else:
                us, _, _, _ = time_ours(layers[name], T, k, None, 20, cfg, inputs=peer_inputs(T, H, E, seed))
            t1 = time.time()
            st = power.stats(t1 - 2.2, t1)
            tail = ("no power samples" if st is None else
                    f"{st[0]:5.0f} W {st[1]:5.0f} MHz {st[2]:3.0f} C cap {100 * st[3]:3.0f}%  "
                    f"{us * 1e-3 * st[0]:6.1f} mJ/fwd")
            print(f"{a.model} T={T} round {r} {name:8s} {cfg:11s} seed {seed} {us:8.1f} us  {tail}", flush=True)
    power.proc.terminate()


if __name__ == "__main__":
    main()
