"""``strided``: triton_kernels' ``StridedLayout`` -- no swizzle, the checkpoint bytes as they are.

vLLM uses it on SM90 with torch < 2.8.1 (and for ROCm values): ``_swizzle_mxfp4`` transposes
``w (E, N, K/2)`` and ``s (E, N, K/32)`` to put the quantised axis on dim 1 and wraps them in a
``StridedLayout``, whose ``swizzle_data`` returns its input. The transpose is a *view*: the memory is
untouched, only the kernel's strides change. Biases become float32. Gate/up stay interleaved.
"""
from __future__ import annotations

from ._core import TensorPlan, float32_bias_plans, identity_index_map, weight_scale_plans

NAME = "strided"


def plan(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    unchanged = lambda E, N, cols: identity_index_map((E, N, cols))
    return {**weight_scale_plans(NAME, E, H, I, unchanged, unchanged,
                                 "memory (E, N, K/2) unchanged; kernel strides see (E, K/2, N)",
                                 "memory (E, N, K/32) unchanged; kernel strides see (E, K/32, N)"),
            **float32_bias_plans(E, H, I)}
