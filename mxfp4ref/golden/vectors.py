"""Canonical test vectors (spec/vectors/v1): small, language-neutral files any implementation can
consume. ``write_vectors(out_dir)`` regenerates them; the committed files must equal a fresh
regeneration byte for byte (tests/test_vectors.py).

Number encoding in the JSON files: every float32 is given twice, as its bit pattern in hex
(``"0x3fc00000"``, authoritative) and as a decimal (exact: every float32 is a float64 and Python's
``repr`` round-trips float64; NaN and infinities as the strings "nan", "inf", "-inf"). Packed FP4
bytes are hex strings, two characters per byte, byte 0 first. Integers are JSON integers.
"""
from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np

VERSION = "v1"
BF16 = ml_dtypes.bfloat16


# ---- encoding helpers --------------------------------------------------------------------------

def f32_hex(a) -> list[str]:
    return [f"0x{int(b):08x}" for b in np.asarray(a, np.float32).ravel().view(np.uint32)]


def f32_dec(a) -> list:
    out = []
    for v in np.asarray(a, np.float32).ravel().astype(np.float64):
        out.append(repr(float(v)) if not np.isfinite(v) else float(v))
    return out


def floats(a) -> dict:
    """A float32 array as {"shape", "bits", "values"}."""
    a = np.asarray(a, np.float32)
    return {"shape": list(a.shape), "bits": f32_hex(a), "values": f32_dec(a)}


def ints(a) -> dict:
    a = np.asarray(a)
    return {"shape": list(a.shape), "values": [int(v) for v in a.ravel()]}


def hexbytes(a) -> str:
    return np.ascontiguousarray(a, dtype=np.uint8).tobytes().hex()


def to_json(obj, indent: int = 0) -> str:
    """JSON with one key per line but lists of numbers and strings on one line (small and diffable)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + to_json(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)


def dump(path: Path, obj) -> None:
    path.write_text(to_json(obj) + "\n")


def _raw_normal(seed: int, n: int) -> np.ndarray:
    from ..moe.random_weights import unit_normalish

    return unit_normalish(np.random.PCG64(np.random.SeedSequence([seed, 7])).random_raw(n))


# ---- one file per topic ------------------------------------------------------------------------

def elements() -> dict:
    """E2M1 code -> value; selected E8M0 bytes -> value."""
    from ..e2m1 import E2M1_VALUES
    from ..e8m0 import decode_e8m0

    e8 = np.array([0, 1, 2, 100, 125, 126, 127, 128, 129, 200, 253, 254, 255], np.uint8)
    return {"description": "E2M1 code table (codes 0..15) and E8M0 scale bytes (2^(b-127), 0xFF NaN)",
            "e2m1": {"codes": list(range(16)), "values": floats(E2M1_VALUES)},
            "e8m0": {"bytes": ints(e8), "values": floats(decode_e8m0(e8))}}


def packing() -> dict:
    """pack_fp4 along the last axis and along axis 0."""
    from ..packing import pack_fp4

    cases = []
    rng = np.random.PCG64(np.random.SeedSequence([0, 3]))
    for name, codes, axis in [
        ("ascending 0..15", np.arange(16, dtype=np.uint8), -1),
        ("pairs lo/hi", np.array([0x1, 0x2, 0xF, 0x0, 0x8, 0x7], np.uint8), -1),
        ("2x4 along last axis", np.arange(8, dtype=np.uint8).reshape(2, 4), -1),
        ("4x2 along axis 0", np.arange(8, dtype=np.uint8).reshape(4, 2), 0),
        ("random 3x32", (rng.random_raw(96) & np.uint64(0xF)).astype(np.uint8).reshape(3, 32), -1),
    ]:
        packed = pack_fp4(codes, axis=axis)
        cases.append({"name": name, "axis": axis, "codes": ints(codes),
                      "packed": ints(packed), "packed_hex": hexbytes(packed)})
    return {"description": "two E2M1 codes per byte: element 2i in the low nibble, 2i+1 in the high",
            "cases": cases}


def quant_blocks() -> tuple[list[str], np.ndarray]:
    """Hand-picked and random float32 blocks of 32 (names, (n, 32) float32)."""
    f = np.float32
    grid = np.array([0, .5, 1, 1.5, 2, 3, 4, 6], f)
    names, rows = [], []

    def add(name, vals):
        v = np.zeros(32, f)
        vals = np.asarray(vals, f).ravel()
        v[:vals.size] = vals
        names.append(name)
        rows.append(v)

    add("all zero", [])
    add("signed zeros", [-0.0, 0.0] * 16)
    add("grid values, amax 6", np.concatenate([grid, -grid, grid * 0.5, -grid * 0.5]))
    add("grid values scaled 2^-3", np.concatenate([grid, -grid]) * f(0.125))
    add("amax just above 6", [np.nextafter(f(6), f(7)), 1, 2, 3])
    for a in (5.0, 6.5, 7.0, 7.5, 8.0, 11.0, 12.0, 13.0, 14.0, 15.0):
        add(f"amax {a:g}", [a, -1.0, 0.3, 2.2, -4.4])
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], f)
    add("midpoints (scale 1)", np.concatenate([[6.0], mids, -mids]))
    add("just below midpoints", np.concatenate([[6.0], np.nextafter(mids, f(0))]))
    add("just above midpoints", np.concatenate([[6.0], np.nextafter(mids, f(9))]))
    add("below the smallest step", [6.0, 0.1, 0.2, 0.24, -0.26, 0.249999])
    add("amax 2^-126 (smallest normal)", [np.ldexp(f(1), -126), -np.ldexp(f(1), -127)])
    add("fp32 subnormals only", [np.ldexp(f(1), -140), -np.ldexp(f(1.5), -135)])
    add("amax 2^127", [np.ldexp(f(1), 127), 1.0])
    add("amax fp32 max", [np.finfo(f).max, -np.finfo(f).max / 3])
    add("single nonzero", [0, 0, 0, -3.3])
    add("negative only", -np.arange(1, 33, dtype=f) / 4)
    add("bf16 values", np.linspace(-3, 5, 32).astype(BF16).astype(f))
    z = _raw_normal(11, 8 * 32).reshape(8, 32)
    exps = np.array([-20, -6, -1, 0, 0, 3, 9, 30])
    for i in range(8):
        add(f"random normal x 2^{exps[i]}", np.ldexp(z[i], exps[i]).astype(f))
    return names, np.stack(rows)


def nonfinite_blocks() -> tuple[list[str], np.ndarray]:
    f = np.float32
    names = ["contains NaN", "contains +inf", "contains -inf"]
    rows = np.tile(np.linspace(-2, 2, 32, dtype=f), (3, 1))
    rows[0, 5], rows[1, 6], rows[2, 7] = np.nan, np.inf, -np.inf
    return names, rows


def _case(x, fmt: str = "e2m1", **kw) -> dict:
    """Quantize blocks ``x`` along the last axis (MXFP4 for e2m1, else MXFP8) -> the JSON record, or the
    error raised (its type and message) when the convention rejects the input."""
    from .. import quantize, quantize_mxfp8

    try:
        q = quantize(x, axis=-1, **kw) if fmt == "e2m1" else quantize_mxfp8(x, axis=-1, fmt=fmt, **kw)
    except (ValueError, TypeError) as e:
        return {"error": type(e).__name__, "message": str(e)}
    codes = q.packed if fmt == "e2m1" else q.data
    return {("packed_hex" if fmt == "e2m1" else "data_hex"): [hexbytes(c) for c in codes],
            "scales": [int(s) for s in q.scales.ravel()], "dequantized": floats(q.dequantize(np.float32))["bits"]}


def quantize_vectors() -> dict:
    """Every scale rule x rounding, and every preset, on the same blocks."""
    from ..rounding import Rounding
    from ..scales import ScaleRule

    names, x = quant_blocks()
    nf_names, nf = nonfinite_blocks()
    cases = []
    for rule in ScaleRule:
        for rnd in Rounding:
            cases.append({"scale_rule": rule.value, "rounding": rnd.value,
                          "finite": _case(x, scale_rule=rule.value, rounding=rnd.value),
                          "nonfinite": _case(nf, scale_rule=rule.value, rounding=rnd.value)})
    presets = []
    for p in preset_names():
        presets.append({"preset": p, "finite": _case(x, preset=p), "nonfinite": _case(nf, preset=p)})
    return {"description": "MXFP4 quantization of 32-element blocks along the last axis: packed codes "
                           "(hex, 16 bytes per block), E8M0 scale byte per block, dequantized float32 bits",
            "block_size": 32,
            "blocks": [{"name": n, "x": floats(r)} for n, r in zip(names, x)],
            "nonfinite_blocks": [{"name": n, "x": floats(r)} for n, r in zip(nf_names, nf)],
            "scale_rule_x_rounding": cases, "presets": presets}


def mxfp8_vectors() -> dict:
    """MXFP8 (E4M3 / E5M2 elements) on the quantize.json blocks: every scale rule (RNE), every preset."""
    from ..mxfp8 import MXFP8_PRESETS
    from ..scales import ScaleRule

    names, x = quant_blocks()
    _, nf = nonfinite_blocks()
    cases = []
    for fmt in ("e4m3", "e5m2"):
        for rule in ScaleRule:
            cases.append({"fmt": fmt, "scale_rule": rule.value, "rounding": "rne",
                          "finite": _case(x, fmt, scale_rule=rule.value, rounding="rne"),
                          "nonfinite": _case(nf, fmt, scale_rule=rule.value, rounding="rne")})
        for p in MXFP8_PRESETS:
            cases.append({"fmt": fmt, "preset": p, "finite": _case(x, fmt, preset=p),
                          "nonfinite": _case(nf, fmt, preset=p)})
    return {"description": "MXFP8 quantization of the blocks of quantize.json (same order): element codes "
                           "(hex, 32 bytes per block), E8M0 scale byte per block, dequantized float32 bits",
            "block_size": 32, "block_names": names, "cases": cases}


def preset_names() -> list[str]:
    from .. import presets

    return list(getattr(presets, "PRESETS"))


from .vectors_moe import align_vectors, moe_tiny, padding_vectors, routing_vectors  # noqa: E402

FILES = {
    "elements.json": elements,
    "packing.json": packing,
    "quantize.json": quantize_vectors,
    "mxfp8.json": mxfp8_vectors,
    "padding.json": padding_vectors,
    "routing.json": routing_vectors,
    "align.json": align_vectors,
}

README = """# mxfp4ref test vectors, {version}

Small canonical vectors for implementations in any language, regenerated by
`mxfp4ref vectors --out spec/vectors` (tests/test_vectors.py checks that the committed files equal a
fresh regeneration byte for byte). Written by mxfp4ref {generator}. Chapter: spec/20-golden-and-check.md.

Numbers: each float32 appears as its bit pattern (`bits`, hex, authoritative) and as a decimal
(`values`, exact; non-finite values as the strings "nan", "inf", "-inf"). Packed FP4 bytes are hex
strings, byte 0 first (element 2i in the low nibble of byte i). Integers are JSON integers.

| file | what | produced by |
|---|---|---|
| elements.json | E2M1 code table; E8M0 bytes -> 2^(b-127) | `mxfp4ref/e2m1.py`, `mxfp4ref/e8m0.py::decode_e8m0` |
| mxfp8.json | the same blocks as MXFP8 (E4M3 and E5M2 elements) under every scale rule and every MXFP8 preset | `mxfp4ref/mxfp8.py::quantize_mxfp8` |
| packing.json | two codes per byte, along the last axis and axis 0 | `mxfp4ref/packing.py::pack_fp4` |
| quantize.json | {n_blocks} blocks of 32 (edge cases + random) under every scale rule x rounding and every preset, plus NaN/Inf blocks: packed bytes, scale bytes, dequantized bits (or the error raised) | `mxfp4ref/quantize.py::quantize` |
| padding.json | padded (H, I) of every vLLM MXFP4 backend; one pad_weights example | `mxfp4ref/moe/padding.py` |
| routing.json | top-k on bf16 logits with ties (lower id wins), every scoring, renormalize, order, k in 1, 2, 4 | `mxfp4ref/moe/routing.py::route` |
| align.json | moe_align_block_size outputs, block sizes 1, 4, 16, with and without an expert map | `mxfp4ref/moe/align.py::align_block_size` |
| moe-tiny/ | a whole tiny MoE layer (E=5, H=96, I=160, top-2, 8 tokens, triton padding, routing by id) as a golden bundle: inputs, weights, routing, alignment, intermediates, outputs, error bound | `mxfp4ref golden --config tiny --tokens 8 --padding triton --routing-order id --align-block-size 4` |

Block names of quantize.json, in order: {block_names}.

Caveat: routing weights and the MoE pipelines call `exp`, which is not correctly rounded in every C
library; those bits may differ in the last place on another platform (the bit patterns of every other
file are platform independent).
"""


def write_vectors(out_dir) -> list[Path]:
    """Write ``out_dir/v1/*`` and return the paths written (sorted)."""
    from .. import __version__

    root = Path(out_dir) / VERSION
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in FILES.items():
        dump(root / name, fn())
        written.append(root / name)
    moe_tiny(root / "moe-tiny")
    written += sorted((root / "moe-tiny").iterdir())
    names, _ = quant_blocks()
    (root / "README.md").write_text(README.format(version=VERSION, generator=__version__, n_blocks=len(names),
                                                  block_names="; ".join(names)))
    written.append(root / "README.md")
    return sorted(written)
