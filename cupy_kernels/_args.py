"""Argument checks of the typed launchers: what a GPU array is, its dtype, layout and device.

Accepted as a GPU array: a ``cupy.ndarray``; a CUDA ``torch.Tensor`` (bfloat16 included, through an
int16 view); any object with ``__cuda_array_interface__``; any object with ``__dlpack__`` whose
``__dlpack_device__`` is a CUDA device. CuPy has no bfloat16 dtype, so bfloat16 data may also come
as a uint16 array of raw bits with ``dtype="bfloat16"``. Host arrays (NumPy) are refused with a
TypeError: the kernels never copy behind your back.

Errors name the argument, what was expected and what was received (TypeError for a wrong type or
dtype, ValueError for a wrong shape, layout or device).
"""
from __future__ import annotations

import numpy as np

from ._loader import cupy

_KDL_CUDA = 2          # DLPack device type of CUDA memory
_KDL_CUDA_MANAGED = 13


def dtype_name(dtype) -> str | None:
    """'bfloat16' / np.float32 / ml_dtypes.bfloat16 / torch.bfloat16 / None -> 'bfloat16', 'float32', None."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        return dtype.lower().replace("torch.", "")
    if type(dtype).__module__.startswith("torch"):
        return str(dtype).replace("torch.", "")
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise TypeError(f"dtype: expected a dtype or a dtype name, got {dtype!r}") from None


def _from_torch(x, name: str):
    cp = cupy()
    import torch
    if not x.is_cuda:
        raise TypeError(f"{name}: expected a CUDA tensor, got a torch tensor on {x.device}")
    if not x.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor, got strides {tuple(x.stride())} for "
                         f"shape {tuple(x.shape)} (call .contiguous() first)")
    if x.dtype == torch.bfloat16:
        return cp.from_dlpack(x.view(torch.int16)).view(cp.uint16), "bfloat16"
    return cp.from_dlpack(x), None


def as_gpu_array(x, name: str):
    """(cupy.ndarray view of x, 'bfloat16' if x carried that dtype itself else None). No copy."""
    cp = cupy()
    if isinstance(x, cp.ndarray):
        return x, None
    if type(x).__module__.startswith("torch") and hasattr(x, "is_cuda"):
        return _from_torch(x, name)
    if isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a GPU array (cupy.ndarray, CUDA torch tensor, or any object "
                        f"with __cuda_array_interface__ / CUDA DLPack), got numpy.ndarray in host memory; "
                        f"copy it first: cupy.asarray({name})")
    if hasattr(x, "__cuda_array_interface__"):
        return cp.asarray(x), None
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        dev_type = int(x.__dlpack_device__()[0])
        if dev_type not in (_KDL_CUDA, _KDL_CUDA_MANAGED):
            raise TypeError(f"{name}: expected data on a CUDA device, got a DLPack device of type "
                            f"{dev_type} ({type(x).__name__})")
        return cp.from_dlpack(x), None
    raise TypeError(f"{name}: expected a GPU array (cupy.ndarray, CUDA torch tensor, or any object with "
                    f"__cuda_array_interface__ / CUDA DLPack), got {type(x).__name__}")


def float_input(x, name: str, dtype=None):
    """A float input -> (cupy array, 'float32' | 'float16' | 'bfloat16').

    uint16 (or int16) data is read as bfloat16 bits and needs dtype='bfloat16'; a given ``dtype``
    must agree with the data's own dtype.
    """
    arr, own = as_gpu_array(x, name)
    want = dtype_name(dtype)
    if own == "bfloat16" or arr.dtype in (np.uint16, np.int16):
        got = own or "bfloat16 bits"
        if own is None and want != "bfloat16":
            raise TypeError(f"{name}: {arr.dtype} data is read as raw bfloat16 bits and needs "
                            f"dtype='bfloat16', got dtype={dtype!r}")
        if want not in (None, "bfloat16"):
            raise TypeError(f"dtype: {name} holds {got}, got dtype={dtype!r}")
        logical = "bfloat16"
    elif arr.dtype in (np.float32, np.float16):
        logical = arr.dtype.name
        if want is not None and want != logical:
            raise TypeError(f"dtype: {name} has dtype {logical}, got dtype={dtype!r}")
    else:
        raise TypeError(f"{name}: expected dtype float32, float16 or bfloat16 (uint16 bits with "
                        f"dtype='bfloat16'), got {arr.dtype}")
    require_contiguous(arr, name)
    return arr, logical


def uint8_input(x, name: str):
    """A uint8 GPU array (codes or scales), C-contiguous."""
    arr, _ = as_gpu_array(x, name)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name}: expected dtype uint8, got {arr.dtype}")
    require_contiguous(arr, name)
    return arr


def int_input(x, name: str, dtypes=(np.int32, np.int64)):
    arr, _ = as_gpu_array(x, name)
    if arr.dtype not in [np.dtype(d) for d in dtypes]:
        want = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name}: expected dtype {want}, got {arr.dtype}")
    require_contiguous(arr, name)
    return arr


def require_contiguous(arr, name: str) -> None:
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {arr.strides} for shape "
                         f"{arr.shape} (copy it with cupy.ascontiguousarray first)")


def same_device(*named) -> int:
    """Device id shared by all (name, array) pairs; ValueError if they differ."""
    ids = [(n, a.device.id) for n, a in named]
    first = ids[0][1]
    for n, d in ids[1:]:
        if d != first:
            raise ValueError(f"{n}: expected an array on device {first} (like {ids[0][0]}), got device {d}")
    return first


def grid_for(n_items: int, per_block: int, cap: int = 1 << 20) -> int:
    """Blocks for ``n_items`` work items at ``per_block`` items per block (grid-stride beyond ``cap``)."""
    return max(1, min(cap, -(-n_items // per_block)))
