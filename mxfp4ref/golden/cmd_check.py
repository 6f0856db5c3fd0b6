"""``mxfp4ref check BUNDLE CANDIDATE [--json FILE]``: exit 0 all pass, 1 any fail, 2 unusable input."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "judge a kernel's output tensors against a golden bundle (exit 0 pass, 1 fail, 2 bad input)"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check", help=HELP, description=HELP + ". The candidate (.safetensors or .npz) holds any subset "
        "of the bundle's tensor names; bit-exact tensors must match bit for bit, bounded ones must lie "
        "within the bundle's per-element error bound.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="golden bundle directory (holds manifest.json)")
    p.add_argument("candidate", metavar="CANDIDATE", help="candidate tensors: a .safetensors or .npz file")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write a machine-readable report to FILE ('-' for stdout, replacing the text)")
    p.add_argument("--show", type=int, default=10, metavar="N",
                   help="list the first N mismatches (bit-exact) or the N worst elements (bounded) per tensor")
    p.add_argument("--no-verify", action="store_true", default=False,
                   help="skip the SHA-256 check of the bundle's files")
    p.set_defaults(func=run)


def run(args) -> int:
    from .check import CheckInputError, check

    try:
        report = check(args.bundle, args.candidate, verify=not args.no_verify, show=args.show)
    except CheckInputError as e:
        msg = str(e).replace("show: ", "--show: ", 1) if str(e).startswith("show: ") else str(e)
        print(f"mxfp4ref check: error: {msg}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(report.to_json())
        return report.exit_code
    print(report.format())
    if args.json:
        try:
            Path(args.json).write_text(report.to_json() + "\n")
        except OSError as e:
            print(f"mxfp4ref check: error: --json: cannot write {args.json}: {e}", file=sys.stderr)
            return 2
    return report.exit_code
