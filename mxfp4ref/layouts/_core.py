"""What every kernel layout shares: the KernelWeights container, index maps, and their cache.

A kernel layout is a *reordering with zero padding*: every byte (or 4-bit code, or bias element) of
the kernel's buffer is either a copy of exactly one element of the logical MoEWeights tensor, or a
padding zero. We describe each layout by an **index map**: an int64 array shaped like the kernel's
buffer whose entry is the flat index of the source element it copies, or ``PAD`` (-1) for padding.

    to_kernel:    out = where(idx >= 0, src.flat[idx], 0)          (a gather)
    from_kernel:  src.flat[idx[idx >= 0]] = out[idx >= 0]          (the scatter that undoes it)

Because an index map is a permutation of the source plus padding, the scatter is an exact inverse,
and ``from_kernel`` can *check* its input: a padding position holding a non-zero byte is an error
(those bytes are not the image of any MoEWeights; a kernel would read them, see vLLM #47303).

Every layout treats the experts alike, so an index map is built for **one expert** (a leading
expert axis of size 1) and applied to each expert in turn; the experts' buffers are concatenated along
``TensorPlan.expert_axis``. A map depends only on the backend and the per-expert shapes, so it is built
once (by running the layout's own reshape/transpose recipe on ``np.arange``) and cached in
``PERMUTE_CACHE`` -- the same idea as vLLM's ``_cache_permute_indices`` dict, which memoises
flashinfer's per-expert row permutations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import ml_dtypes
import numpy as np

PAD = -1
"""Index-map entry meaning "this kernel byte is padding; it holds 0"."""

TENSORS = ("w13_weight", "w13_weight_scale", "w2_weight", "w2_weight_scale", "w13_bias", "w2_bias")

PERMUTE_CACHE: dict[tuple, np.ndarray] = {}
"""(backend, tensor, N, K) -> read-only int64 index map of one expert. Visible and testable on purpose."""


def cached_index_map(key: tuple, build: Callable[[], np.ndarray]) -> np.ndarray:
    """Return the index map for ``key``, building it with ``build()`` only the first time."""
    idx = PERMUTE_CACHE.get(key)
    if idx is None:
        idx = np.ascontiguousarray(build(), dtype=np.int64)
        idx.setflags(write=False)
        PERMUTE_CACHE[key] = idx
    return idx


def clear_permute_cache() -> None:
    """Forget every cached index map (tests use it to count rebuilds)."""
    PERMUTE_CACHE.clear()


def round_up(n: int, m: int) -> int:
    """Smallest multiple of ``m`` that is >= ``n``."""
    return -(-n // m) * m


def arange_padded(shape: tuple, padded: tuple) -> np.ndarray:
    """int64 array of shape ``padded``: flat source indices of a ``shape`` array in its top-left
    corner, PAD elsewhere. The start of every index-map recipe (zero padding = PAD entries)."""
    out = np.full(padded, PAD, dtype=np.int64)
    out[tuple(slice(0, n) for n in shape)] = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    return out


def gather(src: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Kernel buffer from a source array: ``out[p] = src.flat[idx[p]]`` or 0 where ``idx[p] == PAD``.

    One zero is appended to the flattened source, so that PAD (-1) indexes it: a single ``take``."""
    flat = np.append(np.ascontiguousarray(src).reshape(-1), np.zeros(1, src.dtype))
    return flat[idx]


def scatter(out: np.ndarray, idx: np.ndarray, shape: tuple, dtype, what: str) -> np.ndarray:
    """Inverse of :func:`gather`: rebuild the ``shape`` source array; check the padding is zero."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{what}: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != np.dtype(dtype):
        raise TypeError(f"{what}: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != idx.shape:
        raise ValueError(f"{what}: expected shape {idx.shape}, got {out.shape}")
    pad = idx == PAD
    bits = out.view(f"u{out.dtype.itemsize}")                      # compare bytes: -0.0 is not padding
    if np.any(bits[pad] != 0):
        bad = int(np.flatnonzero(pad & (bits != 0))[0])
        raise ValueError(f"{what}: padding byte at flat offset {bad} is {bits.reshape(-1)[bad]:#x}, "
                         f"expected 0 (not a buffer produced by to_kernel_layout)")
    src = np.empty(int(np.prod(shape)) + 1, dtype=out.dtype)       # the extra slot absorbs PAD writes
    src[idx] = out
    return src[:-1].reshape(shape)


def check_multiple(value: int, multiple: int, backend: str, what: str, hint: str = "") -> None:
    """ValueError naming the backend's shape constraint when ``value % multiple != 0``."""
    if value % multiple:
        extra = f"; {hint}" if hint else ""
        raise ValueError(f"{backend}: {what} must be a multiple of {multiple}, got {value}{extra}")


@dataclass(frozen=True)
class TensorPlan:
    """How one MoEWeights tensor becomes one kernel buffer.

    idx:     int64 index map of ONE expert, shaped like its buffer (before ``encode``) with a
             leading expert axis of size 1; entries index that expert's ``src``
    unit:    "byte" (the tensor as stored), "code" (4-bit codes unpacked along the last axis, for
             layouts that move single nibbles) or "element" (biases)
    encode:  optional exact, invertible re-encoding of the gathered buffer (bit twiddle, dtype)
    decode:  its inverse
    view:    one line: how the kernel indexes the buffer
    expert_axis: the axis along which the experts' buffers are concatenated (0 for all but the
             Blackwell scale layout, whose buffer is (1, E*Np/128, ...))
    dtype:   the stored buffer's dtype if ``encode`` changes it, else None (= the source dtype)
    """

    idx: np.ndarray
    unit: str = "byte"
    encode: Callable[[np.ndarray], np.ndarray] | None = None
    decode: Callable[[np.ndarray], np.ndarray] | None = None
    view: str = ""
    expert_axis: int = 0
    dtype: object = None          # dtype of the stored buffer when ``encode`` changes it (int32, bf16)

    def buffer_shape(self, E: int) -> tuple:
        """Shape of the whole layer's buffer (E experts), before ``encode``."""
        shape = list(self.idx.shape)
        shape[self.expert_axis] *= E
        return tuple(shape)


@dataclass(frozen=True, eq=False)
class KernelWeights:
    """One MoE layer's weights as a backend's kernel reads them.

    Each array holds the bytes of the kernel's buffer in **memory order** (C-contiguous), so
    ``arr.tobytes()`` is exactly what lies in GPU memory. Where the kernel sees a strided/transposed
    view of that buffer, ``views[name]`` says which (e.g. "logical (E, K/2, N) = transpose of the
    last two axes"). ``source`` remembers the logical shapes needed to undo the layout.
    """

    backend: str
    w13_weight: np.ndarray
    w13_weight_scale: np.ndarray
    w2_weight: np.ndarray
    w2_weight_scale: np.ndarray
    w13_bias: np.ndarray | None
    w2_bias: np.ndarray | None
    source: dict = field(default_factory=dict)     # E, H, I, gate_up, has_w13_bias, has_w2_bias
    views: dict = field(default_factory=dict)      # tensor name -> how the kernel indexes the buffer

    def tensors(self) -> dict[str, np.ndarray]:
        """The non-None buffers by name, in the order of ``TENSORS``."""
        return {n: getattr(self, n) for n in TENSORS if getattr(self, n) is not None}

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}={a.shape}/{a.dtype}" for n, a in self.tensors().items())
        return f"KernelWeights(backend={self.backend!r}, {shapes})"


def identity_index_map(shape: tuple) -> np.ndarray:
    """Every element stays where it is: idx[p] = p."""
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)


def float32_bias_plans(E: int, H: int, I: int) -> dict[str, TensorPlan]:
    """Biases copied unchanged as float32 (E, 2I) and (E, H) -- what the Triton backends take."""
    return {"w13_bias": TensorPlan(identity_index_map((E, 2 * I)), unit="element", view="float32 (E, 2I)"),
            "w2_bias": TensorPlan(identity_index_map((E, H)), unit="element", view="float32 (E, H)")}


def weight_scale_plans(backend: str, E: int, H: int, I: int, value_map, scale_map, value_view: str,
                       scale_view: str, scale_plan: dict | None = None, **value_plan) -> dict[str, TensorPlan]:
    """Plans for w13/w2 weights and scales from two index-map recipes, each taking (E, N, cols):
    ``value_map(E, N, K/2)`` and ``scale_map(E, N, K/32)``; N = 2I, K = H for w13 and N = H, K = I
    for w2. Maps are cached under (backend, tensor, N, K)."""
    plans = {}
    for name, N, K in (("w13", 2 * I, H), ("w2", H, I)):
        vidx = cached_index_map((backend, name + "_weight", N, K), lambda: value_map(E, N, K // 2))
        sidx = cached_index_map((backend, name + "_weight_scale", N, K), lambda: scale_map(E, N, K // 32))
        plans[name + "_weight"] = TensorPlan(vidx, view=value_view, **value_plan)
        plans[name + "_weight_scale"] = TensorPlan(sidx, view=scale_view, **(scale_plan or {}))
    return plans


def bf16_codec(backend: str):
    """(encode, decode) for backends that keep biases in bfloat16: float32 -> ml_dtypes.bfloat16,
    refusing values bf16 cannot hold exactly (the round trip must be exact), and back."""
    def to_bf16(x: np.ndarray) -> np.ndarray:
        y = x.astype(ml_dtypes.bfloat16)
        bad = y.astype(np.float32).view(np.uint32) != x.view(np.uint32)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{backend}: biases are kept in bfloat16 by this backend; bias value "
                             f"{x.reshape(-1)[i]!r} (flat index {i}) is not exactly representable in bfloat16")
        return y

    def from_bf16(y: np.ndarray) -> np.ndarray:
        if y.dtype != np.dtype(ml_dtypes.bfloat16):
            raise TypeError(f"{backend}: bias buffer: expected dtype bfloat16, got {y.dtype}")
        return y.astype(np.float32)

    return to_bf16, from_bf16
