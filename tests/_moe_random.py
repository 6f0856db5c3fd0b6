"""Random MoEWeights for helper D's tests (random FP4 codes, scale bytes chosen so h is O(1..10))."""
import math

import numpy as np

from mxfp4ref.moe.weights import MoEWeights


def random_weights(E, H, I, *, seed=0, bias=True, gate_up="interleaved", spread=2):
    rng = np.random.default_rng(seed)

    def scales(rows, k):
        base = 127 - 1 - round(math.log2(math.sqrt(k)))        # rms(E2M1 codes) ~ 3 -> |dot| ~ 3
        return (base + rng.integers(-spread, spread + 1, size=(E, rows, k // 32))).astype(np.uint8)

    w13 = rng.integers(0, 256, size=(E, 2 * I, H // 2), dtype=np.uint8)
    w2 = rng.integers(0, 256, size=(E, H, I // 2), dtype=np.uint8)
    b13 = rng.normal(0, 1.0, size=(E, 2 * I)).astype(np.float32) if bias else None
    b2 = rng.normal(0, 1.0, size=(E, H)).astype(np.float32) if bias else None
    return MoEWeights(w13, scales(2 * I, H), w2, scales(H, I), b13, b2, gate_up)
