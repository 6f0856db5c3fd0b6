"""``triton-blackwell``: what vLLM's ``_swizzle_mxfp4`` hands triton_kernels on SM100 (capability 10.x).

* ``BlackwellMXValueLayout``: no reordering; the contiguous (major) axis of the transposed weight --
  the packed K/2 bytes of each output row -- is zero-padded to a multiple of 128 bytes (256 FP4
  values, one TMA box).
* ``BlackwellMXScaleLayout``: the scales of the transposed (E, G, N) tensor are zero-padded to
  G -> multiple of 8, N -> multiple of 128, then each 128-row x 4-group tile is stored as 512
  contiguous bytes in the tcgen05 "128x4" order: (n, g) of a tile at (g % 4) + 4*((n % 128) // 32)
  + 16*(n % 32); tiles ordered (expert, n // 128, g // 4). Buffer shape (1, E*Np/128, Gp/4, 2, 256).

Biases float32, gate/up interleaved. Reproduces triton_kernels ``blackwell_value.py`` and
``blackwell_scale.py`` (checked byte for byte, see spec/30-layouts.md).
"""
from __future__ import annotations

import numpy as np

from ._core import TensorPlan, arange_padded, float32_bias_plans, round_up, weight_scale_plans

NAME = "triton-blackwell"


def value_index_map(E: int, N: int, Kb: int) -> np.ndarray:
    """(E, N, Kb) source bytes -> (E, N, Kbp) buffer, Kbp = Kb rounded up to 128 (zero tail)."""
    return arange_padded((E, N, Kb), (E, N, round_up(Kb, 128)))


def scale_index_map(E: int, N: int, G: int) -> np.ndarray:
    """(E, N, G) source bytes -> (1, E*Np/128, Gp/4, 2, 256) buffer (Np = N up to 128, Gp = G up to 8)."""
    Np, Gp = round_up(N, 128), round_up(G, 8)
    idx = arange_padded((E, N, G), (E, Np, Gp))
    idx = idx.reshape(E, Np // 128, 4, 32, Gp // 4, 4)     # (E, n1, n2, n3, g1, g2): n = n1*128 + n2*32 + n3
    idx = idx.transpose(0, 1, 4, 3, 2, 5)                  # (E, n1, g1, n3, n2, g2)
    return idx.reshape(1, E * Np // 128, Gp // 4, 2, 256)


def plan(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    return {**weight_scale_plans(NAME, E, H, I, value_index_map, scale_index_map,
                                 "kernel sees the transpose of the last two axes: (E, Kbp, N)",
                                 "(1, E*Np/128, Gp/4, 2, 256): 128-row x 4-group tiles of 512 bytes",
                                 scale_plan={"expert_axis": 1}),
            **float32_bias_plans(E, H, I)}
