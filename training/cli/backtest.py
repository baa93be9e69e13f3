"""``backtest``: train before a cutoff, serve the bundle on a real server, score what it answers."""
from __future__ import annotations

import json
import logging

from training.backtest import format_backtest, parse_cutoff, run_backtest
from training.cli.options import (
    add_erasure_options,
    add_float_ids,
    add_training_options,
    config_from_args,
    without_erased,
)
from training.cli.types import out_file, positive_number
from training.readers import load

logger = logging.getLogger("tailor.training.cli.backtest")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "backtest", help="served backtest: train before a cutoff, serve, score the answers",
        description="Without --cutoff the split is the last --test-frac of each user's rows "
                    "(the same fraction the pipeline holds out for its evaluation fit).")
    p.add_argument("--interactions", required=True, help="CSV/Parquet (or MovieLens) file")
    p.add_argument("--items", help="item catalog CSV/Parquet (optional)")
    p.add_argument("--format", choices=("tailor", "movielens"), default="tailor")
    add_float_ids(p)
    add_erasure_options(p)
    p.add_argument("--cutoff", type=parse_cutoff,
                   help="train on rows before this time (unix seconds or ISO date, UTC)")
    p.add_argument("--no-baselines", action="store_true",
                   help="popularity only beside Tailor (no implicit ALS grid, no EASE)")
    p.add_argument("--ease-lambda", type=positive_number, action="append",
                   help="EASE lambdas to sweep (repeatable; default: training.backtest.EASE_GRID)")
    p.add_argument("--json", type=out_file, help="also write the report as JSON to this file")
    add_training_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    inter, catalog = load(args.interactions, args.items, args.format, keep=without_erased(args),
                          float_ids=args.float_ids)
    report = run_backtest(inter, catalog, config_from_args(args), cutoff=args.cutoff,
                          test_frac=args.test_frac, baselines=not args.no_baselines,
                          ease_grid=tuple(args.ease_lambda) if args.ease_lambda else None)
    print(format_backtest(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
    return 0
