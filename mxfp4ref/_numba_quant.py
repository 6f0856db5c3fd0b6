"""The numba backend of the kernel boundary: ``quantize_blocks`` / ``dequantize_blocks``.

Same names, signatures and results (byte for byte) as mxfp4ref/blocks.py, for every
:class:`~mxfp4ref.config.QuantConfig`. The spec there is the definition; this module only makes it
fast: one compiled pass over the blocks (``@njit(parallel=True, cache=True)``), each block reading
its 32 float32 values once, working on float32 bit patterns.

How each step reproduces the NumPy spec exactly:

* amax: |x| as bits (``bits & 0x7FFFFFFF``) orders like the values for non-NaN floats, so the max
  of the bits is the bits of the max. A NaN makes amax NaN (PROPAGATE) or is skipped (IGNORE).
* scale byte: the same integer formulas as ``scales.scale_bytes`` on the bits; RCEIL's descale is
  the same single float32 multiply or divide. The one exception is ``Log2.FLOAT32``: the spec
  defines that rule as NumPy's float32 ``log2`` (whose last-ulp behaviour is library dependent),
  so this backend computes the block maxima in numba and then calls the spec's own
  ``scales.scale_bytes`` on them, which is the same NumPy function on the same float32 values.
* elements: one float32 multiply by the same float32 multiplier; the magnitude code is the number
  of thresholds the scaled value passes (``_tables``: the midpoints or grid points of
  ``rounding.round_magnitude``, each exact in float32, with ties sent the same way), so every
  comparison is the spec's; MX_NEAREST runs the spec's float32 arithmetic literally. Sign from
  the sign bit, NaN per ``cfg.nan_code``.
* dequantize: one float32 multiply of two exact float32s (element value, 2^(b-127)), which is the
  spec's exact product rounded once to float32; NaN for byte 0xFF.

All jitted code lives in this one file on purpose: numba's on-disk cache (cache=True) is keyed on
the file of the compiled function, so a helper imported from another module could change without
invalidating the cached kernels that inline it.
"""
from __future__ import annotations

import dataclasses

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from .blocks import decode_elements
from .config import (AmaxNaN, Descale, EdgeMultiplier, ElemFormat, EvenOverflow, Log2, NonFinite,
                     QuantConfig, SubnormalDescale)
from .rounding import Rounding
from .scales import ScaleRule, scale_bytes

# --------------------------------------------------------------------------- float32 <-> bits


@intrinsic
def _f32_bits(typingctx, x):
    """float32 -> its uint32 bit pattern (a register bitcast, no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, b):
    """Integer holding a 32-bit pattern (any integer type; the low 32 bits) -> float32."""
    if not isinstance(b, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if b.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif b.bitwidth < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(b), codegen


# --------------------------------------------------------------------------- cfg as integers
# Order of the int64 parameter vector handed to the kernels (enum members -> small ints).
_RULE = {ScaleRule.FLOOR: 0, ScaleRule.CEIL: 1, ScaleRule.EVEN: 2, ScaleRule.RCEIL: 3}
_ROUND = {Rounding.RNE: 0, Rounding.AWAY: 1, Rounding.ZERO: 2, Rounding.MX_NEAREST: 3}
_NONFINITE = {NonFinite.NAN_SCALE: 0, NonFinite.SATURATE: 1, NonFinite.TRITON: 2}
(P_BS, P_RULE, P_ROUND, P_EMAX, P_MBITS, P_SIGNBIT, P_IGNORE_NAN, P_NONFINITE, P_DIVIDE,
 P_BUMP, P_EDGE_ZERO, P_NANCODE, P_MAXBITS, P_RECIPBITS, P_LOG2F32, P_EVEN_OVF,
 N_PARAMS) = range(17)
_EVEN_OVF = {EvenOverflow.EXACT: 0, EvenOverflow.NAN_SCALE: 1, EvenOverflow.SATURATE: 2}
_LOG2 = {Log2.EXACT: 0, Log2.FLOAT32: 1, Log2.QUOTIENT: 2}
# The QuantConfig fields this backend implements; a new field must be added here (and to the
# kernels) before the backend accepts configs that have it.
_KNOWN_FIELDS = {"scale_rule", "rounding", "elem", "block_size", "amax_nan", "nonfinite", "descale",
                 "subnormal_descale", "edge_multiplier", "nan_code", "log2", "even_overflow"}


def _params(cfg: QuantConfig) -> np.ndarray:
    if not isinstance(cfg, QuantConfig):
        raise TypeError(f"cfg: expected a QuantConfig, got {type(cfg).__name__}")
    unknown = {f.name for f in dataclasses.fields(cfg)} - _KNOWN_FIELDS
    if unknown:
        raise NotImplementedError(f"cfg: the numba backend does not implement the QuantConfig "
                                  f"field(s) {sorted(unknown)}; use backend='numpy'")
    max32 = np.float32(cfg.elem.max_value)
    recip = np.float32(1.0) / max32                          # the spec's fl(1/max_elem)
    p = np.zeros(N_PARAMS, np.int64)
    p[P_BS] = cfg.block_size
    p[P_RULE] = _RULE[cfg.scale_rule]
    p[P_ROUND] = _ROUND[cfg.rounding]
    p[P_EMAX] = cfg.elem.emax
    p[P_MBITS] = cfg.elem.mbits
    p[P_SIGNBIT] = cfg.elem.sign_bit
    p[P_IGNORE_NAN] = cfg.amax_nan is AmaxNaN.IGNORE
    p[P_NONFINITE] = _NONFINITE[cfg.nonfinite]
    p[P_DIVIDE] = cfg.descale is Descale.DIVIDE
    p[P_BUMP] = cfg.subnormal_descale is SubnormalDescale.BUMP
    p[P_EDGE_ZERO] = cfg.edge_multiplier is EdgeMultiplier.ZERO
    p[P_NANCODE] = cfg.nan_magnitude_code()
    p[P_MAXBITS] = int(np.array(max32).view(np.uint32))
    p[P_RECIPBITS] = int(np.array(recip).view(np.uint32))
    p[P_LOG2F32] = _LOG2[cfg.log2]
    p[P_EVEN_OVF] = _EVEN_OVF[cfg.even_overflow]
    return p


_TABLES: dict = {}


def _tables(elem: ElemFormat, rounding: Rounding):
    """Rounding tables of rounding.round_magnitude, recast as thresholds.

    Returns (grid float64, thr float32, up uint8). For RNE / AWAY / ZERO the magnitude
    code of m is the number of k with ``m > thr[k]`` or (``up[k]`` and ``m == thr[k]``): a prefix of
    k, since thr ascends. RNE: thr = midpoints, a tie at midpoint k (between codes k, k+1) goes up
    iff k is odd (to the even code k+1); AWAY: midpoints, ties up; ZERO: thr = grid[1:], equal goes
    up. Every threshold is exact in float32 (checked), as is every scaled value m.
    """
    key = (elem, rounding)
    if key not in _TABLES:
        grid = np.ascontiguousarray(elem.grid, dtype=np.float64)
        mids = (grid[1:] + grid[:-1]) / 2
        k = np.arange(len(mids))
        if rounding is Rounding.ZERO:
            thr, up = grid[1:], np.ones(len(mids), bool)
        elif rounding is Rounding.AWAY:
            thr, up = mids, np.ones(len(mids), bool)
        else:                                            # RNE (MX_NEAREST uses grid itself)
            thr, up = mids, k % 2 == 1
        thr32 = thr.astype(np.float32)
        assert np.array_equal(thr32.astype(np.float64), thr), "thresholds must be float32-exact"
        _TABLES[key] = (grid, thr32, up.astype(np.uint8))
    return _TABLES[key]


# --------------------------------------------------------------------------- per-block pieces


@njit(cache=True, inline="always")
def _searchsorted(a, v, right):
    """np.searchsorted(a, v, side='right' if right else 'left'): entries < v (or <= v)."""
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v or (right and a[mid] == v):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _amax_bits(xb, start, bs, ignore_nan):
    """Bits of max |x| over xb[start:start+bs] (uint32 view); NaN -> 0x7FC00000 unless ignored."""
    best = np.uint32(0)
    for i in range(start, start + bs):                  # NaN bits sort above +inf's 0x7F800000
        best = max(best, xb[i] & np.uint32(0x7FFFFFFF))
    if best <= np.uint32(0x7F800000):
        return best
    if not ignore_nan:
        return np.uint32(0x7FC00000)
    best = np.uint32(0)                                  # IGNORE: max over the non-NaN elements
    for i in range(start, start + bs):
        a = xb[i] & np.uint32(0x7FFFFFFF)
        if a <= np.uint32(0x7F800000):
            best = max(best, a)
    return best


@njit(cache=True, inline="always")
def _scale_byte(A, p):
    """E8M0 byte for an amax with bits A (mxfp4ref/scales.py::scale_bytes, one block)."""
    E = (np.int64(A) >> 23) & 0xFF
    M = np.int64(A) & 0x7FFFFF
    rule = p[P_RULE]
    emax = p[P_EMAX]
    nonfinite = E == 0xFF
    if rule == 0:                                        # FLOOR
        b = E - emax
        if p[P_LOG2F32] == 2 and E == emax and M == 0x7FFFFF:
            b = 1                                        # Log2.QUOTIENT: fl32(amax/2^emax) rounds up to 2^-126
    elif rule == 1:                                      # CEIL
        b = E + (1 if M != 0 else 0) - emax
    elif rule == 2:                                      # EVEN
        half = np.int64(1) << (23 - p[P_MBITS] - 1)
        Er = (np.int64(A) + half) >> 23                  # may carry to 255 (= 2^128) for E = 254
        b = Er - emax
        if Er == 0xFF and not nonfinite:                 # carried: per cfg.even_overflow
            if p[P_EVEN_OVF] == 1:
                b = 0xFF
            elif p[P_EVEN_OVF] == 2:
                b = 0xFE
    else:                                                # RCEIL
        amax = _bits_f32(A)
        if p[P_DIVIDE]:
            D = amax / _bits_f32(np.uint32(p[P_MAXBITS]))
        else:
            D = amax * _bits_f32(np.uint32(p[P_RECIPBITS]))
        Db = np.int64(_f32_bits(np.float32(D)))
        ED = (Db >> 23) & 0xFF
        MD = Db & 0x7FFFFF
        if ED == 0:
            if p[P_BUMP]:
                b = 1 if MD != 0 else 0
            else:
                b = 1 if MD > 0x400000 else 0
        else:
            b = ED + (1 if MD != 0 else 0)
    if b != 0xFF:                                        # (0xFF only from EVEN's NAN_SCALE)
        if b < 0:
            b = 0
        elif b > 254:
            b = 254
    if nonfinite:
        nf = p[P_NONFINITE]
        if nf == 0:
            b = 0xFF
        elif nf == 1:
            b = 0xFE
        else:                                            # TRITON
            is_nan = (np.int64(A) & 0x7FFFFFFF) > 0x7F800000
            b = (0x00 if rule == 3 else 0xFF) if is_nan else 0xFF
    return b


@njit(cache=True, inline="always")
def _count_passed(m, thr, up):
    """Magnitude code by thresholds (see _tables): number of k with m > thr[k] or (up[k], ==)."""
    n = thr.shape[0]
    if n <= 16:                                          # E2M1: 7 compares, no branches
        c = 0
        for k in range(n):
            c += (m > thr[k]) | ((up[k] != 0) & (m == thr[k]))
        return c
    lo, hi = 0, n                                        # FP8: the passed k form a prefix
    while lo < hi:
        mid = (lo + hi) >> 1
        if (m > thr[mid]) or (up[mid] != 0 and m == thr[mid]):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _mx_nearest_code(m, grid):
    """rounding._mx_nearest for one non-negative float64 magnitude (no NaN)."""
    top = grid.shape[0] - 1
    below = _searchsorted(grid, m, True) - 1
    if below > top - 1:
        below = top - 1
    q = grid[below + 1] - grid[below]
    t = np.float32(m / q)
    r = np.float64(np.floor(t + np.float32(0.5))) * q
    if r > grid[top]:
        r = grid[top]
    return _searchsorted(grid, r, False)


@njit(cache=True, inline="always")
def _multiplier(b, edge_zero):
    """float32 multiplier of a block with byte b (blocks.multipliers); NaN for 0xFF (EXACT)."""
    if b == 0xFF:
        return np.float32(0.0) if edge_zero else np.float32(np.nan)
    if b == 0 and edge_zero:
        return np.float32(0.0)
    e = 254 - b                                          # biased exponent of 2^(127-b)
    if e >= 1:
        return _bits_f32(np.uint32(e << 23))
    return _bits_f32(np.uint32(0x00400000))             # b == 254: 2^-127, subnormal


# --------------------------------------------------------------------------- kernels
# Each kernel is a serial function over a range of blocks [j0, j1) plus a parallel driver that
# hands chunks of CHUNK blocks to it. (LLVM vectorizes the serial functions' element loops; written
# directly inside a prange body, the same loops ran 5-9x slower.)

CHUNK = 4096


@njit(cache=True)
def _quantize_chunk(xf, sb_in, p, grid, thr, up, codes, sbytes, j0, j1):
    """Blocks j0..j1-1 of xf (float32, flat): codes uint8 per element, sbytes uint8 per block.
    sb_in: precomputed bytes (Log2.FLOAT32) or empty. Any grid and rounding."""
    bs = p[P_BS]
    xb = xf.view(np.uint32)
    mx_nearest = p[P_ROUND] == 3
    sign_shift = np.uint32(p[P_SIGNBIT])
    nan_code = np.uint32(p[P_NANCODE])
    edge_zero = p[P_EDGE_ZERO] != 0
    have_sb = sb_in.shape[0] == sbytes.shape[0]
    for j in range(j0, j1):
        start = j * bs
        if have_sb:
            b = np.int64(sb_in[j])
        else:
            b = _scale_byte(_amax_bits(xb, start, bs, p[P_IGNORE_NAN] != 0), p)
        sbytes[j] = np.uint8(b)
        if b == 0xFF and not edge_zero:                  # EXACT: every element becomes +NaN
            for i in range(start, start + bs):
                codes[i] = np.uint8(nan_code)
            continue
        mult = _multiplier(b, edge_zero)
        for i in range(start, start + bs):
            s = np.float32(xf[i] * mult)
            sbits = _f32_bits(s)
            sign = sbits >> np.uint32(31)
            m = abs(s)
            if mx_nearest:
                mag = np.uint32(_mx_nearest_code(np.float64(m), grid))
                if s == 0:                               # torch.sign(+-0) == 0
                    sign = np.uint32(0)
            else:
                mag = np.uint32(_count_passed(m, thr, up))
            if (sbits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
                mag = nan_code                           # NaN scaled value
            codes[i] = np.uint8(mag | (sign << sign_shift))


@njit(cache=True)
def _quantize_chunk_small(xf, p, thr, up, codes, sbytes, j0, j1):
    """The same as _quantize_chunk for a 7-threshold grid (E2M1) and RNE / AWAY / ZERO, with the
    thresholds in registers and a branch-free element loop."""
    bs = p[P_BS]
    xb = xf.view(np.uint32)
    sign_shift = np.uint32(p[P_SIGNBIT])
    nan_code = np.uint32(p[P_NANCODE])
    edge_zero = p[P_EDGE_ZERO] != 0
    ignore_nan = p[P_IGNORE_NAN] != 0
    t0, t1, t2, t3, t4, t5, t6 = thr[0], thr[1], thr[2], thr[3], thr[4], thr[5], thr[6]
    u0, u1, u2, u3, u4, u5, u6 = (up[0] != 0, up[1] != 0, up[2] != 0, up[3] != 0, up[4] != 0,
                                  up[5] != 0, up[6] != 0)
    for j in range(j0, j1):
        start = j * bs
        b = _scale_byte(_amax_bits(xb, start, bs, ignore_nan), p)
        sbytes[j] = np.uint8(b)
        if b == 0xFF and not edge_zero:                  # EXACT: every element becomes +NaN
            for i in range(start, start + bs):
                codes[i] = np.uint8(nan_code)
            continue
        mult = _multiplier(b, edge_zero)
        for i in range(start, start + bs):
            s = xf[i] * mult
            sbits = _f32_bits(s)
            m = abs(s)
            c = (np.uint32((m > t0) | (u0 & (m == t0))) + np.uint32((m > t1) | (u1 & (m == t1)))
                 + np.uint32((m > t2) | (u2 & (m == t2))) + np.uint32((m > t3) | (u3 & (m == t3)))
                 + np.uint32((m > t4) | (u4 & (m == t4))) + np.uint32((m > t5) | (u5 & (m == t5)))
                 + np.uint32((m > t6) | (u6 & (m == t6))))
            c = nan_code if (sbits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else c
            codes[i] = np.uint8(c | ((sbits >> np.uint32(31)) << sign_shift))


@njit(cache=True)
def _amax_chunk(xf, bs, ignore_nan, out, j0, j1):
    """Block maxima as float32 (for Log2.FLOAT32, whose bytes NumPy computes)."""
    xb = xf.view(np.uint32)
    for j in range(j0, j1):
        out[j] = _bits_f32(_amax_bits(xb, j * bs, bs, ignore_nan))


@njit(cache=True)
def _dequantize_chunk(codes, sbytes, bs, table, out, j0, j1):
    """codes uint8 (n,), sbytes uint8 (n // bs,), table float32 (256,) -> out float32 (n,).

    One float32 multiply of two exact float32s (element value, 2^(b-127)) is the exact product
    rounded once, the same number as the spec's exact float64 product cast to float32.
    """
    for j in range(j0, j1):
        b = np.uint32(sbytes[j])
        if b == 0xFF:
            for i in range(j * bs, (j + 1) * bs):
                out[i] = np.float32(np.nan)
            continue
        pw = _bits_f32((b << np.uint32(23)) if b != 0 else np.uint32(0x00400000))   # 2^(b-127)
        for i in range(j * bs, (j + 1) * bs):
            out[i] = table[codes[i]] * pw


@njit(parallel=True, cache=True)
def _quantize_kernel(xf, sb_in, p, grid, thr, up, codes, sbytes, small):
    nb = sbytes.shape[0]
    for c in prange((nb + CHUNK - 1) // CHUNK):
        j0, j1 = c * CHUNK, min(nb, (c + 1) * CHUNK)
        if small:
            _quantize_chunk_small(xf, p, thr, up, codes, sbytes, j0, j1)
        else:
            _quantize_chunk(xf, sb_in, p, grid, thr, up, codes, sbytes, j0, j1)


@njit(parallel=True, cache=True)
def _amax_kernel(xf, bs, ignore_nan, out):
    nb = out.shape[0]
    for c in prange((nb + CHUNK - 1) // CHUNK):
        _amax_chunk(xf, bs, ignore_nan, out, c * CHUNK, min(nb, (c + 1) * CHUNK))


@njit(parallel=True, cache=True)
def _dequantize_kernel(codes, sbytes, bs, table, out):
    nb = sbytes.shape[0]
    for c in prange((nb + CHUNK - 1) // CHUNK):
        _dequantize_chunk(codes, sbytes, bs, table, out, c * CHUNK, min(nb, (c + 1) * CHUNK))


# --------------------------------------------------------------------------- the boundary

# Below this many elements one thread is faster: waking the thread pool costs ~0.1-15 ms.
SERIAL_BELOW = 1 << 16


class _Threads:
    """Context manager: run the parallel kernels on 1 thread for small inputs (restores after)."""

    def __init__(self, n_elements: int):
        self.serial = n_elements < SERIAL_BELOW

    def __enter__(self):
        if self.serial:
            self.saved = numba.get_num_threads()
            numba.set_num_threads(1)

    def __exit__(self, *exc):
        if self.serial:
            numba.set_num_threads(self.saved)



def _check_matrix(a, name, dtype):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != 2:
        got = f"{a.dtype} array of {a.ndim} dimensions" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name}: expected a 2-D {np.dtype(dtype)} array, got {got}")


def quantize_blocks(x: np.ndarray, cfg: QuantConfig) -> tuple[np.ndarray, np.ndarray]:
    """x: float32 (rows, K), K % cfg.block_size == 0 -> (codes uint8 (rows, K), bytes (rows, K//bs)).

    Identical to mxfp4ref.blocks.quantize_blocks.
    """
    _check_matrix(x, "x", np.float32)
    rows, K = x.shape
    bs = cfg.block_size
    if K % bs:
        raise ValueError(f"x: expected a row length that is a multiple of block_size={bs}, got {K}")
    xf = np.ascontiguousarray(x).reshape(-1)
    nblocks = xf.size // bs
    p = _params(cfg)
    grid, thr, up = _tables(cfg.elem, cfg.rounding)
    codes = np.empty(xf.size, np.uint8)
    sbytes = np.empty(nblocks, np.uint8)
    with _Threads(xf.size):
        if cfg.log2 is Log2.FLOAT32:
            amax = np.empty(nblocks, np.float32)
            _amax_kernel(xf, bs, cfg.amax_nan is AmaxNaN.IGNORE, amax)
            sb_in = scale_bytes(amax, cfg)               # the spec's own NumPy log2
        else:
            sb_in = np.empty(0, np.uint8)
        small = len(thr) == 7 and cfg.rounding is not Rounding.MX_NEAREST and not len(sb_in)
        _quantize_kernel(xf, sb_in, p, grid, thr, up, codes, sbytes, small)
    return codes.reshape(rows, K), sbytes.reshape(rows, K // bs)


_DECODE: dict = {}


def _decode_table(elem: ElemFormat) -> np.ndarray:
    if elem not in _DECODE:
        n = 16 if elem is ElemFormat.E2M1 else 256
        t = np.full(256, np.nan)
        t[:n] = decode_elements(np.arange(n, dtype=np.uint8), elem)
        t32 = t.astype(np.float32)
        assert np.array_equal(t32.astype(np.float64), t, equal_nan=True), "element values are float32"
        _DECODE[elem] = t32
    return _DECODE[elem]


def dequantize_blocks(codes: np.ndarray, scale_bytes: np.ndarray, cfg: QuantConfig) -> np.ndarray:
    """codes uint8 (rows, K), scale_bytes uint8 (rows, K // bs) -> float32 (rows, K).

    Identical to mxfp4ref.blocks.dequantize_blocks.
    """
    _check_matrix(codes, "codes", np.uint8)
    _check_matrix(scale_bytes, "scale_bytes", np.uint8)
    rows, K = codes.shape
    bs = cfg.block_size
    if K % bs or scale_bytes.shape != (rows, K // bs):
        raise ValueError(f"scale_bytes: expected shape {(rows, K // bs)} for codes of shape "
                         f"{(rows, K)} in blocks of {bs}, got {scale_bytes.shape}")
    if cfg.elem is ElemFormat.E2M1 and codes.size and int(codes.max()) > 0xF:
        raise ValueError(f"codes: expected 4-bit E2M1 codes 0..15, got max {int(codes.max())}")
    cf = np.ascontiguousarray(codes).reshape(-1)
    out = np.empty(cf.size, np.float32)
    with _Threads(cf.size):
        _dequantize_kernel(cf, np.ascontiguousarray(scale_bytes).reshape(-1), bs,
                           _decode_table(cfg.elem), out)
    return out.reshape(rows, K)

