"""Subcommands of ``python -m training``.

Each module listed in `COMMANDS` exposes ``add_parser(subparsers)``, which registers its
subcommand and sets ``func`` (called with the parsed namespace, returns the exit code).
Adding a subcommand is one line here. Reserved for other owners: ``push``, ``ope``,
``attribute``, ``export``. `main` turns a ``ValueError`` or ``OSError`` (a bad file or value),
or a ``MemoryError``, into one ``error:`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["COMMANDS", "build_parser", "main", "run_guarded"]

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
    """Run one subcommand. A bad file or value (the `ValueError` or `OSError` a reader or a
    job raises, naming what is wrong) prints one ``error:`` line and returns 2; ``-v`` also
    logs its traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_guarded(args.func, args, what=args.command)


def run_guarded(func, *args, what: str = "") -> int:
    """``func(*args)`` as an exit status: a ``ValueError`` or ``OSError`` (a bad file or value)
    is one ``error:`` line and 2. The experiment scripts (``python -m training.compare_als``,
    ``.context_eval``, ``.item_item_eval``) run their ``main`` through it too."""
    try:
        return int(func(*args) or 0)
    except (ValueError, OSError) as err:
        logger.debug("%s failed", what or getattr(func, "__module__", "job"), exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:   # numpy's names the size: a flag or a file too big for here
        logger.debug("%s failed", what or getattr(func, "__module__", "job"), exc_info=True)
        print(f"error: not enough memory: {err}", file=sys.stderr)
        return 2
