"""A golden bundle on disk: safetensors files plus ``manifest.json``.

Layout of a bundle directory::

    manifest.json          what every tensor is, how it is checked, SHA-256 of every file
    inputs.safetensors     hidden states (bf16), router logits, ...
    weights.safetensors    the layer's parameters in vLLM's layout
    ...                    one file per group (see mxfp4ref/golden/generate.py)

``manifest.json`` (format version 1) holds::

    format, format_version, generator {name, version}, arguments, config, seed, conventions,
    files   {file name: {sha256, bytes}},
    tensors {name: {file, dtype, shape, encoding, check, [reference, bound], sha256, description}}

``check`` is ``"exact"`` (bit for bit), ``"bounded"`` (|candidate - reference| <= bound element-wise,
``reference`` and ``bound`` name other tensors) or ``"none"`` (context only, never judged).
``encoding`` tells the checker how to print a value: ``fp4x2`` (two E2M1 codes per byte), ``e8m0``,
``hex`` (a raw byte), ``bf16``, ``f32``, ``f64``, ``int``. Everything is written in a fixed order with sorted JSON keys, so
the same tensors give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import st_io

FORMAT = "mxfp4ref-golden"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKS = ("exact", "bounded", "none")
ENCODINGS = ("fp4x2", "e8m0", "hex", "bf16", "f16", "f32", "f64", "int", "bool")


class BundleError(ValueError):
    """The bundle directory is missing, incomplete, edited or malformed."""


@dataclass
class TensorSpec:
    """One tensor of a bundle: its data plus how a candidate's tensor of the same name is judged."""

    name: str
    data: np.ndarray
    file: str                       # e.g. "weights.safetensors"
    check: str = "exact"            # one of CHECKS
    encoding: str | None = None     # one of ENCODINGS; None -> inferred from the dtype
    reference: str | None = None    # bounded: tensor holding the exact value
    bound: str | None = None        # bounded: tensor holding the per-element bound
    description: str = ""

    def __post_init__(self):
        if self.check not in CHECKS:
            raise ValueError(f"check: expected one of {CHECKS}, got {self.check!r}")
        if self.encoding is None:
            self.encoding = default_encoding(self.data.dtype)
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding: expected one of {ENCODINGS}, got {self.encoding!r}")
        if self.check == "bounded" and not (self.reference and self.bound):
            raise ValueError(f"{self.name}: a bounded tensor needs reference= and bound=")


def default_encoding(dt) -> str:
    dt = np.dtype(dt)
    if dt.name == "bfloat16":
        return "bf16"
    if dt.kind == "f":
        return {2: "f16", 4: "f32", 8: "f64"}[dt.itemsize]
    if dt.kind == "b":
        return "bool"
    return "int"


def sha256_bytes(a: np.ndarray) -> str:
    """SHA-256 of a tensor's raw little-endian C-order bytes (what safetensors stores)."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(a.view(np.uint8).data if a.size else b"").hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(out_dir, specs: list[TensorSpec], meta: dict, progress=None) -> Path:
    """Write ``specs`` grouped by file plus the manifest; returns the manifest path.

    ``meta`` supplies the top-level fields (arguments, config, seed, conventions); ``progress`` is an
    optional callable(str) told about each file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"specs: duplicate tensor names {sorted(n for n in names if names.count(n) > 1)}")
    by_name = {s.name: s for s in specs}
    for s in specs:
        for ref in (s.reference, s.bound):
            if ref is not None and ref not in by_name:
                raise ValueError(f"{s.name}: refers to tensor {ref!r} which is not in the bundle")
    files: dict[str, dict] = {}
    tensors: dict[str, dict] = {}
    for fname in dict.fromkeys(s.file for s in specs):        # first-seen order, deterministic
        group = [s for s in specs if s.file == fname]
        if progress:
            progress(fname)
        st_io.save_file({s.name: s.data for s in group}, out / fname)
        files[fname] = {"sha256": sha256_file(out / fname), "bytes": (out / fname).stat().st_size}
        for s in group:
            entry = {"file": fname, "dtype": st_io.dtype_name(s.data.dtype), "shape": list(s.data.shape),
                     "encoding": s.encoding, "check": s.check, "sha256": sha256_bytes(s.data),
                     "description": s.description}
            if s.check == "bounded":
                entry["reference"], entry["bound"] = s.reference, s.bound
            tensors[s.name] = entry
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta, "files": files, "tensors": tensors}
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


@dataclass
class Bundle:
    """A verified bundle: its manifest and lazy access to its tensors."""

    root: Path
    manifest: dict
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def tensors(self) -> dict:
        return self.manifest["tensors"]

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name not in self.tensors:
                raise KeyError(f"bundle has no tensor {name!r}")
            entry = self.tensors[name]
            try:
                a = st_io.load_file(self.root / entry["file"], [name])[name]
            except st_io.SafetensorsError as e:
                raise BundleError(f"bundle: {e}") from None
            if list(a.shape) != list(entry["shape"]) or st_io.dtype_name(a.dtype) != entry["dtype"]:
                raise BundleError(f"bundle: manifest says {name!r} is {entry['dtype']} {entry['shape']}, "
                                  f"{entry['file']} holds {st_io.dtype_name(a.dtype)} {list(a.shape)}")
            self._cache[name] = a
        return self._cache[name]


def load_bundle(bundle_dir, verify: bool = True) -> Bundle:
    """Open a bundle; with ``verify`` check every file's presence, size and SHA-256 first.

    Raises :class:`BundleError` with a message saying exactly what is wrong.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise BundleError(f"bundle: {root} is not a directory")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"bundle: {mpath} is missing (is {root} a golden bundle?)")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"bundle: {mpath} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle: {mpath} is not an {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"bundle: format_version {manifest.get('format_version')!r} is not supported "
                          f"(this mxfp4ref reads version {FORMAT_VERSION})")
    for key in ("files", "tensors"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"bundle: {mpath} has no {key!r} table")
    if verify:
        for fname, info in manifest["files"].items():
            p = root / fname
            if not p.is_file():
                raise BundleError(f"bundle: file {fname} is missing from {root}")
            size = p.stat().st_size
            if size != info["bytes"]:
                what = "truncated" if size < info["bytes"] else "longer than recorded"
                raise BundleError(f"bundle: file {fname} is {what}: {size} bytes, manifest says {info['bytes']}")
            digest = sha256_file(p)
            if digest != info["sha256"]:
                raise BundleError(f"bundle: file {fname} was modified: SHA-256 {digest[:16]}..., "
                                  f"manifest says {info['sha256'][:16]}...")
    for name, entry in manifest["tensors"].items():
        _check_entry(name, entry, manifest)
    return Bundle(root, manifest)


def _check_entry(name: str, entry, manifest: dict) -> None:
    """BundleError unless a manifest tensor entry is complete and consistent."""
    need = ("file", "dtype", "shape", "encoding", "check")
    if not isinstance(entry, dict) or any(k not in entry for k in need):
        raise BundleError(f"bundle: manifest entry of tensor {name!r} lacks one of {list(need)}")
    if entry["file"] not in manifest["files"]:
        raise BundleError(f"bundle: tensor {name!r} lives in {entry['file']!r}, not listed in files")
    if entry["check"] not in CHECKS or entry["encoding"] not in ENCODINGS:
        raise BundleError(f"bundle: tensor {name!r} has check {entry['check']!r} / encoding "
                          f"{entry['encoding']!r}; expected one of {CHECKS} / {ENCODINGS}")
    if entry["check"] == "bounded":
        for key in ("reference", "bound"):
            if entry.get(key) not in manifest["tensors"]:
                raise BundleError(f"bundle: bounded tensor {name!r} names {key} {entry.get(key)!r}, "
                                  "which is not in the bundle")
