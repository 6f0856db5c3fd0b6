"""The MXFP4 Mixture-of-Experts layer as vLLM runs it for gpt-oss (see spec/10..13).

Modules: weights (MoEWeights), configs (model shapes), padding (backend padding), checkpoint
(safetensors read/write), sharding (TP/EP slices); routing, align, activations, forward, error_bound.
"""
from .weights import GateUpLayout, MoEWeights, dequantize_rows, gate_up_indices, split_gate_up
