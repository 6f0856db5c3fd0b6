"""Run every kernel of cupy_kernels once at a small size (for compute-sanitizer memcheck / racecheck),
the fused MoE layer in every configuration included.

    compute-sanitizer --tool memcheck python3 tools/sanitize_kernels.py
Shapes are chosen so that partial grid-stride iterations, odd block counts and padding occur.
Exits non-zero if any result differs from the spec (so a sanitizer run also checks values).
"""
import sys

import ml_dtypes
import numpy as np

import cupy as cp
import cupy_kernels as ck
import mxfp4ref


def main():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, 96)) * 4).astype(np.float32)
    ok = True
    for dt in (np.float32, np.float16, ml_dtypes.bfloat16):
        xd = x.astype(dt)
        xg = cp.asarray(xd.view(np.uint16)) if dt == ml_dtypes.bfloat16 else cp.asarray(xd)
        dtype = "bfloat16" if dt == ml_dtypes.bfloat16 else None
        want = mxfp4ref.quantize(xd, preset="ocp")
        for naive in (False, True):
            q = ck.quantize(xg, preset="ocp", dtype=dtype, naive=naive)
            ok &= np.array_equal(q.packed.get(), want.packed) and np.array_equal(q.scales.get(), want.scales)
            q8 = ck.quantize_mxfp8(xg, dtype=dtype, naive=naive)
            w8 = mxfp4ref.quantize_mxfp8(xd)
            ok &= np.array_equal(q8.data.get(), w8.data)
    q = ck.quantize(cp.asarray(np.concatenate([x, x[:27]])), axis=0)          # (64, 96), blocks along 0
    for out in ("float32", "bfloat16"):
        for naive in (False, True):
            y = ck.dequantize(q.packed, q.scales, axis=0, dtype=out, naive=naive)
            ref = mxfp4ref.dequantize(q.packed.get(), q.scales.get(), axis=0,
                                      dtype=np.float32 if out == "float32" else ml_dtypes.bfloat16)
            ok &= np.array_equal(y.get().view(np.uint8), ref.view(np.uint8))
    logits = rng.standard_normal((77, 40)).astype(np.float32)
    w, i = ck.route(cp.asarray(logits), 4)
    ww, iw = mxfp4ref.route(logits, 4)
    ok &= np.array_equal(i.get(), iw) and np.array_equal(w.get().view(np.uint32), ww.view(np.uint32))
    ids = rng.integers(0, 40, (77, 4)).astype(np.int32)
    want = mxfp4ref.align_block_size(ids, 16, 40)
    for naive in (False, True):
        got = ck.align_block_size(cp.asarray(ids), 16, 40, naive=naive)
        ok &= all(np.array_equal(g.get(), w_) for g, w_ in zip(got, want))
    big = rng.integers(0, 40, (3000, 4)).astype(np.int32)             # 3 blocks in the fast path
    want = mxfp4ref.align_block_size(big, 16, 40)
    for fused in (False, True):
        got = ck.align_block_size(cp.asarray(big), 16, 40, fused=fused)
        ok &= all(np.array_equal(g.get(), w_) for g, w_ in zip(got, want))
    ok &= fused_moe_all_configs(rng)
    ok &= sort_paths(rng)
    cp.cuda.Device().synchronize()
    print("sanitize_kernels: values", "OK" if ok else "DIFFER")
    return 0 if ok else 1


def fused_moe_all_configs(rng):
    """The fused MoE layer in every kernel configuration (the Hopper ones where the device has wgmma) and
    the naive path, at token counts giving partial tiles, empty experts and small-tile lists (E=5, k=2,
    H=96, I=160: K ends one 32-block past a superblock). Checked here: finite outputs only (the error
    bound is the GPU tests' job)."""
    from cupy_kernels import moe as fm
    from mxfp4ref.moe.random_weights import random_moe_weights
    w = random_moe_weights(5, 96, 160, seed=1)
    dw = fm.to_device(w, keep_raw=True)
    configs = [c for c in fm.CONFIGS if c not in fm.HOPPER_CONFIGS or fm.hopper_available()]
    ok = True
    for T in (1, 7, 333):
        x = rng.standard_normal((T, 96)).astype(ml_dtypes.bfloat16)
        logits = rng.standard_normal((T, 5)).astype(np.float32)
        tw, ids = mxfp4ref.route(logits, 2)
        for cfg in configs:
            for pdl in (None, True):          # default launches, and PDL for every configuration
                out = fm.fused_moe(x, dw, tw, ids, config=cfg, pdl=pdl).get().view(ml_dtypes.bfloat16)
                ok &= bool(np.isfinite(out.astype(np.float32)).all())
        fm.fused_moe(x, dw, tw, ids, impl="naive")
        fm.moe_forward(x, cp.asarray(logits), dw, 2)
    return ok


def sort_paths(rng):
    """moe_sort and the three-kernel sort (blocks of 1000 slots) give the same outputs; and one layer at
    8192 tokens x top-2 (16384 slots: the three-kernel sort inside fused_moe, with its default config)."""
    import types

    from cupy_kernels import moe as fm
    from mxfp4ref.moe.random_weights import random_moe_weights
    n, E = 5003, 40
    ids = cp.asarray(rng.integers(-1, E + 1, n).astype(np.int32))
    got = []
    for chunk in (0, 1000):
        ws = types.SimpleNamespace(sorted_slot=cp.zeros(n, cp.int32), tiles=cp.zeros((n // 64 + E + 1, 4), cp.int32),
                                   tiles_small=cp.zeros((2 * E, 4), cp.int32), meta=cp.zeros(3, cp.int32),
                                   local_ids=cp.zeros(n, cp.int32), sort_counts=None)
        for name, grid, block, args in fm.sort_launches(ids, None, n, E, E, 64, 32, ws, chunk=chunk):
            fm._kernel(name)(grid, block, args)
        got.append([a.get() for a in (ws.sorted_slot, ws.tiles, ws.tiles_small, ws.meta, ws.local_ids)])
    m = got[0][3]
    same = (np.array_equal(got[0][3], got[1][3]) and np.array_equal(got[0][4], got[1][4])
            and np.array_equal(got[0][0][:m[1]], got[1][0][:m[1]])
            and np.array_equal(got[0][1][:m[0]], got[1][1][:m[0]])
            and np.array_equal(got[0][2][:m[2]], got[1][2][:m[2]]))
    w = random_moe_weights(5, 96, 160, seed=2)
    T = 8192
    x = rng.standard_normal((T, 96)).astype(ml_dtypes.bfloat16)
    tw, ids2 = mxfp4ref.route(rng.standard_normal((T, 5)).astype(np.float32), 2)
    out = fm.fused_moe(x, fm.to_device(w), tw, ids2).get().view(ml_dtypes.bfloat16)
    return same and bool(np.isfinite(out.astype(np.float32)).all())


if __name__ == "__main__":
    sys.exit(main())
