"""Random-byte MoE layers for helper C's tests (weights, padding, checkpoints, sharding).

Unlike random_moe_weights these are not quantized floats: every code and scale byte in a range is
equally likely, which is what structural tests (placement, slicing, round trips) want."""
import ml_dtypes
import numpy as np

from mxfp4ref.moe.weights import MoEWeights


def byte_layer(E, H, I, *, seed=0, gate_up="interleaved", bias=True, codes=(1, 256), scales=(100, 150)):
    """Weight bytes uniform in [codes), scale bytes uniform in [scales), biases bf16 values in float32."""
    rng = np.random.default_rng(seed)
    u8 = lambda lo_hi, *s: rng.integers(*lo_hi, s, dtype=np.uint8)
    b = lambda *s: rng.standard_normal(s).astype(ml_dtypes.bfloat16).astype(np.float32) if bias else None
    return MoEWeights(u8(codes, E, 2 * I, H // 2), u8(scales, E, 2 * I, H // 32), u8(codes, E, H, I // 2),
                      u8(scales, E, H, I // 32), b(E, 2 * I), b(E, H), gate_up=gate_up)
