"""``mxfp4ref explain-layout BACKEND``: where each logical element of a tiny layer lands in the buffer.

The map is read straight off the backend's index map (the same array ``to_kernel_layout`` uses), so
what is printed is what the code does: for the window of logical rows x columns shown, each cell is
the **byte offset** in the kernel buffer (memory order) of that logical byte -- or, for layouts that
move single 4-bit codes (marlin), of that code, written ``offset.lo`` / ``offset.hi`` for its nibble.
"""
from __future__ import annotations

import numpy as np

from ._core import PAD
from . import BACKENDS, get_plan

# The smallest layer each backend accepts: (H, I) with E = 1.
TINY = {"flashinfer-trtllm": (128, 128), "flashinfer-cutlass-sm90": (128, 128)}
DEFAULT_TINY = (64, 32)
LOGICAL = {"w13_weight": lambda H, I: (2 * I, H // 2), "w13_weight_scale": lambda H, I: (2 * I, H // 32),
           "w2_weight": lambda H, I: (H, I // 2), "w2_weight_scale": lambda H, I: (H, I // 32),
           "w13_bias": lambda H, I: (2 * I,), "w2_bias": lambda H, I: (H,)}


def offset_map(backend: str, tensor: str, H: int | None = None, I: int | None = None) -> np.ndarray:
    """For expert 0 of a tiny layer: int64 array shaped like the logical tensor (rows, cols) -- codes
    (rows, 2*cols) for code layouts -- giving each element's offset in the buffer, in bytes (or in
    nibbles for code layouts) and in elements for biases."""
    if tensor not in LOGICAL:
        raise ValueError(f"tensor: unknown value {tensor!r}; expected one of {sorted(LOGICAL)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown value {backend!r}; expected one of {sorted(BACKENDS)}")
    H, I = (H, I) if H and I else TINY.get(backend, DEFAULT_TINY)
    p = get_plan(backend, H, I)[tensor]
    shape = LOGICAL[tensor](H, I)
    if p.unit == "code":
        shape = shape[:-1] + (2 * shape[-1],)
    where = np.full(int(np.prod(shape)), PAD, dtype=np.int64)
    flat = p.idx.reshape(-1)
    real = np.flatnonzero(flat != PAD)
    where[flat[real]] = real
    return where.reshape(shape)


def _cell(v: int, unit: str) -> str:
    return f"{v // 2}.{'hi' if v % 2 else 'lo'}" if unit == "code" else str(v)


def explain_layout(backend: str, tensor: str = "w13_weight", rows: int = 8, cols: int = 8,
                   H: int | None = None, I: int | None = None) -> str:
    """Text drawing: the buffer offset of logical [row, col] for the top-left rows x cols window."""
    H, I = (H, I) if H and I else TINY.get(backend, DEFAULT_TINY)
    p = get_plan(backend, H, I)[tensor]
    where = offset_map(backend, tensor, H, I)
    kind = {"code": "4-bit code", "element": "element"}.get(p.unit, "byte")
    lines = [f"{backend}: {tensor} of a layer E=1, H={H}, I={I}",
             f"buffer: shape {p.idx.shape}{' (codes, packed 8 per int32)' if p.unit == 'code' else ''}; "
             f"{p.view}",
             f"cell = offset in the buffer of logical {kind} [row, col]"
             + (" (byte.nibble)" if p.unit == "code" else "")
             + (", before the in-word bit twiddle" if p.encode is not None and p.unit == "byte" else "")]
    if where.ndim == 1:
        where = where[None, :]
        rows = 1
    win = where[:rows, :cols]
    cells = [[_cell(int(v), p.unit) for v in r] for r in win]
    width = max(len(c) for r in cells for c in r + [str(cols - 1)])
    lines.append("row\\col " + " ".join(f"{c:>{width}}" for c in range(win.shape[1])))
    for r, row in enumerate(cells):
        lines.append(f"{r:>7} " + " ".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)


def _run(args) -> int:
    tensors = [args.tensor] if args.tensor else ["w13_weight", "w13_weight_scale"]
    for i, t in enumerate(tensors):
        if i:
            print()
        print(explain_layout(args.backend, t, args.rows, args.cols, args.hidden, args.intermediate))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("explain-layout", help="print where logical weight elements land in a "
                              "backend's kernel buffer, for a tiny layer (spec/30-layouts.md)")
    p.add_argument("backend", choices=sorted(BACKENDS))
    p.add_argument("--tensor", choices=sorted(LOGICAL), help="one tensor (default: w13 weight and scale)")
    p.add_argument("--rows", type=int, default=8, help="logical rows shown")
    p.add_argument("--cols", type=int, default=8, help="logical columns shown")
    p.add_argument("--hidden", type=int, help="H of the tiny layer (default: smallest the backend takes)")
    p.add_argument("--intermediate", type=int, help="I of the tiny layer")
    p.set_defaults(func=_run)
