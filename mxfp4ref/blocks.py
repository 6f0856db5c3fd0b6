"""The kernel boundary: quantize / dequantize a float32 (rows, K) matrix block by block.

Blocks are ``cfg.block_size`` consecutive elements of a row. ``quantize()`` and ``dequantize()``
(mxfp4ref/quantize.py) validate arguments, move the block axis last and flatten to (rows, K), then
call these functions (``backend="numpy"``) or the functions of the same name and signature in
``mxfp4ref._numba_quant`` (``backend="numba"``), which must return identical bytes on every input.
The semantics of every ``cfg`` field are written in mxfp4ref/config.py::QuantConfig.
"""
from __future__ import annotations

import numpy as np

from .config import AmaxNaN, EdgeMultiplier, ElemFormat, QuantConfig
from .dtypes import sign_bits
from .e2m1 import E2M1_VALUES
from .fp8 import decode_fp8
from .rounding import Rounding, round_magnitude
from .scales import scale_bytes


def block_amax(xb: np.ndarray, amax_nan: AmaxNaN) -> np.ndarray:
    """(rows, nblocks, bs) float32 -> (rows, nblocks) float32 max |x| (NaN policy per ``amax_nan``)."""
    mag = np.abs(xb)
    if amax_nan is AmaxNaN.PROPAGATE:
        return mag.max(axis=-1)                              # NaN anywhere -> NaN
    return np.where(np.isnan(mag), np.float32(0), mag).max(axis=-1)  # NaN skipped; all-NaN -> 0


def multipliers(b: np.ndarray, edge: EdgeMultiplier) -> np.ndarray:
    """Scale bytes (uint8) -> float32 element multipliers 2^(127-b); bytes 0x00/0xFF per ``edge``."""
    b = b.astype(np.int64)
    m = np.ldexp(np.float64(1.0), 127 - b).astype(np.float32)    # exact: 2^127 .. 2^-127
    if edge is EdgeMultiplier.EXACT:
        return np.where(b == 0xFF, np.float32(np.nan), m).astype(np.float32)
    return np.where((b == 0) | (b == 0xFF), np.float32(0), m).astype(np.float32)


def encode_elements(s: np.ndarray, cfg: QuantConfig) -> np.ndarray:
    """Scaled float32 values (any shape) -> uint8 codes of cfg.elem (sign bit | magnitude code)."""
    nan = np.isnan(s)
    mag = np.where(nan, np.float32(0), np.abs(s))
    mag_code = round_magnitude(mag, cfg.elem.grid, cfg.rounding)   # saturating, +inf -> max
    mag_code = np.where(nan, cfg.nan_magnitude_code(), mag_code)
    sign = sign_bits(s)
    if cfg.rounding is Rounding.MX_NEAREST:
        sign = np.where(s == 0, 0, sign)                     # torch.sign(+-0.0) == 0
    return (mag_code | (sign << cfg.elem.sign_bit)).astype(np.uint8)


def quantize_blocks(x: np.ndarray, cfg: QuantConfig) -> tuple[np.ndarray, np.ndarray]:
    """x: float32 (rows, K), K % cfg.block_size == 0
    -> codes uint8 (rows, K) (one code per element, unpacked), scale_bytes uint8 (rows, K // bs).
    """
    rows, K = x.shape
    bs = cfg.block_size
    xb = x.reshape(rows, K // bs, bs)                        # (rows, nblocks, bs)
    amax = block_amax(xb, cfg.amax_nan)                      # (rows, nblocks) float32
    b = scale_bytes(amax, cfg)                               # (rows, nblocks) uint8
    mult = multipliers(b, cfg.edge_multiplier)               # (rows, nblocks) float32
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        s = xb * mult[:, :, None]                            # one float32 multiply per element
    # a NaN multiplier (EXACT, byte 0xFF) makes every element +NaN, the multiplier's own NaN
    s = np.where(np.isnan(mult)[:, :, None], np.float32(np.nan), s)
    codes = encode_elements(s, cfg)                          # (rows, nblocks, bs) uint8
    return codes.reshape(rows, K), b


def decode_elements(codes: np.ndarray, elem: ElemFormat) -> np.ndarray:
    """uint8 codes -> float64 element values (exact)."""
    if elem is ElemFormat.E2M1:
        return E2M1_VALUES.astype(np.float64)[codes]          # 16-entry table, looked up in float64
    return decode_fp8(codes, elem.value)


def dequantize_blocks_f64(codes: np.ndarray, scale_bytes: np.ndarray,
                          cfg: QuantConfig) -> np.ndarray:
    """Exact values in float64: element * 2^(b-127); byte 0xFF -> NaN for the whole block."""
    rows, K = codes.shape
    bs = cfg.block_size
    v = decode_elements(codes, cfg.elem).reshape(rows, K // bs, bs)
    b = scale_bytes.astype(np.int64)                          # (rows, K // bs)
    scale = np.ldexp(1.0, b - 127)                            # 2^(b-127), exact in float64
    scale[b == 0xFF] = np.nan                                 # 0xFF: the whole block is NaN
    out = v * scale[:, :, None]                               # exact: times a power of two
    return out.reshape(rows, K)


def dequantize_blocks(codes: np.ndarray, scale_bytes: np.ndarray, cfg: QuantConfig) -> np.ndarray:
    """codes uint8 (rows, K), scale_bytes uint8 (rows, K // bs) -> float32 (rows, K).

    OCP decode: element value * 2^(b - 127) (byte 0 = 2^-127), byte 0xFF -> NaN. The product is
    rounded once to float32; it is exact except above float32's range (e.g. 4 * 2^127), which
    becomes +-inf as IEEE rounding says.
    """
    with np.errstate(over="ignore"):
        return dequantize_blocks_f64(codes, scale_bytes, cfg).astype(np.float32)
