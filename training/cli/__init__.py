"""Subcommands of ``python -m training``.

Each module listed in `COMMANDS` exposes ``add_parser(subparsers)``, which registers its
subcommand and sets ``func`` (called with the parsed namespace, returns the exit code).
Adding a subcommand is one line here. Reserved for other owners: ``push``, ``ope``,
``attribute``, ``export``.
"""
from __future__ import annotations

import argparse
import importlib
import logging

__all__ = ["COMMANDS", "build_parser", "main"]

logger = logging.getLogger("tailor.training.cli")

COMMANDS = (
    "training.cli.demo_data",
    "training.cli.train",
    "training.cli.bootstrap",
    "training.cli.backtest",
    "training.cli.timing",
    "training.cli.cold_items",
    "training.push",
    "training.export",
    "training.ope",
    "training.attribute",
    "training.retrain",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training",
                                     description="Tailor offline jobs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)
