"""The checker's verdict: per-tensor results, a summary table for people, JSON for CI."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Mismatch:
    """One reported element: flat index, multi-dimensional index, expected and got as text."""

    flat: int
    index: tuple
    expected: str
    got: str
    error: float | None = None       # bounded only: |got - reference|
    bound: float | None = None       # bounded only: the element's bound
    note: str = ""


@dataclass
class TensorResult:
    name: str
    check: str                       # "exact" | "bounded" | "none"
    passed: bool
    elements: int
    failures: int                    # mismatching (exact) or out-of-bound (bounded) elements
    worst_ratio: float | None = None  # bounded: max |err| / bound
    reference: str | None = None
    bound: str | None = None
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return "not checked" if self.check == "none" else ("PASS" if self.passed else "FAIL")


@dataclass
class Report:
    bundle: str
    candidate: str
    results: list[TensorResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 when every checked tensor passes, 1 otherwise (2 is for unusable input, see check.py)."""
        return 0 if self.passed else 1

    def __getitem__(self, name: str) -> TensorResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"report has no tensor {name!r}; it has {[r.name for r in self.results]}")

    def to_dict(self) -> dict:
        return {"bundle": self.bundle, "candidate": self.candidate, "passed": self.passed,
                "exit_code": self.exit_code,
                "tensors": [dict(asdict(r), verdict=r.verdict) for r in self.results]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def format(self) -> str:
        """Details of every failure, then the summary table, then the verdict line."""
        lines: list[str] = []
        for r in self.results:
            if r.passed:
                continue
            if r.check == "exact":
                lines.append(f"FAIL {r.name}: {r.failures} of {r.elements} elements differ; first "
                             f"{len(r.mismatches)}:")
                for m in r.mismatches:
                    note = f"  [{m.note}]" if m.note else ""
                    lines.append(f"  at {list(m.index)}: expected {m.expected}, got {m.got}{note}")
            else:
                lines.append(f"FAIL {r.name}: {r.failures} of {r.elements} elements outside the bound "
                             f"(|got - {r.reference}| <= {r.bound}); worst {len(r.mismatches)}:")
                for m in r.mismatches:
                    lines.append(f"  at {list(m.index)}: reference {m.expected}, got {m.got}, "
                                 f"error {m.error:.3g}, bound {m.bound:.3g} ({_ratio(m.error, m.bound)})")
            lines.append("")
        lines.extend(self.table())
        n_fail = sum(not r.passed for r in self.results)
        lines.append(f"{'PASS' if self.passed else 'FAIL'}: {len(self.results) - n_fail} of "
                     f"{len(self.results)} tensors pass" + ("" if self.passed else f", {n_fail} fail"))
        return "\n".join(lines)

    def table(self) -> list[str]:
        rows = [("tensor", "check", "elements", "failures", "worst err/bound", "result")]
        for r in self.results:
            worst = "" if r.worst_ratio is None else f"{r.worst_ratio:.3g}"
            rows.append((r.name, {"exact": "bit-exact"}.get(r.check, r.check), str(r.elements),
                         str(r.failures), worst, r.verdict))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        out = []
        for k, row in enumerate(rows):
            cells = [c.ljust(w) if i in (0, 1, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        return out


def _ratio(err: float, bound: float) -> str:
    if bound > 0:
        return f"{err / bound:.3g}x the bound"
    return "bound is 0"
