"""mxfp4ref: a readable NumPy specification of MXFP4 and the MXFP4 Mixture-of-Experts layer.

Public names are re-exported here; each lives in a small module named in its docstring.
"""
from .e2m1 import E2M1_VALUES, decode_e2m1, encode_e2m1
from .e8m0 import decode_e8m0, encode_e8m0
from .packing import pack_fp4, unpack_fp4
from .rounding import Rounding
from .scales import ScaleRule
from .config import QuantConfig
from .quantize import MXFP4Tensor, quantize, dequantize
from .presets import PRESETS, Preset
from .mxfp8 import MXFP8Tensor, dequantize_mxfp8, quantize_mxfp8
from .moe.weights import MoEWeights
from .moe import (CONFIGS, MoEConfig, pad_hidden_states, pad_weights, padded_sizes, random_moe_weights,
                  read_checkpoint, shard_expert_parallel, shard_tensor_parallel, unpad_output,
                  write_checkpoint)
from .moe import (align_block_size, check_within_bound, error_bound, fused_moe, gelu_and_mul,
                  make_expert_map, route, silu_and_mul, swigluoai)
from .golden import Report, check
from .layouts import KernelWeights, from_kernel_layout, to_kernel_layout

__version__ = "0.1.0"
