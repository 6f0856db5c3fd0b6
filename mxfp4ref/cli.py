"""The ``mxfp4ref`` command line: one subcommand per module, each registering itself.

A subcommand module defines ``register(subparsers)`` which adds its parser and sets
``func=callable(args) -> int`` (the exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Modules that provide subcommands, in the order they appear in --help.
SUBCOMMAND_MODULES: list[str] = [
    "mxfp4ref.explain",
    "mxfp4ref.golden.cmd_golden",
    "mxfp4ref.golden.cmd_check",
    "mxfp4ref.golden.cmd_vectors",
    "mxfp4ref.layouts.explain",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mxfp4ref",
        description="Reference implementation of MXFP4 and the MXFP4 MoE layer: "
                    "golden data, conformance checks, explanations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mxfp4ref {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
