"""Kernel launches with programmatic dependent launch (PDL), through the CUDA driver's cuLaunchKernelEx.

A kernel launched with the attribute CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION may begin while
the kernel before it in the stream is still running, once every block of that kernel has executed
``griddepcontrol.launch_dependents`` (``mxk_grid_release`` in kernels/mx_common.cuh) or exited. Its
``griddepcontrol.wait`` (``mxk_grid_wait``) then blocks until the earlier kernel has completed and its
memory is visible. In a chain of such kernels the launch latency of each is hidden behind the tail of the
one before, and a kernel may issue loads of data no earlier kernel writes (weights) before it waits. CUDA
graph capture records the launch as a programmatic edge. Hopper (compute capability 9.0) and later.

CuPy's RawKernel call has no launch attributes, so this module calls cuLaunchKernelEx from libcuda with
ctypes (the function handle is the CuPy kernel's ``ptr``). Where that is not possible (an older GPU or
driver, no libcuda) :func:`launch` falls back to CuPy's own launch, and the kernels' wait / release
instructions do nothing. ``MXFP4REF_PDL=0`` in the environment turns PDL off (for A/B timing).
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from ._loader import cupy

_ATTR_PROGRAMMATIC_STREAM_SERIALIZATION = 6     # CUlaunchAttributeID in cuda.h (CUDA 12.0+)


class _AttrValue(ctypes.Union):                 # CUlaunchAttributeValue: a 64-byte union
    _fields_ = [("pad", ctypes.c_char * 64), ("int_value", ctypes.c_int)]


class _Attr(ctypes.Structure):                  # CUlaunchAttribute
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", _AttrValue)]


class _Config(ctypes.Structure):                # CUlaunchConfig
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_Attr)), ("numAttrs", ctypes.c_uint)]


_DRIVER = {}            # "fn" -> cuLaunchKernelEx (or None), "err" -> cuGetErrorString
_DEVICE_OK = {}         # device id -> bool


def _driver_launch():
    if "fn" not in _DRIVER:
        fn = err = None
        try:
            lib = ctypes.CDLL("libcuda.so.1")
            fn = lib.cuLaunchKernelEx
            fn.argtypes = [ctypes.POINTER(_Config), ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                           ctypes.c_void_p]
            fn.restype = ctypes.c_int
            err = lib.cuGetErrorString
            err.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
            err.restype = ctypes.c_int
        except (OSError, AttributeError):       # no libcuda, or a driver older than CUDA 11.8
            fn = err = None
        _DRIVER["fn"], _DRIVER["err"] = fn, err
    return _DRIVER["fn"]


def pdl_available() -> bool:
    """Whether launches on the current device can use PDL: compute capability >= 9.0, cuLaunchKernelEx
    found, and not turned off by MXFP4REF_PDL=0."""
    if os.environ.get("MXFP4REF_PDL", "1") == "0":
        return False
    cp = cupy()
    dev = cp.cuda.Device()
    ok = _DEVICE_OK.get(dev.id)
    if ok is None:
        ok = _DEVICE_OK[dev.id] = int(dev.compute_capability) >= 90 and _driver_launch() is not None
    return ok


def _c_arg(a, i: int):
    """One kernel argument as the ctypes value whose address goes into kernelParams."""
    cp = cupy()
    if isinstance(a, cp.ndarray):
        return ctypes.c_uint64(a.data.ptr)
    if isinstance(a, (np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64)):
        return np.ctypeslib.as_ctypes_type(a.dtype)(a.item())
    raise TypeError(f"kernel argument {i}: expected a cupy array or a sized numpy scalar "
                    f"(np.int32, np.uint64, ...), got {type(a).__name__}")


def launch(func, grid, block, args, shared_mem: int = 0, *, pdl: bool = False) -> None:
    """Launch ``func`` (a cupy Function / RawKernel) on the current stream, as CuPy's ``func(grid, block,
    args, shared_mem=...)`` does; with ``pdl=True`` and :func:`pdl_available`, as a programmatic dependent
    launch. The kernel must then start with ``mxk_grid_wait()`` before it touches anything the kernel
    before it in the stream writes or reads."""
    if not pdl or not pdl_available():
        func(grid, block, args, shared_mem=shared_mem)
        return
    cp = cupy()
    g = tuple(grid) + (1,) * (3 - len(grid))
    b = tuple(block) + (1,) * (3 - len(block))
    vals = [_c_arg(a, i) for i, a in enumerate(args)]
    params = (ctypes.c_void_p * max(1, len(vals)))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in vals])
    attr = _Attr()
    attr.id = _ATTR_PROGRAMMATIC_STREAM_SERIALIZATION
    attr.value.int_value = 1
    cfg = _Config(g[0], g[1], g[2], b[0], b[1], b[2], int(shared_mem),
                  ctypes.c_void_p(cp.cuda.get_current_stream().ptr), ctypes.pointer(attr), 1)
    fn = func.kernel if hasattr(func, "kernel") else func     # RawKernel -> its Function on this device
    rc = _DRIVER["fn"](ctypes.byref(cfg), ctypes.c_void_p(fn.ptr), params, None)
    if rc != 0:
        msg = ctypes.c_char_p()
        _DRIVER["err"](rc, ctypes.byref(msg))
        raise RuntimeError(f"cuLaunchKernelEx failed: CUDA error {rc} ({(msg.value or b'?').decode()}); "
                           f"MXFP4REF_PDL=0 launches without programmatic dependent launch")
