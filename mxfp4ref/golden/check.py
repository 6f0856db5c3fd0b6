"""Judge a candidate's tensors against a golden bundle.

``check(bundle_dir, candidate) -> Report``. The candidate is a dict name -> ndarray, or a path to a
``.safetensors`` / ``.npz`` file, holding any subset of the bundle's tensor names. Per tensor:

* ``exact``   the candidate's bits must equal the bundle's bits (so -0.0 != +0.0 and NaN payloads
              count); a failure lists the first mismatches (flat and multi-dimensional index,
              expected and got in hex with the decoded value) and the mismatch count.
* ``bounded`` |candidate - reference| <= bound for every element, computed in float64 (exact for
              bf16/f16/f32 candidates); NaN or Inf fail; a failure lists the worst elements.
* ``none``    context only: present in a candidate it is reported as ``not checked``.

Problems that make judging impossible raise :class:`CheckInputError` (a ValueError) with a message:
a broken bundle (``BundleError``), an unknown tensor name, a wrong shape or dtype.
"""
from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np

from . import st_io
from .bundle import Bundle, BundleError, load_bundle
from .report import Mismatch, Report, TensorResult
from .show import bits, nibble_note
from .show import show as show_value

FIRST_MISMATCHES = 10      # how many mismatching elements a failure lists
_BF16 = np.dtype(ml_dtypes.bfloat16)
# Dtypes a candidate may use for a bounded tensor: any float that converts to float64 exactly.
BOUNDED_DTYPES = {_BF16, np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}


class CheckInputError(ValueError):
    """The check cannot be carried out: bad bundle, unknown name, wrong shape or dtype."""


def load_candidate(path) -> dict[str, np.ndarray]:
    """Read a candidate file: ``.safetensors`` or ``.npz`` (bf16 in .npz: uint16 bits or void2)."""
    p = Path(path)
    if not p.is_file():
        raise CheckInputError(f"candidate: {p} does not exist")
    try:
        if p.suffix == ".safetensors":
            return st_io.load_file(p)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (st_io.SafetensorsError, ValueError, OSError) as e:
        raise CheckInputError(f"candidate: cannot read {p}: {e}") from None
    raise CheckInputError(f"candidate: {p} must end in .safetensors or .npz, got {p.suffix or 'no suffix'!r}")


def _coerce(name: str, a, entry: dict) -> np.ndarray:
    """Validate a candidate tensor's type, shape and dtype against its manifest entry."""
    if not isinstance(a, np.ndarray):
        if hasattr(a, "__array__") and not hasattr(a, "device"):
            a = np.asarray(a)
        else:
            raise CheckInputError(f"candidate[{name!r}]: expected a numpy.ndarray, got {type(a).__name__}")
    want = st_io.dtype_from_name(entry["dtype"])
    if want == _BF16 and a.dtype in (np.dtype(np.uint16), np.dtype("V2")):
        a = a.view(_BF16)                      # bf16 bits as .npz stores them
    shape = tuple(entry["shape"])
    if a.shape != shape:
        hint = ""
        if a.ndim == len(shape) and a.shape[:-1] == shape[:-1] and a.shape[-1] > shape[-1]:
            hint = f" (still padded? vLLM slices the output to [..., :{shape[-1]}])"
        raise CheckInputError(f"candidate[{name!r}]: expected shape {shape}, got {a.shape}{hint}")
    ok = a.dtype in BOUNDED_DTYPES if entry["check"] == "bounded" else a.dtype == want
    if not ok:
        allowed = "bfloat16, float16, float32 or float64" if entry["check"] == "bounded" else entry["dtype"]
        raise CheckInputError(f"candidate[{name!r}]: expected dtype {allowed}, got {a.dtype}")
    return a


def _index(flat: int, shape) -> tuple:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _check_exact(name, entry, want, got, show_n: int) -> TensorResult:
    bad = np.flatnonzero(bits(want).ravel() != bits(got).ravel())
    res = TensorResult(name, "exact", passed=bad.size == 0, elements=int(want.size), failures=int(bad.size))
    enc = entry["encoding"]
    for i in bad[:show_n]:
        e, g = want.ravel()[i], got.ravel()[i]
        note = ""
        if enc == "fp4x2":                       # which FP4 elements: byte c holds elements 2c, 2c+1
            c = int(i % want.shape[-1]) if want.ndim else 0
            note = f"{nibble_note(int(e), int(g))}; elements {2 * c}, {2 * c + 1} of the row"
        res.mismatches.append(Mismatch(int(i), _index(i, want.shape), show_value(e, enc), show_value(g, enc),
                                       note=note))
    return res


def _check_bounded(name, entry, ref, bound, got, show_n: int) -> TensorResult:
    g = got.astype(np.float64).ravel()
    r = ref.astype(np.float64).ravel()
    b = bound.astype(np.float64).ravel()
    err = np.abs(g - r)
    bad_mask = ~(err <= b)                      # NaN in got (or err) fails here
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(b > 0, err / b, np.where(err == 0, 0.0, np.inf))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    res = TensorResult(name, "bounded", passed=not bad_mask.any(), elements=int(g.size),
                       failures=int(bad_mask.sum()),
                       worst_ratio=float(ratio.max()) if ratio.size else 0.0,
                       reference=entry["reference"], bound=entry["bound"])
    order = np.argsort(-ratio, kind="stable")[:show_n]
    for i in order:
        if (res.passed and len(res.mismatches) >= min(3, show_n)) or (not res.passed and err[i] <= b[i]):
            break                               # a pass shows its 3 closest calls, a fail only failures
        res.mismatches.append(Mismatch(int(i), _index(i, got.shape), expected=repr(float(r[i])),
                                       got=repr(float(g[i])), error=float(err[i]), bound=float(b[i]),
                                       note="" if err[i] <= b[i] else "OUT OF BOUND"))
    return res


def check(bundle_dir, candidate, *, verify: bool = True, show: int = FIRST_MISMATCHES) -> Report:
    """Judge ``candidate`` (dict name -> ndarray, or a .safetensors/.npz path) against a bundle.

    ``show``: how many mismatching (exact) or worst (bounded) elements each result lists.
    Returns a :class:`Report` (``report.passed``, ``report.exit_code``, ``report.results``);
    raises :class:`CheckInputError` if the check cannot be carried out.
    """
    try:
        bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir, verify=verify)
    except BundleError as e:
        raise CheckInputError(str(e)) from None
    label = str(candidate) if isinstance(candidate, (str, Path)) else "<dict>"
    cand = load_candidate(candidate) if isinstance(candidate, (str, Path)) else candidate
    if not isinstance(cand, dict):
        raise CheckInputError(f"candidate: expected a dict of arrays or a file path, got {type(cand).__name__}")
    if not isinstance(show, int) or show < 0:
        raise CheckInputError(f"show: expected an int >= 0, got {show!r}")
    if not cand:
        raise CheckInputError("candidate: holds no tensors")
    unknown = sorted(set(cand) - set(bundle.tensors))
    if unknown:
        raise CheckInputError(f"candidate: unknown tensor name(s) {unknown}; the bundle has "
                              f"{sorted(bundle.tensors)}")
    try:
        return _judge(bundle, cand, label, show)
    except BundleError as e:
        raise CheckInputError(str(e)) from None


def _judge(bundle: Bundle, cand: dict, label: str, show: int) -> Report:
    report = Report(bundle=str(bundle.root), candidate=label)
    for name in bundle.tensors:                  # manifest order, not the candidate's
        if name not in cand:
            continue
        entry = bundle.tensors[name]
        got = _coerce(name, cand[name], entry)
        if entry["check"] == "exact":
            report.results.append(_check_exact(name, entry, bundle[name], got, show))
        elif entry["check"] == "bounded":
            report.results.append(_check_bounded(name, entry, bundle[entry["reference"]],
                                                 bundle[entry["bound"]], got, show))
        else:
            report.results.append(TensorResult(name, "none", passed=True, elements=int(got.size), failures=0))
    return report
