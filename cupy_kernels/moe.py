"""The fused MXFP4 MoE forward on the GPU: ``fused_moe`` and ``moe_forward`` (kernels in kernels/moe_fused.cu).

Same names, arguments and numerics as the spec (``mxfp4ref.moe.forward.fused_moe``, ``pipeline="bf16"``):
bf16 hidden states, MXFP4 weights dequantized in registers to bf16 (exactly), fp32 accumulation on tensor
cores (``mma.sync`` m16n8k16; ``wgmma`` on sm_90 above 16 tokens per expert; at 1-2 tokens the ``direct``
kernels feed the codes as bf16 values times 2**-126 and apply each E8M0 scale, a power of two, to its
32-block's fp32 sum: the same exact products, summed in an order the error bound allows), fp32 bias and activation
epilogue, bf16 intermediate, gamma = bf16(router weight), a bf16 row per (token, slot), the fp32 sum of a
token's rows in slot order, bf16 output. No floating-point atomics: the same inputs give the same bits on
every run.

Arrays: bf16 tensors are CuPy ``uint16`` arrays holding bfloat16 bit patterns (numpy ``ml_dtypes.bfloat16``
arrays are accepted and uploaded); the output is a CuPy ``uint16`` (T, H) array of bf16 bits.

Weights: ``to_device(MoEWeights)`` converts the spec's (vLLM's) layout once into the kernel layout below;
the forward then reads each weight byte with 16-byte loads and converts FP4 -> bf16 with bit operations.

Kernel layout (K = reduction axis, Kp = K rounded up to 128, R = kernel rows):
  * weights ``uint32 [E, R/16, Kp/128, 16 (row), 4 (t), 4 (b)]``: word (row 16*G + row, sb, t, b) holds
    the 8 codes of k = 128*sb + 32*b + 8*t + j (j = 0..7), their bits placed by code_bit_positions().
    A 16-row group's superblock (what one warp reads per step) is 1 KB of contiguous memory: streaming
    64-byte pieces of row-major rows instead reached only ~65% of the DRAM rate (BENCHMARKS.md). From
    vLLM's ``[E, R, K/2]`` bytes: view each 64-byte run as 16 words indexed (b, t), transpose to (t, b),
    place the code bits of each word, and move the superblock axis in front of the row-in-group axis.
    Padding codes are 0.
  * scales ``uint32 [E, Kp/128, R]``: the 4 E8M0 bytes of (superblock, row), byte b = 32-block b
    (vLLM's bytes, rows reordered, padded with 127 = 1.0, superblock-major so rows are contiguous).
  * bias ``float32 [E, R]`` (zeros when the layer has none).
  * w13: R = 2*Ip (Ip = I rounded up to 128); 16-row tile i = gate rows of channels 8i..8i+7, then the
    up rows of the same channels, whatever the source ``gate_up`` layout ("interleaved" or "concatenated").
  * w2: R = H rounded up to 256 (extra rows zero, never read).
The Hopper configs also need the activations with k permuted inside each 32-block (spec/30-layouts.md
section 30.9): x is permuted by a small kernel per call, the intermediate is written permuted.

Launches: on sm_90 and later every kernel of the forward after the first is a programmatic dependent
launch (``_launch.py``; not in the Hopper configurations, where it measured no gain): it may start while
the kernel before it finishes, and waits for that kernel's results on the device, so the launch gaps
inside a CUDA graph shrink (1 token: 36 -> 32 us, H200).
``pdl=False`` (or MXFP4REF_PDL=0) gives plain launches; the results are the same bits either way (tested).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    import cupy as cp
except ImportError:          # CPU-only machines: the module imports, calls raise
    cp = None

from ._launch import launch, pdl_available

ACTIVATIONS = {"swigluoai": 0, "silu": 1, "gelu": 2}
_KERNEL_FILE = "moe_fused.cu"

def _tiled_smem(rows, tokens, stages):
    return stages * (tokens * 320 + rows * 68)


def _stream_smem(kp):
    return 8 * (kp + 32) * 2


def direct_smem(kblocks):
    """Dynamic shared memory of moe_fused.cu's direct kernels for K = 32 * kblocks: the activation row (64
    bytes a 32-block), the superblock slots (2 KB of weights + 128 bytes of scales per 4 blocks), the 8
    warps' split-K sums (128 bytes a warp), then 256 bytes of zeros (the mma's unused B columns).
    K = 2880: 57088 bytes, so 4 blocks fit an SM (direct4)."""
    return 64 * kblocks + -(-kblocks // 4) * 2176 + 8 * 128 + 256


def _hopper_smem(warpgroups, tokens, stages):
    """HopperShape<NWG, BN, ST>::SMEM of moe_fused.cu: stages of {x slabs, weight rows, scales} rounded
    to 1 KB, the tile's row offsets (for whole, even counts of copy rounds), slots and gammas, and 1 KB
    of alignment slack."""
    rows = 64 * warpgroups
    stage = -(-(tokens * 256 + rows * 64 + rows * 4) // 1024) * 1024
    per_round = 8 * warpgroups                              # XROWS: x rows per copy round
    rounds = -(-tokens // per_round)
    rounds += rounds % 2                                    # XJ: copy rounds per thread, an even number
    return stages * stage + rounds * per_round * 4 + tokens * 8 + 1024


# Kernels with tile widths (moe_fused.cu DEFINE_GEMM_HOPPER_WIDTHS): (warpgroups, narrowest, widest) of
# the widths they compile, multiples of 32 tokens. hopper192w gets tiles of 129-192 tokens only (its small
# tiles run in hopper128w), so it compiles 160 and 192.
TILE_WIDTHS = {"hopper192w": (3, 160, 192), "hopper128w": (4, 32, 128)}


def _widths_smem(name):
    """Shared memory of a kernel with tile widths (moe_fused.cu moe_gemm_hopper_widths): the largest of its
    bodies' (3 stages at 160 and 192 tokens, 4 below)."""
    warpgroups, narrowest, widest = TILE_WIDTHS[name]
    return max(_hopper_smem(warpgroups, n, 3 if n > 128 else 4) for n in range(narrowest, widest + 1, 32))


# name: (block rows, block tokens BT, threads, dynamic shared memory bytes or a function of Kp (of K / 32
# for the direct configs)); must match
# the DEFINE_GEMM* lines of moe_fused.cu. choose_config picks direct or decode / stream16, then hopper128w /
# hopper192w / hopper192 on sm_90 (tiled32 / tiled256 elsewhere); the others are kept as measured
# alternatives (BENCHMARKS.md) and are tested like the rest.
CONFIGS = {
    # weights streamed from HBM straight into registers (16-byte loads), FP4 -> bf16 in registers
    "stream": (64, 8, 128, _stream_smem),     # 4 warps x 16 rows, whole K, 4 superblocks in flight; x in smem
    "streamw": (128, 8, 256, _stream_smem),   # 8 warps x 16 rows (more warps per SM)
    # 16-token tiles: each dequantized weight feeds 1 or 2 mma; activations through a 3-stage cp.async ring
    "stream16": (128, 16, 256, 3 * 16 * 320),   # 8 warps x 16 rows, 3 blocks per SM
    "decode": (32, 8, 128, 0),         # MT=2, NT=1, 4 warps split K (reduced through smem)
    # no sort: one block row per slot; each warp's whole K range of weights copied to smem at once
    "direct": (32, 1, 256, direct_smem),    # 8 warps split K, <= 3 superblocks each; 3 blocks per SM
    "direct4": (32, 1, 256, direct_smem),   # the same kernel at 64 registers, 4 blocks per SM (only on request)
    "mid": (32, 32, 128, 0),           # MT=2, NT=4, 4 warps split K
    "large": (128, 64, 128, 0),        # MT=2, NT=8, 4 warps split rows, activations from L1/L2
    # activations, weights and scales staged through shared memory by cp.async, 8 warps
    "tiled": (128, 128, 256, _tiled_smem(128, 128, 4)),
    "tiled256": (256, 128, 256, _tiled_smem(256, 128, 3)),
    "tiled64": (128, 64, 256, _tiled_smem(128, 64, 4)),
    "tiled32": (128, 32, 256, _tiled_smem(128, 32, 4)),
    # Hopper only (sm_90a): wgmma with the dequantized weights as the register operand and the tile's
    # activations (k permuted per 32-block, see moe_fused.cu) in 128-byte-swizzled shared memory
    "hopper": (256, 128, 512, _hopper_smem(4, 128, 4)),
    "hopper64": (256, 64, 512, _hopper_smem(4, 64, 4)),
    "hopper192": (192, 192, 384, _hopper_smem(3, 192, 3)),    # 3 warpgroups x m64n192: many tokens per expert
    # with tile widths: each tile at the narrowest multiple of 32 tokens that holds it (KERNEL_WIDTHS)
    "hopper192w": (192, 192, 384, _widths_smem("hopper192w")),
    "hopper128w": (256, 128, 512, _widths_smem("hopper128w")),
}
HOPPER_CONFIGS = frozenset({"hopper", "hopper64", "hopper192", "hopper192w", "hopper128w"})
DIRECT_CONFIGS = frozenset({"direct", "direct4"})
# `direct` keeps all of a warp's K range in flight at once: 8 warps x 3 superblocks of 128. The kernel has
# no path for longer K (it traps), so the host never sends it there.
DIRECT_MAX_K = 8 * 3 * 128
# From this many slots (under PDL) the direct GEMM2 waits only for its own slot's GEMM1 blocks (per-slot
# counters, moe_fused.cu direct_wait_slot), not for all of GEMM1: GEMM1 runs in waves (1.8 at 4 slots,
# 3.6 at 8), and the GEMM2 blocks of the slots of earlier waves start early, without the ~1 us between
# GEMM1's last block and the grid wait's return. H200, graph replays of moe_forward (us), grid wait /
# counters, same call: 120b T=2 47.9-48.5 / 45.6-46.0; T=1 (4 slots; two calls) 27.7-28.2 / 27.2-27.7,
# 20b T=1 27.3-28.0 / 27.2-27.8, the ids path equal (BENCHMARKS v17; before v17's epilogue the counters
# were slower at T=1: 28.3-28.6 / 28.7-28.9).
DIRECT_HANDOFF_MIN_SLOTS = 4
# moe_forward routes with route.cu's mx_route_lean where it applies (routing.lean_applies: softmax with
# renormalization, top_k <= 8, <= 256 tokens): the one-warp kernel's bits with only the code that path runs.
# H200, graph replays of moe_forward, same process, mx_route / mx_route_lean (us): 120b T=1 26.9 / 26.2,
# T=2 42.9 / 42.4, 20b T=1 26.8 / 26.5, T=2 54.5 / 54.0 (BENCHMARKS v19).
LEAN_ROUTING = True
# An expert's last tile of <= 64 tokens runs in the 64-token kernel (moe_sort's small-tile list), so the
# 128-token kernels do no work on padding columns past 64; in hopper192 its last tile of <= 128 tokens
# runs in hopper (and 193..256 tokens as two 128-token tiles: moe_sort), in hopper192w in hopper128w.
SMALL_TILES = {"hopper": "hopper64", "hopper192": "hopper", "hopper192w": "hopper128w"}
# The `widths` argument of those kernels: the widths a tile may run at, bit j = 32 * (j + 1) tokens (the
# widest always; bits outside the compiled widths are ignored). Every compiled width; a probe may narrow it
# (tools/tile_probe.py).
KERNEL_WIDTHS = {name: sum(1 << (w // 32 - 1) for w in range(lo, hi + 1, 32))
                 for name, (_, lo, hi) in TILE_WIDTHS.items()}


def _require_cupy():
    if cp is None:
        raise RuntimeError("cupy_kernels.fused_moe needs CuPy and an NVIDIA GPU (pip install cupy-cuda13x)")


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


_MODULE = None


def _module():
    global _MODULE
    if _MODULE is None:
        _require_cupy()
        from ._loader import load_module
        _MODULE = load_module(_KERNEL_FILE)
    return _MODULE


_FUNCS = {}
_SMEM_SET = {}


def kernel_config(name: str) -> str | None:
    """The configuration (a key of CONFIGS) that a GEMM kernel name moe_gemm{1,2}_<cfg> belongs to; None for
    the other kernels of moe_fused.cu."""
    for prefix in ("moe_gemm1_", "moe_gemm2_"):
        if name.startswith(prefix) and name[len(prefix):] in CONFIGS:
            return name[len(prefix):]
    return None


def _kernel(name: str, smem: int = 0):
    f = _FUNCS.get(name)
    if f is None:
        f = _FUNCS[name] = _module().get_function(name)
        if kernel_config(name) in DIRECT_CONFIGS:
            # the largest carveout rather than the driver's heuristic: direct4's 4 blocks per SM need
            # nearly all of the 228 KB as shared memory (direct's timings in BENCHMARKS v16 were taken
            # with it too)
            f.preferred_shared_memory_carveout = 100     # per cent of the unified L1 / shared memory
    if smem > 48 * 1024 and smem > _SMEM_SET.get(name, 0):   # opt in to > 48 KB of dynamic shared memory
        if hasattr(f, "max_dynamic_shared_size_bytes"):
            f.max_dynamic_shared_size_bytes = smem
        else:
            drv = cp.cuda.driver
            drv.funcSetAttribute(f.ptr, getattr(drv, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8), smem)
        _SMEM_SET[name] = smem
    return f


# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------
@dataclass
class DeviceMoEWeights:
    """An MoE layer in the kernel layout on the GPU (see the module docstring). Build with to_device."""

    num_experts: int
    hidden_size: int
    intermediate_size: int
    gate_up: str
    w13: object            # cupy uint32 [E, 2*Ip/16, Hp/128, 16, 16]
    s13: object            # cupy uint32 [E, Hp/128, 2*Ip]
    b13: object            # cupy float32 [E, 2*Ip]
    w2: object             # cupy uint32 [E, Hr/16, Ip/128, 16, 16]
    s2: object             # cupy uint32 [E, Ip/128, Hr]
    b2: object             # cupy float32 [E, Hr]
    has_bias: bool
    raw: dict | None = None   # original vLLM-layout arrays on the device (for the naive reference path)

    @property
    def hidden_padded(self) -> int:
        return self.s13.shape[1] * 128

    @property
    def intermediate_padded(self) -> int:
        return self.s2.shape[1] * 128

    @property
    def k_padded(self) -> int:
        """The longer padded reduction axis of the two GEMMs."""
        return max(self.hidden_padded, self.intermediate_padded)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.w13, self.s13, self.b13, self.w2, self.s2, self.b2))

    def __repr__(self) -> str:
        return (f"DeviceMoEWeights(E={self.num_experts}, H={self.hidden_size}, I={self.intermediate_size}, "
                f"gate_up={self.gate_up!r}, bias={self.has_bias})")


# Code pair p = (codes 2p, 2p+1) of a kernel word becomes the bf16x2 (value * 2**-126) with
#   (rotl(word, a_p) & 0x80008000) | (rotl(word, b_p) & 0x01c001c0)      (one AND when a_p = b_p = 0)
# (moe_fused.cu::fp4pair): the sign of the pair's low / high code lands on bit 15 / 31, its e1 e0 m bits
# on 8..6 / 24..22. These rotations are the cheapest choice found by exhaustive search over per-pair
# rotations (11 integer operations per word instead of 15 for 4-bit nibbles).
PAIR_ROTATIONS = ((0, 0), (3, 3), (1, 6), (2, 13))     # (a_p, b_p) for p = 0..3


def code_bit_positions() -> np.ndarray:
    """(8, 4) int: bit of the kernel word that holds bit i (0 = m, 1 = e0, 2 = e1, 3 = sign) of code j."""
    pos = np.zeros((8, 4), np.int64)
    for p, (a, b) in enumerate(PAIR_ROTATIONS):
        for half in (0, 1):
            j, base = 2 * p + half, 16 * half
            pos[j, 3] = (base + 15 - a) % 32
            pos[j, :3] = [(base + 6 - b) % 32, (base + 7 - b) % 32, (base + 8 - b) % 32]
    return pos


def _bit_permute(words):
    """uint32 words with code j in nibble j -> the kernel bit placement (code_bit_positions; numpy/cupy)."""
    out = words & 0                                      # same array type and dtype, zeros
    for j, bits in enumerate(code_bit_positions()):
        for i, dst in enumerate(bits):
            out |= ((words >> (4 * j + i)) & 1) << int(dst)
    return out


def kernel_layout(packed, scales, row_src, k_padded: int):
    """vLLM layout -> kernel layout for one weight, on numpy or cupy arrays.

    packed (E, R0, K/2) uint8, scales (E, R0, K/32) uint8, row_src (R,) int64: kernel row r takes source
    row row_src[r] (-1: a zero row; R a multiple of 16). Returns (words uint32 (E, R/16, Kp/128, 16, 16)
    = (expert, 16-row group, superblock, row in group, word 4*t + b), scales uint32 (E, Kp/128, R))."""
    xp = cp.get_array_module(packed) if cp is not None else np
    E, _, kh = packed.shape
    K = 2 * kh
    R = row_src.shape[0]
    row_src = xp.asarray(row_src)
    valid = row_src >= 0
    src = row_src[valid]
    P = xp.zeros((E, R, k_padded // 2), dtype=xp.uint8)
    S = xp.full((E, R, k_padded // 32), 127, dtype=xp.uint8)
    dst = xp.nonzero(valid)[0]
    P[:, dst, :kh] = packed[:, src]
    S[:, dst, :K // 32] = scales[:, src]
    w = P.view(xp.uint32).reshape(E, R // 16, 16, k_padded // 128, 4, 4)   # (E, group, row, sb, b, t)
    w = xp.ascontiguousarray(w.transpose(0, 1, 3, 2, 5, 4))                 # (E, group, sb, row, t, b)
    w = _bit_permute(w)
    S = xp.ascontiguousarray(S.view(xp.uint32).transpose(0, 2, 1))    # (E, Kp/128, R)
    return w.reshape(E, R // 16, k_padded // 128, 16, 16), S


def w13_row_sources(intermediate_size: int, gate_up: str, rows: int) -> np.ndarray:
    """(rows,) int64: the w13 source row of each kernel row (-1 = zero row); see the module docstring."""
    I = intermediate_size
    r = np.arange(rows, dtype=np.int64)
    ch = (r // 16) * 8 + (r % 8)
    is_up = (r % 16) >= 8
    if gate_up == "interleaved":
        src = 2 * ch + is_up
    elif gate_up == "concatenated":
        src = ch + I * is_up
    else:
        raise ValueError(f"gate_up: expected 'interleaved' or 'concatenated', got {gate_up!r}")
    return np.where(ch < I, src, -1)


def _to_cupy(a, name):
    if a is None:
        return None
    if cp is not None and isinstance(a, cp.ndarray):
        return cp.ascontiguousarray(a)
    if isinstance(a, np.ndarray):
        return cp.asarray(np.ascontiguousarray(a))
    raise TypeError(f"{name}: expected a numpy or cupy array, got {type(a).__name__}")


def to_device(weights=None, *, w13_weight=None, w13_weight_scale=None, w2_weight=None, w2_weight_scale=None,
              w13_bias=None, w2_bias=None, gate_up="interleaved", keep_raw: bool = False) -> DeviceMoEWeights:
    """Move an MoE layer to the GPU in the kernel layout (once; the forward reuses it).

    Either ``weights`` (mxfp4ref.moe.MoEWeights), or the six vLLM-layout arrays as numpy or cupy arrays
    (shapes as MoEWeights: w13 (E, 2I, H/2), scales (E, 2I, H/32), w2 (E, H, I/2), (E, H, I/32), biases
    float32 (E, 2I), (E, H) or None). ``keep_raw=True`` also keeps the original arrays on the device for
    the naive reference kernels (``fused_moe(..., impl="naive")``)."""
    _require_cupy()
    if weights is not None:
        from mxfp4ref.moe.weights import MoEWeights
        if not isinstance(weights, MoEWeights):
            raise TypeError(f"weights: expected mxfp4ref.moe.MoEWeights, got {type(weights).__name__}")
        w13_weight, w13_weight_scale = weights.w13_weight, weights.w13_weight_scale
        w2_weight, w2_weight_scale = weights.w2_weight, weights.w2_weight_scale
        w13_bias, w2_bias, gate_up = weights.w13_bias, weights.w2_bias, weights.gate_up.value
    arrays = dict(w13_weight=w13_weight, w13_weight_scale=w13_weight_scale, w2_weight=w2_weight,
                  w2_weight_scale=w2_weight_scale, w13_bias=w13_bias, w2_bias=w2_bias)
    for name in ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale"):
        if arrays[name] is None:
            raise TypeError(f"to_device: {name} is required (or pass weights=MoEWeights)")
    d = {k: _to_cupy(v, k) for k, v in arrays.items()}
    E, two_i, half_h = d["w13_weight"].shape
    I, H = two_i // 2, 2 * half_h
    if H % 32 or I % 32:
        raise ValueError(f"to_device: H and I must be multiples of 32, got H={H}, I={I}")
    expect = {"w13_weight": ((E, 2 * I, H // 2), cp.uint8), "w13_weight_scale": ((E, 2 * I, H // 32), cp.uint8),
              "w2_weight": ((E, H, I // 2), cp.uint8), "w2_weight_scale": ((E, H, I // 32), cp.uint8),
              "w13_bias": ((E, 2 * I), cp.float32), "w2_bias": ((E, H), cp.float32)}
    for name, (shape, dtype) in expect.items():
        a = d[name]
        if a is None:
            continue
        if tuple(a.shape) != shape or a.dtype != dtype:
            raise ValueError(f"to_device: {name} expected {np.dtype(dtype)} {shape}, got {a.dtype} {tuple(a.shape)}")
    Hp, Ip = _round_up(H, 128), _round_up(I, 128)
    Hr = _round_up(H, 256)
    src13 = w13_row_sources(I, gate_up, 2 * Ip)
    w13, s13 = kernel_layout(d["w13_weight"], d["w13_weight_scale"], src13, Hp)
    src2 = np.where(np.arange(Hr) < H, np.arange(Hr), -1)
    w2, s2 = kernel_layout(d["w2_weight"], d["w2_weight_scale"], src2, Ip)
    b13 = cp.zeros((E, 2 * Ip), cp.float32)
    b2 = cp.zeros((E, Hr), cp.float32)
    if d["w13_bias"] is not None:
        v = src13 >= 0
        b13[:, cp.asarray(np.nonzero(v)[0])] = d["w13_bias"][:, cp.asarray(src13[v])]
    if d["w2_bias"] is not None:
        b2[:, :H] = d["w2_bias"]
    raw = None
    if keep_raw:
        gi, ui = (np.arange(I) * 2, np.arange(I) * 2 + 1) if gate_up == "interleaved" else \
            (np.arange(I), np.arange(I) + I)
        raw = dict(d, gate_idx=cp.asarray(gi.astype(np.int32)), up_idx=cp.asarray(ui.astype(np.int32)))
    return DeviceMoEWeights(E, H, I, gate_up, w13, s13, b13, w2, s2, b2,
                            d["w13_bias"] is not None or d["w2_bias"] is not None, raw)


# ---------------------------------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------------------------------
def _as_bf16_device(x, name, shape1=None):
    if cp is not None and isinstance(x, cp.ndarray):
        if x.dtype != cp.uint16:
            raise TypeError(f"{name}: expected a cupy uint16 array of bfloat16 bits, got dtype {x.dtype}")
        a = cp.ascontiguousarray(x)
    elif isinstance(x, np.ndarray):
        if x.dtype.name != "bfloat16" and x.dtype != np.uint16:
            raise TypeError(f"{name}: expected bfloat16 (ml_dtypes) or uint16 bf16 bits, got dtype {x.dtype}")
        a = cp.asarray(np.ascontiguousarray(x).view(np.uint16))
    else:
        raise TypeError(f"{name}: expected a cupy or numpy array, got {type(x).__name__}")
    if a.ndim != 2 or (shape1 is not None and a.shape[1] != shape1):
        raise ValueError(f"{name}: expected shape (num_tokens, {shape1}), got {tuple(a.shape)}")
    return a


def _as_device(a, name, dtype):
    if cp is not None and isinstance(a, cp.ndarray):
        return cp.ascontiguousarray(a, dtype=dtype)
    if isinstance(a, np.ndarray):
        return cp.asarray(np.ascontiguousarray(a, dtype=dtype))
    raise TypeError(f"{name}: expected a cupy or numpy array, got {type(a).__name__}")


_HOPPER_OK = {}


def hopper_available() -> bool:
    """Whether the current device runs the wgmma kernels: compute capability 9.0 and the module really
    built for sm_90a (asked once per device from the module itself; one host synchronisation)."""
    _require_cupy()
    dev = cp.cuda.Device()
    ok = _HOPPER_OK.get(dev.id)
    if ok is None:
        ok = False
        if str(dev.compute_capability) == "90":
            flag = cp.zeros(1, cp.int32)
            _kernel("moe_hopper_built")((1,), (1,), (flag,))
            ok = bool(int(flag.get()[0]))
        _HOPPER_OK[dev.id] = ok
    return ok


def choose_config(n_slots: int, num_experts: int, hopper: bool = False, k_padded: int = 0) -> str:
    """Kernel configuration from the slot count and the expected tokens per touched expert (host-side
    arithmetic only). Thresholds from the sweeps in BENCHMARKS.md (H200, gpt-oss-120b and -20b).
    ``hopper``: the device runs the wgmma kernels (hopper_available()); ``k_padded``: the longer padded
    reduction axis of the two GEMMs (max(Hp, Ip); `direct` needs <= DIRECT_MAX_K)."""
    per_expert = n_slots / max(1, min(num_experts, n_slots))
    if n_slots <= 8:             # 1-2 tokens. direct: no sort, one block row per slot (an expert shared by
        # two slots is read twice); decode: sorted tiles, split-K over 4 warps. direct wins where some
        # experts are shared too: 20b T=2 (8 slots on 32 experts: the two tokens share half an expert on
        # average), H200, same call, direct / decode: ids 41.2 / 52.3-52.7 us, moe_forward 42.5 / 54.0-54.3
        # (BENCHMARKS v19). Not measured with fewer experts per slot. direct4 (the same kernel at 4 blocks
        # per SM) is not chosen: since v17's epilogue it spills and is slower at 8 slots too (H200, 120b
        # T=2, same call, direct / direct4: ids 41.1-41.6 / 41.7-42.0 us, routed 43.9-44.2 / 44.6-44.8; at
        # 4 slots T=1 +3.8 us in v16; BENCHMARKS v16, v17)
        return "direct" if 4 * n_slots <= num_experts and k_padded <= DIRECT_MAX_K else "decode"
    if per_expert <= 16:
        return "stream16"        # weights streamed once per 16-token tile (up to 16 tokens: read once)
    if hopper:                   # wgmma: tiles of up to 128, then up to 192 tokens, each at the narrowest
        # multiple of 32 that holds it (hopper128w, hopper192w), then 192-token tiles (hopper192, + 128).
        # hopper128w against the fixed-width kernels it replaced at 17-96 tokens per expert, H100, the peer's
        # inputs, sustained, two alternations, hopper64 / hopper / hopper128w (us): 120b T=1024 (32 per
        # expert) 1170-1207 / 1198-1218 / 1074-1106; 120b T=2048 (64) 1726-1740 / 1505-1516 / 1350-1359;
        # 20b T=256 (32) 312-315 / 318-319 / 292-294; 20b T=512 (64) 435-437 / 446-449 / 360-361; 20b T=640 (80)
        # 575 / 499 / 395. H200, same: 120b T=1024 1173-1185 / 1191-1198 / 1061-1080; 20b T=256 312 / 317 /
        # 290; 20b T=512 434-435 / 446 / 356-357. At 16 per expert stream16 stays ahead (H100): 120b T=512
        # 919-934 against hopper128w 976-977, 20b T=128 256 / 269 (BENCHMARKS v26).
        # hopper192w runs each tile at the narrowest multiple of 32 tokens: with experts of 97-192 tokens
        # most tiles are partial. Its 192-token body measured slower than hopper192's where most tiles are
        # full. H200, sustained timing, same routing draw, hopper192 / hopper192w (us): 20b T=1024 (128 per
        # expert) 564-565 / 542; 120b T=4096 (128) 2070-2079 / 1928-1933; 20b T=4096 (512) 1688 / 1727-1730;
        # 20b T=16384 (2048) 6183-6218 / 6264-6277 (BENCHMARKS v24). 192: between, not measured. With the
        # peer's inputs (v25), 20b T=1024: hopper192w 591-594, hopper192 643-645, hopper 648-655.
        if per_expert <= 96:
            return "hopper128w"
        return "hopper192w" if per_expert <= 192 else "hopper192"
    if per_expert <= 40:
        return "tiled32"
    return "tiled256"


def _default_config(n_slots: int, dw: "DeviceMoEWeights") -> str:
    """choose_config for this device and layer."""
    return choose_config(n_slots, dw.num_experts, hopper_available(), dw.k_padded)


# moe_sort is one block; from SORT_MULTI_MIN slots the same sort runs as moe_sort_count / moe_sort_scan /
# moe_sort_scatter over blocks of SORT_CHUNK slots (moe_fused.cu). H200, in-graph, one block: 98 us for
# gpt-oss-20b's 65536 slots, 132 us for -120b's.
SORT_MULTI_MIN = 16384
SORT_CHUNK = 4096


def sort_launches(ids, emap, n: int, e_global: int, e_local: int, bt: int, split: int, ws, chunk: int | None = None):
    """The sort kernels of a forward as (name, grid, block, args): moe_sort below SORT_MULTI_MIN slots, else
    the three-kernel sort over blocks of SORT_CHUNK slots; ``chunk`` = 0 forces moe_sort, > 0 the three
    kernels with blocks of ``chunk`` slots (tests). Outputs go to the workspace (``ws.sorted_slot``,
    ``tiles``, ``tiles_small``, ``meta``, ``local_ids``, ``sort_counts``)."""
    i32 = np.int32
    em = emap if emap is not None else np.uint64(0)
    if chunk == 0 or (chunk is None and n < SORT_MULTI_MIN):
        return [("moe_sort", (1,), (256 if n <= 256 else 1024,),
                 (ids, em, i32(n), i32(e_global), i32(e_local), i32(bt), i32(split), ws.sorted_slot, ws.tiles,
                  ws.tiles_small, ws.meta, ws.local_ids))]
    chunk = chunk or SORT_CHUNK
    nb = -(-n // chunk)
    if ws.sort_counts is None or ws.sort_counts.size < nb * 256:
        ws.sort_counts = cp.empty(nb * 256, cp.int32)
    return [("moe_sort_count", (nb,), (1024,),
             (ids, em, i32(n), i32(e_global), i32(e_local), i32(chunk), ws.local_ids, ws.sort_counts)),
            ("moe_sort_scan", (1,), (256,),
             (i32(nb), i32(e_local), i32(bt), i32(split), ws.sort_counts, ws.tiles, ws.tiles_small, ws.meta)),
            ("moe_sort_scatter", (nb,), (1024,),
             (i32(n), i32(e_local), i32(chunk), ws.local_ids, ws.sort_counts, ws.sorted_slot))]


def as_one_launch(name: str, entries: list) -> tuple:
    """(name, thunk) entries -> one (name, thunk) that runs their thunks in order."""
    thunks = [run for _, run in entries]
    return name, lambda: [run() for run in thunks]


class Workspace:
    """Scratch buffers of one (T, k, layer, config): reused across calls and by CUDA-graph capture."""

    def __init__(self, dw: DeviceMoEWeights, n_tokens: int, top_k: int, bt: int):
        n = n_tokens * top_k
        self.key = (id(dw), n_tokens, top_k, bt)
        self.max_tiles = n // bt + min(dw.num_experts, n) + 1
        self.sorted_slot = cp.empty(max(n, 1), cp.int32)
        self.tiles = cp.empty((self.max_tiles, 4), cp.int32)
        self.tiles_small = cp.empty((2 * min(dw.num_experts, max(n, 1)), 4), cp.int32)   # <= 2 per expert
        self.meta = cp.empty(3, cp.int32)            # tiles, valid slots, small tiles
        self.local_ids = cp.empty(max(n, 1), cp.int32)
        self.done = None             # direct configs: per-slot GEMM1 block counters (zero between forwards)
        self.sort_counts = None                     # the three-kernel sort's per-block counts (sort_launches)
        self.inter = cp.empty((max(n, 1), dw.intermediate_padded), cp.uint16)
        self.y = cp.empty((max(n, 1), dw.hidden_size), cp.uint16)
        self.out = cp.empty((n_tokens, dw.hidden_size), cp.uint16)
        self.xp = None                      # Hopper configs: x with k permuted per 32-block, (T, Hp)
        self.route_w = self.route_ids = self.route_bad = None      # moe_forward's routing outputs


def fused_moe(x, weights, topk_weights, topk_ids, *, activation: str = "swigluoai", expert_map=None,
              apply_router_weight_on_input: bool = False, global_num_experts: int | None = None,
              config: str | None = None, impl: str = "fast", workspace: Workspace | None = None,
              pdl: bool | None = None, _chained: bool = False, _launches: list | None = None):
    """The MoE layer on the GPU: (T, H) bf16 bits (cupy uint16). Spec: mxfp4ref.moe.forward.fused_moe.

    x (T, H) bf16 (cupy uint16 bits or numpy bfloat16); weights: DeviceMoEWeights (``to_device``) or an
    MoEWeights (converted on every call: slow); topk_weights (T, k) float32; topk_ids (T, k) int32/int64
    global ids (-1 = dropped); expert_map (G,) int32 global -> local id or -1. ``config`` forces a kernel
    configuration (CONFIGS), ``impl="naive"`` runs the scalar reference kernels (needs keep_raw=True).
    Launches only; never synchronizes with the host (ids out of range are dropped, not reported: the
    spec raises on them; numpy ids are checked on the host). ``pdl``: launch the kernels after the first
    as programmatic dependent launches (cupy_kernels/_launch.py; True needs sm_90+ and is ignored
    elsewhere); None (default) = on sm_90+ except in the Hopper configurations (measured no faster there,
    BENCHMARKS.md). ``_chained``: the first kernel too (moe_forward: it follows the routing kernel).
    ``_launches`` (a list) collects the kernel launches instead of running them (for per-kernel timing)."""
    _require_cupy()
    dw = weights if isinstance(weights, DeviceMoEWeights) else to_device(weights, keep_raw=(impl == "naive"))
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if impl not in ("fast", "naive"):
        raise ValueError(f"impl: expected 'fast' or 'naive', got {impl!r}")
    H = dw.hidden_size
    xd = _as_bf16_device(x, "x", H)
    T = xd.shape[0]
    if isinstance(topk_ids, np.ndarray) and topk_ids.size:      # host data: check ids without a sync
        G0 = global_num_experts or (len(expert_map) if expert_map is not None else dw.num_experts)
        if topk_ids.min() < -1 or topk_ids.max() >= G0:
            raise ValueError(f"topk_ids: expected expert ids in [-1, {G0}), got values in "
                             f"[{topk_ids.min()}, {topk_ids.max()}]")
    ids = _as_device(topk_ids, "topk_ids", cp.int32)
    tw = _as_device(topk_weights, "topk_weights", cp.float32)
    if ids.ndim != 2 or ids.shape[0] != T or tw.shape != ids.shape:
        raise ValueError(f"topk_weights/topk_ids: expected equal shapes ({T}, top_k), got "
                         f"{tuple(tw.shape)} and {tuple(ids.shape)}")
    k = ids.shape[1]
    emap = None
    if expert_map is not None:
        emap = _as_device(expert_map, "expert_map", cp.int32)
        if emap.ndim != 1:
            raise ValueError(f"expert_map: expected a 1-D array, got shape {tuple(emap.shape)}")
    G = global_num_experts
    if G is None:
        G = dw.num_experts if emap is None else int(emap.shape[0])
    if emap is None and G != dw.num_experts:
        raise ValueError(f"global_num_experts: without expert_map it must equal num_experts "
                         f"({dw.num_experts}), got {G}")
    if emap is not None and int(emap.shape[0]) != G:
        raise ValueError(f"expert_map: expected shape ({G},) (global_num_experts), got {tuple(emap.shape)}")
    n = T * k
    cfg = config or _default_config(n, dw)
    if cfg not in CONFIGS:
        raise ValueError(f"config: expected one of {sorted(CONFIGS)}, got {cfg!r}")
    if cfg in DIRECT_CONFIGS and dw.k_padded > DIRECT_MAX_K:
        raise ValueError(f"config {cfg!r}: the padded hidden / intermediate size must be <= {DIRECT_MAX_K}, "
                         f"got {dw.k_padded}")
    if cfg in HOPPER_CONFIGS and max(T * dw.hidden_padded, n * dw.intermediate_padded) >= 2 ** 31:
        if config is not None:                # the wgmma kernels address activations with 32-bit offsets
            raise ValueError(f"config {cfg!r}: at most 2**31 activation elements per GEMM, got T={T}, top_k={k}")
        cfg = "tiled256"
    if cfg in HOPPER_CONFIGS and impl == "fast" and not hopper_available():
        raise ValueError(f"config {cfg!r} needs an sm_90 GPU (wgmma); this device has compute capability "
                         f"{cp.cuda.Device().compute_capability}")
    bt = CONFIGS[cfg][1]
    ws = workspace
    if ws is None or ws.key != (id(dw), T, k, bt):
        ws = Workspace(dw, T, k, bt)
    if T == 0:
        return ws.out
    if dw.num_experts > 256:
        raise ValueError(f"weights: at most 256 local experts supported, got {dw.num_experts}")
    i32 = np.int32
    null = np.uint64(0)                      # a NULL pointer argument
    launches = []                            # (name, thunk): run in order; each is idempotent

    # PDL by default except for the Hopper configurations: there same-run A/B timings showed no gain
    # (H200, 120b: T=4096 +2.5% and +6.6%, T=16384 -0.1%; 20b T=4096 +0.2%), against -8..-15% at 1-2 tokens
    auto_pdl = pdl_available() and cfg not in HOPPER_CONFIGS
    use_pdl = (auto_pdl if pdl is None else bool(pdl) and pdl_available()) and impl == "fast"

    def add(name, grid, block, args, smem_bytes=0):
        f = _kernel(name, smem_bytes)
        chained = use_pdl and (_chained or bool(launches))     # after a kernel of this forward
        launches.append((name, lambda: launch(f, grid, block, args, smem_bytes, pdl=chained)))

    small = SMALL_TILES.get(cfg) if impl == "fast" else None
    split = CONFIGS[small][1] if small else 0
    direct = cfg in DIRECT_CONFIGS and impl == "fast"
    if not direct:
        n0 = len(launches)
        for name, grid, block, args in sort_launches(ids, emap, n, G, dw.num_experts, bt, split, ws):
            add(name, grid, block, args)
        if len(launches) - n0 > 1:
            # the three-kernel sort is one entry: moe_sort_scan turns the counts into positions in place, so
            # it reruns correctly only after moe_sort_count (the bench's breakdown reruns each entry alone)
            launches[n0:] = [as_one_launch("moe_sort (count, scan, scatter)", launches[n0:])]
    act = i32(ACTIVATIONS[activation])
    on_in = i32(1 if apply_router_weight_on_input else 0)
    Hp, Ip, I = dw.hidden_padded, dw.intermediate_padded, dw.intermediate_size
    done = null                              # the direct GEMMs' per-slot counters, when they use them
    if direct:                               # no sort: GEMM1 maps the ids itself and writes local_ids
        _, _, thr, sm = CONFIGS[cfg]
        rows13, rows2 = 2 * _round_up(I, 8), _round_up(H, 16)
        common = (emap if emap is not None else null, tw, ws.local_ids)
        if ws.done is None:
            ws.done = cp.zeros(max(n, 1), cp.int32)
        blocks13 = (rows13 + 31) // 32
        if use_pdl and n >= DIRECT_HANDOFF_MIN_SLOTS:
            done = ws.done
        handoff = (done, i32(blocks13))
        add(f"moe_gemm1_{cfg}", (blocks13, n), (thr,),
            (dw.w13, dw.s13, dw.b13, xd, ids) + common +
            (ws.inter, i32(H), i32(Ip), i32(dw.s13.shape[2]), i32(rows13), i32(0), i32(Hp), i32(H // 32), i32(k),
             act, on_in, i32(n), i32(G), i32(dw.num_experts)) + handoff, sm(H // 32))
        add(f"moe_gemm2_{cfg}", ((rows2 + 31) // 32, n), (thr,),
            (dw.w2, dw.s2, dw.b2, ws.inter, ids) + common +
            (ws.y, i32(Ip), i32(H), i32(dw.s2.shape[2]), i32(rows2), i32(H), i32(Ip), i32(I // 32), i32(k),
             act, on_in, i32(n), i32(G), i32(dw.num_experts)) + handoff, sm(I // 32))
    elif impl == "naive":
        if dw.raw is None:
            raise ValueError("impl='naive' needs weights converted with to_device(..., keep_raw=True)")
        r = dw.raw
        inter = cp.empty((n, I), cp.uint16)
        b13 = r["w13_bias"] if r["w13_bias"] is not None else null
        b2 = r["w2_bias"] if r["w2_bias"] is not None else null
        add("moe_gemm1_naive", ((n * I + 255) // 256,), (256,),
            (r["w13_weight"], r["w13_weight_scale"], b13, xd, ws.local_ids, tw, i32(n), i32(k), i32(H), i32(I),
             r["gate_idx"], r["up_idx"], act, on_in, inter))
        add("moe_gemm2_naive", ((n * H + 255) // 256,), (256,),
            (r["w2_weight"], r["w2_weight_scale"], b2, inter, ws.local_ids, tw, i32(n), i32(H), i32(I), on_in, ws.y))
    else:
        rows13 = 2 * _round_up(I, 8)
        x1, ldx1 = xd, H
        if cfg in HOPPER_CONFIGS:           # wgmma reads k in the permuted order (moe_fused.cu)
            if ws.xp is None:
                ws.xp = cp.empty((T, Hp), cp.uint16)
            add("moe_permute_x", ((T * (Hp // 8) + 255) // 256,), (256,), (xd, i32(T), i32(H), i32(Hp), ws.xp))
            x1, ldx1 = ws.xp, Hp
        # (config, tile list, its meta entry, grid rows): the main kernel, then the small-tile kernel
        parts = [(cfg, ws.tiles, ws.meta, ws.max_tiles)]
        if small:
            parts.append((small, ws.tiles_small, ws.meta[2:], ws.tiles_small.shape[0]))
        widths = {c: (i32(KERNEL_WIDTHS[c]),) if c in KERNEL_WIDTHS else () for c, *_ in parts}  # last argument
        for c, tiles, meta, ntiles in parts:
            br, _, thr, sm = CONFIGS[c]
            add(f"moe_gemm1_{c}", ((rows13 + br - 1) // br, ntiles), (thr,),
                (dw.w13, dw.s13, dw.b13, x1, ws.sorted_slot, tiles, meta, tw, ws.inter, i32(ldx1), i32(Ip),
                 i32(dw.s13.shape[2]), i32(rows13), i32(0), i32(Hp), i32(H // 32), i32(k), act, on_in) + widths[c],
                sm(Hp) if callable(sm) else sm)
        rows2 = _round_up(H, 16)
        for c, tiles, meta, ntiles in parts:
            br, _, thr, sm = CONFIGS[c]
            add(f"moe_gemm2_{c}", ((rows2 + br - 1) // br, ntiles), (thr,),
                (dw.w2, dw.s2, dw.b2, ws.inter, ws.sorted_slot, tiles, meta, tw, ws.y, i32(Ip), i32(H),
                 i32(dw.s2.shape[2]), i32(rows2), i32(H), i32(Ip), i32(I // 32), i32(k), act, on_in) + widths[c],
                sm(Ip) if callable(sm) else sm)
    total = T * (H // 8)
    add("moe_combine", ((total + 255) // 256,), (256,), (ws.y, ws.local_ids, i32(T), i32(k), i32(H), ws.out, done))
    if _launches is not None:
        _launches.extend(launches)
        return ws.out
    for _, run in launches:
        run()
    return ws.out


def moe_forward(x, router_logits, weights, top_k: int, *, renormalize: bool = True, activation: str = "swigluoai",
                workspace: Workspace | None = None, config: str | None = None, logits_dtype=None,
                pdl: bool | None = None):
    """Routing + fused_moe (the monolithic path), all on the GPU with no host synchronisation.

    Routing is cupy_kernels.routing (spec: mxfp4ref.moe.routing.route, scoring="softmax", order="weight",
    bit-exact), launched into workspace buffers; router_logits (T, E) float32 / float16 / bf16 bits
    (uint16 with logits_dtype="bfloat16"). Non-finite logits are not reported (that check would need a
    device-to-host read); use cupy_kernels.route for checked routing. ``pdl``: as fused_moe's."""
    _require_cupy()
    from . import routing as _routing
    from ._args import float_input
    dw = weights if isinstance(weights, DeviceMoEWeights) else to_device(weights)
    logits, in_dtype = float_input(router_logits, "router_logits", logits_dtype)
    if logits.ndim != 2 or logits.shape[1] != dw.num_experts:
        raise ValueError(f"router_logits: expected shape (num_tokens, {dw.num_experts}), got {tuple(logits.shape)}")
    T = logits.shape[0]
    if not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= min(dw.num_experts, 32):
        raise ValueError(f"top_k: expected an int in [1, {min(dw.num_experts, 32)}], got {top_k!r}")
    cfg = config or _default_config(T * top_k, dw)
    ws = workspace
    if ws is None or ws.key != (id(dw), T, top_k, CONFIGS[cfg][1]):
        ws = Workspace(dw, T, top_k, CONFIGS[cfg][1])
    if ws.route_w is None:
        ws.route_w = cp.empty((T, top_k), cp.float32)
        ws.route_ids = cp.empty((T, top_k), cp.int32)
        ws.route_bad = cp.zeros((1,), cp.int32)
    _routing.launch(logits, in_dtype, int(top_k), 0, bool(renormalize), False, ws.route_w, ws.route_ids,
                    ws.route_bad, lean=LEAN_ROUTING)
    return fused_moe(x, dw, ws.route_w, ws.route_ids, activation=activation, workspace=ws, config=cfg,
                     pdl=pdl, _chained=True)


def dequant_probe(words, scale_bytes, *, general: bool = True):
    """Run the kernels' register dequantizer on kernel-order words (uint32 (n,)) and scale bytes (n,):
    returns uint16 (n, 8) bf16 bits in logical code order (for the exhaustive exactness test).
    general=False runs the one-multiply path (exact for scale bytes <= 128; the kernels take it when a
    warp's scale bytes are all below 128)."""
    _require_cupy()
    w = _as_device(words, "words", cp.uint32)
    s = _as_device(scale_bytes, "scale_bytes", cp.uint32)
    n = int(w.shape[0])
    out = cp.empty((n, 8), cp.uint16)
    _kernel("moe_dequant_probe")(((n + 255) // 256,), (256,), (w, s, np.int32(n), np.int32(int(general)), out))
    return out


class MoEGraph:
    """A CUDA-graph-captured forward for fixed shapes: fill ``x``/``topk_weights``/``topk_ids`` (or
    ``router_logits`` with routing=True) in place, call ``replay()``, read ``out``.

    Capture runs on a private non-blocking stream after one warm-up call (module load, workspace)."""

    def __init__(self, weights: DeviceMoEWeights, num_tokens: int, top_k: int, *, routing: bool = False,
                 config: str | None = None, **kwargs):
        _require_cupy()
        self.weights, self.top_k, self.routing = weights, top_k, routing
        H, T = weights.hidden_size, num_tokens
        self.x = cp.zeros((T, H), cp.uint16)
        self.topk_weights = cp.zeros((T, top_k), cp.float32)
        self.topk_ids = cp.zeros((T, top_k), cp.int32)
        self.router_logits = cp.zeros((T, weights.num_experts), cp.float32) if routing else None
        n = T * top_k
        cfg = config or _default_config(n, weights)
        self.workspace = Workspace(weights, T, top_k, CONFIGS[cfg][1])
        self.stream = cp.cuda.Stream(non_blocking=True)
        self._config, self._kwargs = cfg, kwargs
        with self.stream:
            self.out = self.forward()             # warm-up: loads the module, sizes everything
            self.stream.synchronize()
            self.stream.begin_capture()
            self.out = self.forward()
            self.graph = self.stream.end_capture()

    def forward(self):
        """One forward on this graph's buffers and workspace, launched on the current stream: what the graph
        holds (a benchmark captures many back to back). A method, not a closure over self: a closure would
        put the MoEGraph in a reference cycle, so its CUDA graph would be freed whenever the cyclic collector
        runs, which may be while other code captures a graph, and a graph destroyed during a capture
        invalidates that capture (seen with the benchmark's peer, BENCHMARKS v23)."""
        if self.routing:
            return moe_forward(self.x, self.router_logits, self.weights, self.top_k, config=self._config,
                               workspace=self.workspace, **self._kwargs)
        return fused_moe(self.x, self.weights, self.topk_weights, self.topk_ids, config=self._config,
                         workspace=self.workspace, **self._kwargs)

    def replay(self, stream=None):
        """Launch the graph on ``stream`` (default: the current stream, so it orders with your work)."""
        self.graph.launch(stream if stream is not None else cp.cuda.get_current_stream())
        return self.out
