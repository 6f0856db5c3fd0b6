"""Each kernel layout equals the REAL implementation's bytes (triton_kernels, flashinfer, vLLM).

The real code cannot run here (the project must not depend on it), so it was run once outside the
repo (/work/ext/layoutcheck/check_*.py, versions in spec/30-layouts.md) on the deterministic weights
built below, and the sha256 of every buffer it produced was stored in data/layout_real_digests.json.
This test rebuilds those buffers with mxfp4ref.layouts and compares the digests, shape and dtype.
"""
import hashlib
import json
import pathlib

import numpy as np
import pytest

from mxfp4ref.layouts import BACKENDS, to_kernel_layout
from mxfp4ref.moe.weights import MoEWeights

DIGESTS = json.loads((pathlib.Path(__file__).parent / "data/layout_real_digests.json").read_text())["digests"]


def hashed_bytes(shape, salt):
    """Deterministic bytes without an RNG (same formula as the external check scripts)."""
    x = np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(salt * 1000003)
    return (((x * np.uint64(0x9E3779B1)) >> np.uint64(13)) & np.uint64(0xFF)).astype(np.uint8).reshape(shape)


def hashed_weights(E, H, I):
    bias = lambda shape, salt: ((hashed_bytes(shape, salt).astype(np.float32) - 128) / 16).astype(np.float32)
    return MoEWeights(hashed_bytes((E, 2 * I, H // 2), 1), hashed_bytes((E, 2 * I, H // 32), 2),
                      hashed_bytes((E, H, I // 2), 3), hashed_bytes((E, H, I // 32), 4),
                      bias((E, 2 * I), 5), bias((E, H), 6))


def _cases():
    groups = {}
    for key in DIGESTS:
        backend, shape, _ = key.split("|")
        groups.setdefault((backend, tuple(map(int, shape.split(",")))), []).append(key)
    for (backend, shape), keys in sorted(groups.items()):
        marks = [pytest.mark.slow] if shape[1] >= 2880 else []      # gpt-oss sizes
        yield pytest.param(backend, shape, sorted(keys), id=f"{backend}-{'x'.join(map(str, shape))}", marks=marks)


def test_every_backend_has_recorded_real_outputs_or_is_listed_unverified():
    recorded = {k.split("|")[0] for k in DIGESTS}
    from mxfp4ref.layouts import UNVERIFIED
    assert recorded | set(UNVERIFIED) == set(BACKENDS)


@pytest.mark.parametrize("backend,shape,keys", list(_cases()))
def test_layout_matches_real_implementation(backend, shape, keys):
    kw = to_kernel_layout(hashed_weights(*shape), backend)
    for key in keys:
        name = key.split("|")[2]
        want_digest, want_shape, want_dtype = DIGESTS[key]
        buf = getattr(kw, name)
        assert list(buf.shape) == want_shape, name
        assert str(buf.dtype) == want_dtype, name
        assert hashlib.sha256(np.ascontiguousarray(buf).tobytes()).hexdigest()[:16] == want_digest, name
