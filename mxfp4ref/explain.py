"""``mxfp4ref explain``: quantize one block of 32 values and show every step, the page a student wants.

For the block it prints amax and its float32 bit fields, the E8M0 scale byte each scale rule picks
(floor, ceil, even, rceil), and then, under the chosen convention (``--scale-rule``, ``--rounding``
or ``--preset``), one line per element: the input, the scaled value the element rounding sees, the
two E2M1 grid points around it, the chosen 4-bit code in binary, the decoded value and the error.
Every number comes from the spec's own functions (mxfp4ref/blocks.py, mxfp4ref/scales.py), and the
result is checked against ``quantize()``. See spec/05-explain-and-numba.md.

    mxfp4ref explain                              # the default block (shows ties and clipping)
    mxfp4ref explain --seed 3 --scale-rule rceil
    mxfp4ref explain --values 6.5,-5,3.5,... --preset torchao-even
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import blocks
from .config import QuantConfig
from .e2m1 import E2M1_GRID, E2M1_VALUES
from .packing import pack_fp4
from .quantize import quantize, resolve_config
from .rounding import Rounding
from .scales import ScaleRule, scale_bytes

BLOCK = 32

# A block that shows the interesting cases at once: amax 6.5 has significand 1.625, so FLOOR and
# EVEN pick 2^0 (6.5 clips to 6) while CEIL and RCEIL pick 2^1; at scale 2^0 it holds every E2M1
# midpoint (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5), exact grid points, signed zeros and tiny values.
DEFAULT_BLOCK = (6.5, -5.0, 3.5, -2.5, 1.75, 1.25, 0.75, -0.25, 0.3, -0.1, 0.0, -0.0,
                 4.2, -3.3, 2.9, 1.1, 0.6, -0.9, 1.6, 2.2, -4.7, 5.9, 0.05, -1.4,
                 3.0, -6.0, 0.5, 1.0, -1.5, 2.0, 4.0, 0.01)

RULE_NOTES = {
    ScaleRule.FLOOR: "floor(log2 amax) - 2          OCP MX v1.0 6.3, torchao FLOOR, microxcaling",
    ScaleRule.CEIL: "ceil(log2 amax) - 2           torchao CEIL",
    ScaleRule.EVEN: "amax rounded to 1 mantissa bit, then floor - 2   torchao EVEN, Quark",
    ScaleRule.RCEIL: "ceil(log2(amax / 6))          torchao RCEIL, NVIDIA cvt.rp, triton ROUND_UP",
}


@dataclasses.dataclass
class Explanation:
    """Everything ``explain`` prints, as arrays (index i = element i of the block)."""
    x: np.ndarray              # float32 (32,) the input
    cfg: QuantConfig           # the chosen convention
    preset: str | None
    amax: np.float32           # max |x| under cfg.amax_nan
    rule_bytes: dict           # ScaleRule -> scale byte under that rule (OCP edge conventions)
    byte: int                  # the chosen scale byte
    multiplier: np.float32     # what every element is multiplied by
    scaled: np.ndarray         # float32 (32,) x * multiplier
    lower: np.ndarray          # float64 (32,) signed grid point at or toward zero from scaled
    upper: np.ndarray          # float64 (32,) signed grid point at or away from zero (6 if beyond)
    codes: np.ndarray          # uint8 (32,) E2M1 codes
    decoded: np.ndarray        # float64 (32,) code value * 2^(byte-127) (exact; NaN if byte 0xFF)
    error: np.ndarray          # float64 (32,) decoded - x
    packed: np.ndarray         # uint8 (16,) element 2i in the low nibble of byte i


def neighbours(scaled: np.ndarray):
    """Signed E2M1 grid points around each scaled value: (toward zero, away from zero).

    A magnitude above 6 has 6 below it and nothing above: both are 6 (it saturates). NaN -> NaN.
    """
    m = np.abs(scaled.astype(np.float64))
    lo_i = np.clip(np.searchsorted(E2M1_GRID, m, side="right") - 1, 0, 7)   # largest point <= m
    hi_i = np.clip(np.searchsorted(E2M1_GRID, m, side="left"), 0, 7)        # smallest point >= m
    sign = np.where(np.signbit(scaled), -1.0, 1.0)
    nan = np.isnan(scaled)
    lower = np.where(nan, np.nan, sign * E2M1_GRID[lo_i])
    upper = np.where(nan, np.nan, sign * E2M1_GRID[hi_i])
    return lower, upper


def explain_block(values, *, scale_rule=None, rounding=None, preset=None) -> Explanation:
    """Quantize one block of 32 values step by step with the spec's functions."""
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    if x.size != BLOCK:
        raise ValueError(f"values: expected {BLOCK} values (one MXFP4 block), got {x.size}")
    cfg = resolve_config(scale_rule, rounding, BLOCK, preset)
    xb = x.reshape(1, 1, BLOCK)
    amax = blocks.block_amax(xb, cfg.amax_nan)                       # (1, 1)
    rule_bytes = {r: int(scale_bytes(amax, QuantConfig(scale_rule=r))[0, 0]) for r in ScaleRule}
    b = scale_bytes(amax, cfg)                                       # (1, 1) uint8
    mult = blocks.multipliers(b, cfg.edge_multiplier)                # (1, 1) float32
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        scaled = (xb * mult[:, :, None]).reshape(BLOCK)
    if np.isnan(mult[0, 0]):                                         # byte 0xFF, EXACT: all +NaN
        scaled = np.full(BLOCK, np.nan, np.float32)
    codes = blocks.encode_elements(scaled, cfg)
    decoded = blocks.dequantize_blocks_f64(codes.reshape(1, BLOCK), b, cfg).reshape(BLOCK)
    lower, upper = neighbours(scaled)
    packed = pack_fp4(codes)
    # the walk-through must be the same computation as the public API
    t = quantize(x.reshape(1, BLOCK), scale_rule=scale_rule, rounding=rounding, preset=preset)
    assert t.scales[0, 0] == b[0, 0] and np.array_equal(t.packed[0], packed), "explain != quantize"
    with np.errstate(invalid="ignore"):
        error = decoded - x.astype(np.float64)
    return Explanation(x, cfg, preset, np.float32(amax[0, 0]), rule_bytes, int(b[0, 0]),
                       np.float32(mult[0, 0]), scaled, lower, upper, codes, decoded, error, packed)


# --------------------------------------------------------------------------- text


def f32_fields(v) -> str:
    """'0x40d00000 = sign 0 | exponent 10000001 (129 -> 2^2) | mantissa 101000...0 (1.625)'."""
    bits = int(np.array(v, dtype=np.float32).view(np.uint32))
    s, e, m = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if e == 0xFF:
        what = "NaN" if m else "Inf"
        return f"{bits:#010x} = sign {s} | exponent 11111111 ({what}) | mantissa {m:023b}"
    if e == 0:
        meaning = f"subnormal: 0.{m:023b}b x 2^-126"
        sig = m / 2**23
    else:
        meaning = f"{e} -> 2^{e - 127}"
        sig = 1 + m / 2**23
    return (f"{bits:#010x} = sign {s} | exponent {e:08b} ({meaning}) | mantissa {m:023b} "
            f"(significand {sig:.9g})")


def byte_text(b: int) -> str:
    if b == 0xFF:
        return "0xFF = NaN (the whole block decodes to NaN)"
    return f"{b:3d} = 2^{b - 127}" + (" (byte 0: 2^-127, the smallest scale)" if b == 0 else "")


def code_text(c: int) -> str:
    """'1 10 1 (0xd)': sign, 2 exponent bits, 1 mantissa bit."""
    return f"{c >> 3} {(c >> 1) & 3:02b} {c & 1} (0x{c:x})"


def why(scaled: float, lower: float, upper: float, code: int, cfg: QuantConfig) -> str:
    """Short reason for the chosen code."""
    if np.isnan(scaled):
        return "NaN: E2M1 has none, code by the convention"
    m = abs(float(scaled))
    v = abs(float(E2M1_VALUES[code]))
    if m > 6:
        return "above 6: saturates to 6"
    if m == abs(lower) and m == abs(upper):
        return "exact"
    mid = (abs(lower) + abs(upper)) / 2
    if m == mid:
        return {Rounding.RNE: "tie -> even code", Rounding.AWAY: "tie -> away from 0",
                Rounding.MX_NEAREST: "tie -> away from 0"}.get(cfg.rounding, "tie")
    if cfg.rounding is Rounding.ZERO:
        return "toward zero"
    if (m < mid and v == abs(upper)) or (m > mid and v == abs(lower)):
        return "the farther point: float32 arithmetic of mx-nearest"
    return "nearer"


def render(ex: Explanation, source: str = "") -> str:
    cfg = ex.cfg
    lines = []
    w = lines.append
    w(f"MXFP4 block of {BLOCK} values{(' (' + source + ')') if source else ''}")
    w("  An MXFP4 block stores one shared E8M0 scale byte b (the power of two 2^(b-127)) and 32 FP4")
    w("  E2M1 codes (sign, 2 exponent bits, 1 mantissa bit: magnitudes 0 0.5 1 1.5 2 3 4 6).")
    w("  Value of element i = E2M1(code_i) * 2^(b-127).")
    w("")
    w(f"amax = max|x| = {float(ex.amax)!r}")
    w(f"  float32 bits {f32_fields(ex.amax)}")
    w("")
    w("Scale byte each rule picks for this amax (E2M1's largest power of two is 4 = 2^2):")
    for r in ScaleRule:
        mark = "  <- chosen" if (r is cfg.scale_rule) else ""
        w(f"  {r.value:6s} b = {byte_text(ex.rule_bytes[r]):34s} {RULE_NOTES[r]}{mark}")
    conv = f"preset {ex.preset!r}: " if ex.preset else ""
    w("")
    w(f"Chosen: {conv}scale_rule={cfg.scale_rule.value}, rounding={cfg.rounding.value} -> scale byte "
      f"{byte_text(ex.byte)}")
    if ex.byte != ex.rule_bytes[cfg.scale_rule]:
        w(f"  (this preset's edge conventions change the byte from {ex.rule_bytes[cfg.scale_rule]})")
    w(f"  every element is multiplied by {float(ex.multiplier)!r} (float32), then rounded to the E2M1 grid")
    w("")
    w("  grid lo / grid hi: the E2M1 grid points on either side of |scaled| (carrying its sign)")
    hdr = (f"{'i':>2}  {'input':>15}  {'scaled':>15}  {'grid lo':>10} {'grid hi':>10}  "
           f"{'code s ee m':>14}  {'decoded':>14}  {'error':>11}  why")
    w(hdr)
    w("-" * len(hdr))
    for i in range(BLOCK):
        w(f"{i:2d}  {float(ex.x[i]):15.9g}  {float(ex.scaled[i]):15.9g}  {ex.lower[i]:10g} "
          f"{ex.upper[i]:10g}  {code_text(int(ex.codes[i])):>14}  {ex.decoded[i]:14.7g}  "
          f"{ex.error[i]:11.4g}  {why(ex.scaled[i], ex.lower[i], ex.upper[i], int(ex.codes[i]), cfg)}")
    w("")
    finite = np.isfinite(ex.error)
    if finite.any():
        w(f"max |error| = {np.max(np.abs(ex.error[finite])):.6g}   "
          f"(half a grid step at the top binade is 2^(b-127) = {2.0 ** (ex.byte - 127) if ex.byte != 255 else float('nan'):.6g})")
    w(f"packed bytes (element 2i in the low nibble, 2i+1 in the high): {bytes(ex.packed).hex(' ')}")
    w(f"scale byte: 0x{ex.byte:02x}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_values(text: str) -> np.ndarray:
    out = []
    for tok in text.replace(" ", "").split(","):
        if not tok:
            continue
        try:
            out.append(float.fromhex(tok) if tok.lower().lstrip("+-").startswith("0x") else float(tok))
        except ValueError:
            raise ValueError(f"--values: cannot read {tok!r} as a number") from None
    if len(out) != BLOCK:
        raise ValueError(f"--values: expected {BLOCK} comma-separated numbers (one block), got {len(out)}")
    return np.array(out, dtype=np.float64)


def seeded_block(seed: int) -> np.ndarray:
    """32 float32 values: normal, times one power of two 2^-3..2^3 per block, some exact ties."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(BLOCK) * 2.0 ** int(rng.integers(-3, 4))
    return x.astype(np.float32)


def register(subparsers) -> None:
    import argparse

    from .presets import PRESETS

    p = subparsers.add_parser(
        "explain", help="show step by step how one block of 32 values becomes MXFP4",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--values", help="32 comma-separated numbers (decimal, inf, nan or hex 0x1.8p3)")
    src.add_argument("--seed", type=int, help="draw the block from this seed instead")
    p.add_argument("--scale-rule", choices=[r.value for r in ScaleRule], default=None,
                   help="scale rule (default floor, or the preset's)")
    p.add_argument("--rounding", choices=[r.value for r in Rounding], default=None,
                   help="element rounding (default rne, or the preset's)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="reproduce one implementation (fixes scale rule, rounding and edge cases)")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    try:
        if args.values is not None:
            x, source = parse_values(args.values), "from --values"
            x32 = x.astype(np.float32)
            if not np.array_equal(x32.astype(np.float64), x, equal_nan=True):
                print("note: --values rounded to float32 first", file=sys.stderr)
            x = x32
        elif args.seed is not None:
            x, source = seeded_block(args.seed), f"drawn with --seed {args.seed}"
        else:
            x, source = np.array(DEFAULT_BLOCK, np.float32), "the default block; try --values or --seed"
        ex = explain_block(x, scale_rule=args.scale_rule, rounding=args.rounding, preset=args.preset)
    except ValueError as e:
        print(f"mxfp4ref explain: error: {e}", file=sys.stderr)
        return 2
    print(render(ex, source))
    return 0
