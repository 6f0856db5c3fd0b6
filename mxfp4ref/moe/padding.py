"""Backend padding of the MXFP4 MoE layer, as vLLM 0.33.0 does it.

Each vLLM MXFP4 MoE backend needs the hidden size H and the per-rank intermediate size I rounded up
to its kernel's tile multiples (``mxfp4_round_up_hidden_size_and_intermediate_size`` in
``vllm/model_executor/layers/fused_moe/oracle/mxfp4.py``). The layer's tensors are allocated at the
padded sizes with zeros and the checkpoint data is copied into the top-left corner, so every padded
weight byte is 0x00 (two +0.0 codes), every padded scale byte 0x00 and every padded bias 0.0. The
input is padded with zeros along H and the output sliced back to H. Padded channels therefore add
exact zeros: the padded layer gives exactly the unpadded output. See spec/10-moe-weights-and-padding.md.
"""
from __future__ import annotations

import enum

import numpy as np

from .._checks import check_choice
from .weights import GateUpLayout, MoEWeights


class Mxfp4Backend(str, enum.Enum):
    """vLLM 0.33.0's ``Mxfp4MoeBackend`` members, by the names used here."""

    TRITON = "triton"                                    # OAI triton_kernels matmul_ogs (H100/H200 default)
    TRITON_UNFUSED = "triton-unfused"                    # same kernels, activation outside the GEMM
    MARLIN = "marlin"                                    # Marlin W4A16 GEMM (SM75+, SM12x default)
    BATCHED_MARLIN = "batched-marlin"                    # Marlin, batched activation format
    FLASHINFER_TRTLLM_MXFP4_BF16 = "flashinfer-trtllm-mxfp4-bf16"    # trtllm-gen (B200/GB200 default)
    FLASHINFER_TRTLLM_MXFP4_MXFP8 = "flashinfer-trtllm-mxfp4-mxfp8"  # trtllm-gen, MXFP8 activations
    FLASHINFER_CUTLASS_MXFP4_BF16 = "flashinfer-cutlass-mxfp4-bf16"  # FlashInfer CUTLASS (SM90)
    FLASHINFER_CUTLASS_MXFP4_MXFP8 = "flashinfer-cutlass-mxfp4-mxfp8"  # FlashInfer CUTLASS (SM100)
    CUTLASS_MXFP4_MXFP4 = "cutlass-mxfp4-mxfp4"          # vLLM's own CUTLASS W4A4
    DEEPGEMM_MXFP4 = "deepgemm-mxfp4"                    # DeepGEMM FP8 x FP4 (SM100+)
    B12X_MXFP4_BF16 = "b12x-mxfp4-bf16"                  # b12x: plans for the exact model sizes
    B12X_MXFP4_MXFP8 = "b12x-mxfp4-mxfp8"
    FLASHINFER_MOE_EP_CUTEDSL = "flashinfer-moe-ep-cutedsl"        # MoE-EP megakernel: validates itself
    FLASHINFER_MOE_EP_DEEP_GEMM = "flashinfer-moe-ep-deep-gemm"
    AITER_MXFP4_BF16 = "aiter-mxfp4-bf16"                # ROCm AITER CK W4A16 (gfx950)
    AITER_TRITON_MXFP4_BF16 = "aiter-triton-mxfp4-bf16"  # ROCm AITER Triton W4A16
    AITER_MXFP4_FP8 = "aiter-mxfp4-fp8"                  # ROCm W4A8
    AITER_MXFP4_MXFP4 = "aiter-mxfp4-mxfp4"              # ROCm CK W4A4
    AITER_TRITON_MXFP4_MXFP4 = "aiter-triton-mxfp4-mxfp4"  # ROCm Triton/Gluon W4A4 (gfx1250)
    XPU = "xpu"                                          # Intel XPU (IPEX)
    CPU = "cpu"                                          # CPU AMX kernel (BLOCK_N = 32)
    EMULATION = "emulation"                              # dequantize + unquantized MoE (needs amd-quark)
    HUMMING = "humming"
    NONE = "none"                                        # no kernel: weights left as loaded


# Short names used in the issue and in vLLM's --moe-backend, mapped to the member they pad like.
ALIASES = {
    "flashinfer-trtllm-bf16": Mxfp4Backend.FLASHINFER_TRTLLM_MXFP4_BF16,
    "flashinfer-trtllm-mxfp8": Mxfp4Backend.FLASHINFER_TRTLLM_MXFP4_MXFP8,
    "flashinfer-cutlass": Mxfp4Backend.FLASHINFER_CUTLASS_MXFP4_BF16,
    "flashinfer-cutlass-mxfp8": Mxfp4Backend.FLASHINFER_CUTLASS_MXFP4_MXFP8,
    "rocm-aiter": Mxfp4Backend.AITER_MXFP4_BF16,
    "aiter": Mxfp4Backend.AITER_MXFP4_BF16,
}

PLATFORMS = ("cuda", "rocm", "xpu", "cpu")
_ROCM_ONLY = {Mxfp4Backend.AITER_MXFP4_BF16, Mxfp4Backend.AITER_TRITON_MXFP4_BF16,
              Mxfp4Backend.AITER_MXFP4_FP8, Mxfp4Backend.AITER_MXFP4_MXFP4,
              Mxfp4Backend.AITER_TRITON_MXFP4_MXFP4}


def resolve_backend(backend) -> Mxfp4Backend:
    """A backend name (member value, alias or member) -> Mxfp4Backend; ValueError listing names."""
    if isinstance(backend, Mxfp4Backend):
        return backend
    if isinstance(backend, str) and backend in ALIASES:
        return ALIASES[backend]
    names = [m.value for m in Mxfp4Backend] + list(ALIASES)
    check_choice(backend, "backend", names)
    return Mxfp4Backend(backend)


def default_platform(backend) -> str:
    """The platform a backend runs on when none is given: AITER -> rocm, xpu, cpu, else cuda."""
    b = resolve_backend(backend)
    if b in _ROCM_ONLY:
        return "rocm"
    return {Mxfp4Backend.XPU: "xpu", Mxfp4Backend.CPU: "cpu"}.get(b, "cuda")


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padding_multiples(backend, *, platform: str | None = None, activation: str = "swigluoai",
                      cdna_version: int = 4) -> tuple[int, int]:
    """(hidden multiple, intermediate multiple) of a backend; 1 means "left as is".

    Branches in vLLM 0.33.0's order (the first that matches wins). ``platform`` matters for Marlin
    (XPU: hidden 128) and for every backend not matched before the ROCm branch; ``activation`` and
    ``cdna_version`` only for ROCm with silu/situ activations (gpt-oss uses swigluoai)."""
    b = resolve_backend(backend)
    platform = default_platform(b) if platform is None else platform
    check_choice(platform, "platform", PLATFORMS)
    B = Mxfp4Backend
    if b in (B.FLASHINFER_MOE_EP_CUTEDSL, B.FLASHINFER_MOE_EP_DEEP_GEMM, B.B12X_MXFP4_BF16,
             B.B12X_MXFP4_MXFP8):
        return 1, 1                                     # kernel takes the model's sizes
    if b is B.EMULATION:
        return 32, 32                                   # only the MX block (no floor-truncated scales)
    if b in (B.DEEPGEMM_MXFP4, B.CUTLASS_MXFP4_MXFP4):
        return 128, 128                                 # 128x128 tiles / scale tiles
    if b in (B.MARLIN, B.BATCHED_MARLIN):
        return (128 if platform == "xpu" else 256), 128
    if b in (B.FLASHINFER_TRTLLM_MXFP4_BF16, B.FLASHINFER_TRTLLM_MXFP4_MXFP8):
        return 256, 128
    if b in (B.FLASHINFER_CUTLASS_MXFP4_BF16, B.FLASHINFER_CUTLASS_MXFP4_MXFP8):
        return 128, 128
    if platform == "rocm":
        silu_like = activation in ("silu", "situ")
        aiter_uses_128 = b is B.AITER_MXFP4_BF16
        triton_uses_128 = b is B.TRITON_UNFUSED and cdna_version != 4   # matmul_ogs block_k 128 pre-CDNA4
        w4a4 = b is B.AITER_MXFP4_MXFP4
        i_mult = 128 if w4a4 or (silu_like and (aiter_uses_128 or triton_uses_128)) else 256
        return (256 if w4a4 else i_mult), i_mult
    if b is B.CPU:
        return 32, 32                                   # AMX kernel BLOCK_N = 32
    return 1, 64                                        # TRITON/TRITON_UNFUSED on CUDA, XPU, HUMMING, NONE


def padded_sizes(backend, hidden_size: int, intermediate_size: int, *, platform: str | None = None,
                 activation: str = "swigluoai", cdna_version: int = 4) -> tuple[int, int]:
    """(hidden, intermediate) after ``backend``'s padding. ``intermediate_size`` is per rank (I // tp)."""
    for name, v in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    h_mult, i_mult = padding_multiples(backend, platform=platform, activation=activation,
                                       cdna_version=cdna_version)
    return round_up(int(hidden_size), h_mult), round_up(int(intermediate_size), i_mult)


def _corner(a: np.ndarray | None, shape: tuple) -> np.ndarray | None:
    """Zeros of ``shape`` with ``a`` copied into the top-left corner (vLLM's weight_loader)."""
    if a is None:
        return None
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def pad_weights(weights: MoEWeights, hidden_size: int, intermediate_size: int) -> MoEWeights:
    """The layer at padded sizes (H', I'), zero-filled outside the data.

    Interleaved layout: the 2I gate/up rows go to rows 0..2I-1 of 2I' (the pairs stay pairs).
    Concatenated layout: gate to rows 0..I-1, up to rows I'..I'+I-1 (vLLM loads w1 and w3 shards
    into their own halves). H, I/32 columns likewise top-left."""
    if not isinstance(weights, MoEWeights):
        raise TypeError(f"weights: expected MoEWeights, got {type(weights).__name__}")
    E, H, I = weights.num_experts, weights.hidden_size, weights.intermediate_size
    for name, new, old in (("hidden_size", hidden_size, H), ("intermediate_size", intermediate_size, I)):
        if not isinstance(new, (int, np.integer)) or new < old or new % 32:
            raise ValueError(f"{name}: expected a multiple of 32 that is >= {old}, got {new!r}")
    Hp, Ip = int(hidden_size), int(intermediate_size)

    def w13_rows(a, shape):                              # (E, 2I, ...) -> (E, 2I', ...)
        if a is None or weights.gate_up is GateUpLayout.INTERLEAVED:
            return _corner(a, shape)
        return np.concatenate([_corner(a[:, :I], (E, Ip) + shape[2:]),
                               _corner(a[:, I:], (E, Ip) + shape[2:])], axis=1)

    return MoEWeights(
        w13_weight=w13_rows(weights.w13_weight, (E, 2 * Ip, Hp // 2)),
        w13_weight_scale=w13_rows(weights.w13_weight_scale, (E, 2 * Ip, Hp // 32)),
        w2_weight=_corner(weights.w2_weight, (E, Hp, Ip // 2)),
        w2_weight_scale=_corner(weights.w2_weight_scale, (E, Hp, Ip // 32)),
        w13_bias=w13_rows(weights.w13_bias, (E, 2 * Ip)),
        w2_bias=_corner(weights.w2_bias, (E, Hp)),
        gate_up=weights.gate_up,
    )


def pad_for_backend(weights: MoEWeights, backend, **kwargs) -> MoEWeights:
    """``pad_weights`` at ``padded_sizes(backend, H, I, **kwargs)``."""
    return pad_weights(weights, *padded_sizes(backend, weights.hidden_size, weights.intermediate_size,
                                              **kwargs))


def pad_hidden_states(x: np.ndarray, hidden_size: int) -> np.ndarray:
    """(..., H) -> (..., hidden_size), zeros appended along the last axis (vLLM's runner F.pad)."""
    x = np.asarray(x)
    if x.ndim < 1 or hidden_size < x.shape[-1]:
        raise ValueError(f"hidden_size: expected >= x.shape[-1] = {x.shape[-1] if x.ndim else None}, "
                         f"got {hidden_size}")
    out = np.zeros(x.shape[:-1] + (int(hidden_size),), x.dtype)
    out[..., :x.shape[-1]] = x
    return out


def unpad_output(y: np.ndarray, hidden_size: int) -> np.ndarray:
    """(..., H') -> (..., hidden_size): the model's columns (vLLM slices ``[..., :hidden_size]``)."""
    y = np.asarray(y)
    if y.ndim < 1 or not 0 < hidden_size <= y.shape[-1]:
        raise ValueError(f"hidden_size: expected 1..{y.shape[-1] if y.ndim else 0} (y.shape[-1]), "
                         f"got {hidden_size}")
    return y[..., :hidden_size]
