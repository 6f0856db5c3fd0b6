"""``mxfp4ref vectors --out DIR``: regenerate the canonical test vectors (spec/vectors/v1)."""
from __future__ import annotations

import argparse

HELP = "regenerate the canonical test vectors (JSON + a tiny golden bundle) into DIR/v1"


def register(subparsers) -> None:
    p = subparsers.add_parser("vectors", help=HELP, description=HELP + "; the committed spec/vectors must "
                              "equal this output byte for byte.",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="spec/vectors", metavar="DIR", help="output directory (v1/ is created in it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from .vectors import write_vectors

    paths = write_vectors(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files ({total / 1024:.0f} KiB) under {args.out}/")
    return 0
