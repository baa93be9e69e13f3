"""``cold-items``: recall of items held out of training and served from their content alone."""
from __future__ import annotations

import json

from training.als import ALSParams
from training.cli.options import add_erasure_options, without_erased
from training.cli.types import count, open_fraction, out_file, positive_int
from training.cold_items import ColdConfig, format_cold, run_cold_items
from training.readers import load

_DEFAULT = ColdConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "cold-items", help="cold-item recall: hold items out of training, embed them from content",
        description="Train without a seeded share of the items, embed them with the content map "
                    "as UpsertItems does, and report recall@k of those items against random, "
                    "category-popularity and category-affinity baselines.")
    p.add_argument("--interactions", required=True, help="CSV/Parquet file")
    p.add_argument("--items", required=True, help="item catalog CSV/Parquet (titles, prices)")
    add_erasure_options(p)
    p.add_argument("--holdout", type=open_fraction, default=_DEFAULT.holdout,
                   help="share of the items with interactions held out")
    p.add_argument("--k", type=positive_int, default=_DEFAULT.k)
    p.add_argument("--seed", type=count, default=_DEFAULT.seed)
    p.add_argument("--threads", type=count, default=ALSParams().threads,
                   help="threads of ALS (0: the library's default)")
    p.add_argument("--json", type=out_file, help="also write the report as JSON to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    inter, catalog = load(args.interactions, args.items, keep=without_erased(args))
    cfg = ColdConfig(holdout=args.holdout, k=args.k, seed=args.seed,
                     als=ALSParams(threads=args.threads, seed=args.seed))
    report = run_cold_items(inter, catalog, cfg)
    print(format_cold(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0
