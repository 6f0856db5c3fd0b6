"""The MXFP4 Mixture-of-Experts layer as vLLM runs it for gpt-oss (see spec/10..13).

Modules: weights (MoEWeights), configs (model shapes), padding (backend padding), checkpoint
(safetensors read/write), sharding (TP/EP slices); routing, align, activations, forward, error_bound.
"""
from .weights import GateUpLayout, MoEWeights, dequantize_rows, gate_up_indices, split_gate_up
from .configs import CONFIGS, MoEConfig, get_config
from .random_weights import random_moe_weights
from .padding import (Mxfp4Backend, pad_for_backend, pad_hidden_states, pad_weights, padded_sizes,
                      padding_multiples, unpad_output)
from .checkpoint import (CheckpointNames, from_checkpoint_tensors, read_checkpoint, tensor_names,
                         to_checkpoint_tensors, write_checkpoint)
from .sharding import shard_expert_parallel, shard_tensor_parallel, tp_channel_range
from .routing import Order, Placement, Scoring, make_expert_map, route
from .align import align_block_size
from .activations import Activation, gelu_and_mul, silu_and_mul, swigluoai
from .forward import MoEIntermediates, Pipeline, fused_moe
from .error_bound import BoundCheck, KernelModel, check_within_bound, error_bound
