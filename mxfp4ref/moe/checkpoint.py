"""Read and write gpt-oss MoE expert tensors (safetensors) as MoEWeights.

A gpt-oss checkpoint stores each layer's experts as MXFP4 "blocks" of 16 bytes (32 FP4 codes, low
nibble first) with one E8M0 scale byte per block, plus bf16 biases. Two naming schemes exist:

    CheckpointNames.ORIGINAL  (openai/gpt-oss ``original/``; gpt_oss/torch/weights.py PARAM_NAME_MAP)
        block.{n}.mlp.mlp1_weight.blocks  (E, 2I, H/32, 16) uint8    block.{n}.mlp.mlp1_bias (E, 2I)
        block.{n}.mlp.mlp1_weight.scales  (E, 2I, H/32)     uint8
        block.{n}.mlp.mlp2_weight.blocks  (E, H, I/32, 16)  uint8    block.{n}.mlp.mlp2_bias (E, H)
        block.{n}.mlp.mlp2_weight.scales  (E, H, I/32)      uint8
    CheckpointNames.HF  (Hugging Face ``openai/gpt-oss-*`` root; transformers'
        convert_gpt_oss_weights_to_hf.py with mxfp4=True; vLLM's GptOssForCausalLM.hf_to_vllm_mapper)
        model.layers.{n}.mlp.experts.gate_up_proj_blocks / _scales / gate_up_proj_bias
        model.layers.{n}.mlp.experts.down_proj_blocks / _scales / down_proj_bias   (same shapes)

Blocks (E, R, K/32, 16) and vLLM's packed weight (E, R, K/2) are the same bytes in the same order
(a reshape). The mlp1/gate_up rows are interleaved (row 2j gate, 2j+1 up). See
spec/13-checkpoints-and-sharding.md.
"""
from __future__ import annotations

import enum
import os

import ml_dtypes
import numpy as np

from .._checks import check_choice
from .weights import MoEWeights

BYTES_PER_BLOCK = 16          # 32 FP4 codes


class CheckpointNames(str, enum.Enum):
    ORIGINAL = "original"     # openai/gpt-oss reference checkpoint (``original/`` folder)
    HF = "hf"                 # Hugging Face transformers / vLLM checkpoint (repository root)


def tensor_names(layer: int, names="hf") -> dict[str, str]:
    """Checkpoint tensor names of one layer, keyed by MoEWeights field (blocks under the weight key)."""
    check_choice(names, "names", [m.value for m in CheckpointNames])
    if not isinstance(layer, (int, np.integer)) or layer < 0:
        raise ValueError(f"layer: expected a non-negative int, got {layer!r}")
    if CheckpointNames(names) is CheckpointNames.ORIGINAL:
        p = f"block.{layer}.mlp."
        return {"w13_weight": p + "mlp1_weight.blocks", "w13_weight_scale": p + "mlp1_weight.scales",
                "w13_bias": p + "mlp1_bias", "w2_weight": p + "mlp2_weight.blocks",
                "w2_weight_scale": p + "mlp2_weight.scales", "w2_bias": p + "mlp2_bias"}
    p = f"model.layers.{layer}.mlp.experts."
    return {"w13_weight": p + "gate_up_proj_blocks", "w13_weight_scale": p + "gate_up_proj_scales",
            "w13_bias": p + "gate_up_proj_bias", "w2_weight": p + "down_proj_blocks",
            "w2_weight_scale": p + "down_proj_scales", "w2_bias": p + "down_proj_bias"}


def to_checkpoint_tensors(weights: MoEWeights, layer: int = 0, *, names="hf",
                          bias_dtype: str = "bfloat16") -> dict[str, np.ndarray]:
    """MoEWeights -> {checkpoint name: array}; rows interleaved, biases as ``bias_dtype``.

    bias_dtype "bfloat16" (as released) raises ValueError if a bias is not exactly a bf16 value, so
    that writing never rounds silently; "float32" stores them as they are."""
    if not isinstance(weights, MoEWeights):
        raise TypeError(f"weights: expected MoEWeights, got {type(weights).__name__}")
    check_choice(bias_dtype, "bias_dtype", ["bfloat16", "float32"])
    w = weights.with_gate_up("interleaved")              # the checkpoint's layout
    E = w.num_experts
    out = {}
    for field, name in tensor_names(layer, names).items():
        a = getattr(w, field)
        if a is None:
            continue
        if field in ("w13_weight", "w2_weight"):          # (E, R, K/2) -> (E, R, K/32, 16)
            a = a.reshape(E, a.shape[1], -1, BYTES_PER_BLOCK)
        elif field.endswith("bias") and bias_dtype == "bfloat16":
            b = a.astype(ml_dtypes.bfloat16)
            if not np.array_equal(b.astype(np.float32), a):
                raise ValueError(f"{field}: not exactly representable in bfloat16; "
                                 f"pass bias_dtype='float32' to store it unrounded")
            a = b
        out[name] = np.ascontiguousarray(a)
    return out


def _bias_to_float32(a: np.ndarray, name: str) -> np.ndarray:
    if a.dtype not in (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16), np.dtype(np.float32)):
        raise TypeError(f"{name}: expected a bfloat16, float16 or float32 bias, got {a.dtype}")
    return np.ascontiguousarray(a.astype(np.float32))     # exact for all three


def from_checkpoint_tensors(tensors: dict, layer: int = 0, *, names=None,
                            gate_up: str = "interleaved") -> MoEWeights:
    """{checkpoint name: array} -> MoEWeights. ``names=None`` detects the scheme from the keys."""
    if names is None:
        found = [n for n in CheckpointNames if tensor_names(layer, n)["w13_weight"] in tensors]
        if len(found) != 1:
            raise ValueError(f"tensors: expected the layer-{layer} expert tensors under exactly one naming "
                             f"scheme ('hf' or 'original'), found {[n.value for n in found]}")
        names = found[0]
    keys = tensor_names(layer, names)
    fields = {}
    for field, name in keys.items():
        if name not in tensors:
            if field.endswith("bias"):
                fields[field] = None
                continue
            raise ValueError(f"tensors: missing {name!r} (MoEWeights.{field})")
        a = np.asarray(tensors[name])
        if field in ("w13_weight", "w2_weight"):
            if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != BYTES_PER_BLOCK:
                raise ValueError(f"{name}: expected uint8 blocks (E, R, K/32, 16), got {a.dtype} {a.shape}")
            a = a.reshape(a.shape[0], a.shape[1], -1)
        elif field.endswith("bias"):
            a = _bias_to_float32(a, name)
        fields[field] = np.ascontiguousarray(a)
    return MoEWeights(**fields, gate_up="interleaved").with_gate_up(gate_up)


def write_checkpoint(path, layers, *, names="hf", bias_dtype: str = "bfloat16") -> None:
    """Write one safetensors file holding ``layers`` ({layer index: MoEWeights} or one MoEWeights = layer 0)."""
    from safetensors.numpy import save_file

    if isinstance(layers, MoEWeights):
        layers = {0: layers}
    tensors = {}
    for n, w in layers.items():
        tensors.update(to_checkpoint_tensors(w, n, names=names, bias_dtype=bias_dtype))
    save_file(tensors, os.fspath(path), metadata={"format": "pt"})


def _files(path) -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise ValueError(f"path: no .safetensors files in directory {path!r}")
        return files
    if not os.path.isfile(path):
        raise ValueError(f"path: {path!r} is neither a .safetensors file nor a directory")
    return [path]


def read_checkpoint(path, layer: int = 0, *, names=None, gate_up: str = "interleaved") -> MoEWeights:
    """Read one layer's experts from a safetensors file or a directory of them (only those tensors)."""
    from safetensors import safe_open

    wanted = set()
    for n in ([names] if names is not None else list(CheckpointNames)):
        wanted |= set(tensor_names(layer, n).values())
    tensors = {}
    for f in _files(path):
        with safe_open(f, framework="numpy") as handle:
            for key in wanted.intersection(handle.keys()):
                tensors[key] = handle.get_tensor(key)
    return from_checkpoint_tensors(tensors, layer, names=names, gate_up=gate_up)


read_moe_weights = read_checkpoint      # the name mxfp4ref.golden uses
