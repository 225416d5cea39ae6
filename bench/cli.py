"""The suite's console command ``flexbench``: sub-commands collected from a registry of modules.

Each module listed in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its sub-parser(s) and sets
``func`` (``func(args) -> int``) as the parser default.  Bad input raises :class:`UserError`, printed as one
``error:`` line with exit status 2.  A listed module that fails to import is an error of the suite: it propagates
(no sub-command silently missing).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from flexiffusion.errors import UserError

COMMAND_MODULES = [
    "bench.commands.demo",
    "bench.commands.sample",
    "bench.commands.embedded",
    "bench.commands.cost",
    "bench.commands.quality",
    "bench.commands.search",
    "bench.commands.search_bench",
    "bench.commands.yardstick",
    "bench.commands.run",
    "bench.commands.ablation",
    "bench.commands.bench_compare",
    "bench.commands.bench_track",
    "bench.commands.experiment",
    "bench.commands.conformance",
    "bench.commands.report",
    "bench.commands.smoke",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexbench",
        description="Flexiffusion and training-free diffusion acceleration baselines under one harness.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:  # a module that fails to import fails the command loudly, never drops out
        importlib.import_module(name).register(sub)
    return parser


def parse_invocation(words: list[str]) -> str:
    """"" when ``words`` (after ``flexbench``) parse as a sub-command with this CLI's parser, else the problem."""
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(list(words))
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        return lines[-1] if lines else "unparseable"
    return "" if getattr(args, "func", None) else "no sub-command"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
