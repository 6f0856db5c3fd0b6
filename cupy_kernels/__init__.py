"""cupy_kernels: CuPy RawKernels (kernels/*.cu, compiled by NVRTC) computing the spec's functions.

Same names and signatures as the NumPy specification (``mxfp4ref``), same bytes:

    quantize, dequantize, quantize_mxfp8       mxfp4ref.quantize / dequantize / quantize_mxfp8
    route, align_block_size                    mxfp4ref.moe.routing.route / moe.align.align_block_size
    route_and_align                            route, then align_block_size of its ids (count fused)
    fused_moe, moe_forward (+ to_device)       mxfp4ref.moe.forward.fused_moe (bf16 pipeline; cupy_kernels/moe.py)

Inputs are GPU arrays (cupy, CUDA torch tensors, anything with __cuda_array_interface__ or CUDA
DLPack); bfloat16 may be passed as uint16 bits with ``dtype="bfloat16"``. Importing this package
does not need CuPy; calling a kernel does. Benchmarks: ``python -m cupy_kernels.bench``.
"""
from .align import align_block_size
from .dequantize import dequantize
from .quantize import MXFP4Tensor, MXFP8Tensor, quantize, quantize_mxfp8
from .routing import route, route_and_align
from .moe import DeviceMoEWeights, MoEGraph, fused_moe, moe_forward, to_device

__all__ = ["quantize", "dequantize", "quantize_mxfp8", "route", "route_and_align", "align_block_size",
           "MXFP4Tensor", "MXFP8Tensor", "fused_moe", "moe_forward", "to_device", "DeviceMoEWeights",
           "MoEGraph"]
