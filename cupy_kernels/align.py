"""GPU block alignment with the spec's name and signature: align_block_size (kernels/align.cu).

``align_block_size(topk_ids, block_size, num_experts, expert_map=None, *, pad_sorted_ids=False)``
returns (sorted_token_ids int32, expert_ids int32, num_tokens_post_padded int32 (1,)) as CuPy arrays,
equal to :func:`mxfp4ref.moe.align.align_block_size` element for element (ascending flat index
inside each expert). topk_ids: GPU int32 / int64 (T, k). GPU limit: num_experts <= 1024.
Ids outside [0, num_experts): ValueError (one device-to-host read; ``check=False`` skips it).
"""
from __future__ import annotations

import numpy as np

from ._args import int_input, same_device
from ._loader import cupy, get_kernel

KERNEL_FILE = "align.cu"
NAMES = ("mx_align<0>", "mx_align<1>", "mx_align_count<0>", "mx_align_count<1>",
         "mx_align_scatter<0>", "mx_align_scatter<1>")
MAX_EXPERTS = 1024
SMEM_BYTES = 44 * 1024          # dynamic shared memory budget of the align kernels (< 48 KB)


def _warps(E: int) -> int:
    return max(1, min(32, (SMEM_BYTES // 4 - 2 * E) // E))


def align_block_size(topk_ids, block_size: int, num_experts: int, expert_map=None, *,
                     pad_sorted_ids: bool = False, check: bool = True, naive: bool = False,
                     fused: bool = False, _counted=None):
    """(sorted_token_ids, expert_ids, num_tokens_post_padded) of the spec, computed on the GPU."""
    from mxfp4ref.moe.align import max_num_tokens_padded
    cp = cupy()
    ids = int_input(topk_ids, "topk_ids")
    if ids.ndim != 2:
        raise ValueError(f"topk_ids: expected shape (num_tokens, top_k), got shape {ids.shape}")
    for name, v in (("block_size", block_size), ("num_experts", num_experts)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
        if v < 1:
            raise ValueError(f"{name}: expected >= 1, got {v}")
    if num_experts > MAX_EXPERTS:
        raise ValueError(f"num_experts: the GPU kernel supports <= {MAX_EXPERTS}, got {num_experts}")
    emap = None
    if expert_map is not None:
        emap = int_input(expert_map, "expert_map", dtypes=(np.int32,))
        if emap.shape != (num_experts,):
            raise ValueError(f"expert_map: expected shape ({num_experts},), got {emap.shape}")
        same_device(("topk_ids", ids), ("expert_map", emap))
    numel = int(ids.size)
    size = max_num_tokens_padded(numel, int(block_size), int(num_experts), bool(pad_sorted_ids))
    with ids.device:
        sorted_ids = cp.empty((size,), cp.int32)
        expert_ids = cp.empty((-(-size // block_size),), cp.int32)
        post = cp.empty((1,), cp.int32)
        bad = cp.zeros((1,), cp.int32)
        counts, counted = _counted if _counted is not None else (None, None)   # (from route_and_align)
        launch(ids, int(block_size), int(num_experts), emap, sorted_ids, expert_ids, post, bad, naive=naive,
               fused=fused, counts=counts, counted=counted)
        if check and int(bad.get()[0]):
            raise ValueError(f"topk_ids: expected global expert ids in [0, {num_experts}), got an id "
                             f"outside that range")
    return sorted_ids, expert_ids, post


_NO_MAP = {}


def _no_map(device_id: int):
    """A one-int placeholder for the kernel's expert_map pointer (never read), allocated once per device."""
    if device_id not in _NO_MAP:
        _NO_MAP[device_id] = cupy().zeros((1,), cupy().int32)
    return _NO_MAP[device_id]


IDS_PER_BLOCK = 1024            # two-kernel path: ids per block (module settings; the bench tries others:
MAX_WARPS = 16                  # on an H100, 1024 x 16 beat 4096 x 32, 2048 x 16/32 and 1024 x 8/32)


def segments(numel: int) -> tuple[int, int]:
    """(blocks, ids per block) of the two-kernel path: about IDS_PER_BLOCK ids per block, at most 128
    blocks (every scatter block reads the whole blocks x experts count matrix)."""
    nblk = max(1, min(128, -(-numel // IDS_PER_BLOCK)))
    seg = max(32, -(-(-(-numel // nblk)) // 32) * 32)
    return nblk, seg


def workspace(numel: int, num_experts: int):
    """The int32 (blocks, num_experts) counts buffer the two-kernel path needs (allocate once to reuse)."""
    cp = cupy()
    return cp.empty((segments(numel)[0], num_experts), cp.int32)


_BARRIER = {}


def _barrier(device_id: int):
    """Grid-barrier state of the fused kernel (2 uint32, zero once, self-resetting), one per device."""
    if device_id not in _BARRIER:
        _BARRIER[device_id] = cupy().zeros((2,), cupy().uint32)
    return _BARRIER[device_id]


def launch(ids, block_size: int, num_experts: int, emap, sorted_ids, expert_ids, post, bad,
           naive: bool = False, counts=None, fused: bool = False, counted: int | None = None) -> None:
    """Enqueue the alignment kernels (no checks, no synchronization). naive: the one-block kernel.
    fused: one cooperative launch (count, grid barrier, scatter) instead of two kernels; it shares one
    barrier per device, so never run two fused alignments concurrently on different streams.
    counted: counts already holds the expert histogram of each `counted` consecutive ids per row
    (routing.launch(..., counts=...) wrote it): only the scatter kernel runs."""
    E = num_experts
    idt = 0 if ids.dtype == np.int32 else 1
    map_ptr = emap if emap is not None else _no_map(ids.device.id)
    numel = int(ids.size)
    if naive:
        W = _warps(E)
        k = get_kernel(KERNEL_FILE, f"mx_align<{idt}>", NAMES)
        k((1,), (32 * W,), (ids, np.int64(numel), np.int32(E), np.int32(block_size), map_ptr,
                            np.int32(emap is not None), np.int64(sorted_ids.size), np.int64(expert_ids.size),
                            sorted_ids, expert_ids, post, bad), shared_mem=(W * E + 2 * E) * 4)
        return
    if counted is not None:
        if fused or counts is None:
            raise ValueError("counted: needs counts and excludes fused=True")
        nrows = -(-numel // counted)
        rpb = max(1, round(IDS_PER_BLOCK / counted))         # rows per scatter block
        nblk, seg = -(-nrows // rpb), rpb * counted
    else:
        nblk, seg = segments(numel)
        nrows, rpb = nblk, 1
    if counts is None:
        counts = workspace(numel, E)
    # as many warps per block as the scatter kernel's shared memory ((3 + warps) * E ints) allows
    threads = 32 * max(1, min(MAX_WARPS, (SMEM_BYTES // 4) // E - 3))
    if not fused and counted is None:
        k1 = get_kernel(KERNEL_FILE, f"mx_align_count<{idt}>", NAMES)
        k1((nblk,), (threads,), (ids, np.int64(numel), np.int32(E), np.int64(seg), counts, bad),
           shared_mem=E * 4)
    k2 = get_kernel(KERNEL_FILE, f"mx_align_scatter<{idt}>", NAMES)
    nbits = max(1, (E - 1).bit_length())
    args = (ids, np.int64(numel), np.int32(E), np.int32(block_size), np.int64(seg), np.int32(nrows), np.int32(rpb),
            counts,
            map_ptr, np.int32(emap is not None), np.int64(sorted_ids.size), np.int64(expert_ids.size),
            np.int32(nbits), sorted_ids, expert_ids, post,
            _barrier(ids.device.id) if fused else np.uintp(0), bad)
    smem = (3 + threads // 32) * E * 4
    if fused:   # RawKernel.__call__ fixes enable_cooperative_groups itself: call the compiled Function
        k2.kernel((nblk,), (threads,), args, shared_mem=smem, enable_cooperative_groups=True)
    else:
        k2((nblk,), (threads,), args, shared_mem=smem)
