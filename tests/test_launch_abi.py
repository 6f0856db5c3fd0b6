"""cupy_kernels/_launch.py passes structs to the CUDA driver's cuLaunchKernelEx through ctypes: their layout
must be cuda.h's exactly (no GPU needed). Checked against cuda.h itself when a C compiler and the CUDA
headers are on the machine, and against the documented ABI values otherwise."""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess

import pytest

from cupy_kernels import _launch

# sizeof / offsetof in cuda.h (CUDA 12 and 13, 64-bit): CUlaunchAttribute {id; pad[4]; value (64-byte
# union)}, CUlaunchConfig {6 x grid/block dims, sharedMemBytes, hStream, attrs, numAttrs}
ABI = {"attr_size": 72, "attr_value": 8, "config_size": 56, "config_stream": 32, "config_attrs": 40,
       "config_nattrs": 48, "programmatic_stream_serialization": 6}


def ours() -> dict:
    return {"attr_size": ctypes.sizeof(_launch._Attr), "attr_value": _launch._Attr.value.offset,
            "config_size": ctypes.sizeof(_launch._Config), "config_stream": _launch._Config.hStream.offset,
            "config_attrs": _launch._Config.attrs.offset, "config_nattrs": _launch._Config.numAttrs.offset,
            "programmatic_stream_serialization": _launch._ATTR_PROGRAMMATIC_STREAM_SERIALIZATION}


def test_ctypes_structs_have_the_driver_abi_layout():
    assert ours() == ABI


def _cuda_h() -> str | None:
    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    roots += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for r in roots:
        if r and os.path.isfile(os.path.join(r, "include", "cuda.h")):
            return os.path.join(r, "include")
    return None


def test_ctypes_structs_match_cuda_h(tmp_path):
    inc, cc = _cuda_h(), shutil.which("cc") or shutil.which("gcc")
    if inc is None or cc is None:
        pytest.skip("needs cuda.h and a C compiler")
    src = tmp_path / "abi.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <cuda.h>\n"
        "int main(void) { printf(\"%zu %zu %zu %zu %zu %zu %d\\n\", sizeof(CUlaunchAttribute),\n"
        "  offsetof(CUlaunchAttribute, value), sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, hStream),\n"
        "  offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs),\n"
        "  (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION); return 0; }\n")
    exe = tmp_path / "abi"
    subprocess.run([cc, f"-I{inc}", str(src), "-o", str(exe)], check=True, capture_output=True)
    got = [int(v) for v in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()]
    assert dict(zip(ABI, got)) == ours()


def test_pdl_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv("MXFP4REF_PDL", "0")
    assert _launch.pdl_available() is False          # decided before CuPy or the driver is touched
