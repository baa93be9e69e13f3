"""``train``: read data, train, evaluate, print the metrics table, write a bundle and its report.

The report (`training.report`) is ``OUT/report.html``, beside the bundle directory (which holds
only the files its manifest lists); each run replaces it. ``--no-report`` skips it.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

from training.bundle import write_bundle
from training.cli.options import (
    add_erasure_options,
    add_float_ids,
    add_training_options,
    config_from_args,
    without_erased,
)
from training.cli.types import out_dir
from training.evaluate import format_table, measured
from training.pipeline import train
from training.readers import load

logger = logging.getLogger("tailor.training.cli.train")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train and write a bundle")
    p.add_argument("--interactions", required=True, help="CSV/Parquet (or MovieLens) file")
    p.add_argument("--items", help="item catalog CSV/Parquet (optional)")
    p.add_argument("--format", choices=("tailor", "movielens"), default="tailor")
    add_float_ids(p)
    p.add_argument("--out", type=out_dir, required=True,
                   help="bundle root; the bundle goes to OUT/<version>/")
    p.add_argument("--backtest", action="store_true",
                   help="also run the served backtest (training.backtest) with the same options "
                        "on the last --test-frac of each user's rows and print its figures")
    add_erasure_options(p)
    p.add_argument("--impressions", type=Path, default=None, metavar="FILE",
                   help="impressions.jsonl (`training export --impressions`): with "
                        "--context-features, fit the context tables and the ranker's context "
                        "columns from what was shown and taken (docs/impressions.md) instead of "
                        "the events' channel and time")
    p.add_argument("--impression-groups", action="store_true",
                   help="with --impressions: also train the ranker on the impressions' shown "
                        "candidates, taken vs shown and not taken (off: it lowers hold-out "
                        "NDCG@10 on the demo world, docs/impressions.md)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write OUT/report.html (pictures of the metrics and timings)")
    add_training_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.impressions is not None and not args.context_features:
        print("--impressions trains the context features: add --context-features")
        return 2
    inter, catalog = load(args.interactions, args.items, args.format, keep=without_erased(args),
                          float_ids=args.float_ids)
    imps = None
    if args.impressions is not None:
        from training.impression_log import read_impressions

        imps = read_impressions(args.impressions, inter.user_ids, inter.item_ids)
        print(f"impressions: {len(imps)} requests, {imps.item.shape[0]} shown catalog items, "
              f"{int(imps.positive.sum())} taken, {int((imps.user < 0).sum())} requests of "
              f"users without events (tables only)")
    config = replace(config_from_args(args), impression_groups=args.impression_groups)
    if args.backtest:   # refused now, not after the training and the bundle's write
        from training.backtest import backtest_split

        backtest_split(inter, config, test_frac=config.test_frac, what="--backtest")
    result = train(inter, catalog, config, imps)
    print(format_table(result.metrics))
    print("\n".join(served_lines(result)))
    print(f"index: {result.index_info['type']} recall@10={result.index_info['recall_at_10']} "
          f"search_params={result.index_info['search_params']}")
    path = write_bundle(result, args.out)
    if not args.no_report:
        from training.report import write_report

        manifest = json.loads((path / "manifest.json").read_text())
        print(f"report: {write_report(manifest, path.parent / 'report.html')}")
    failed = args.backtest and _backtest(inter, catalog, result, path)
    print(path)   # last, as scripts read it, also when the backtest failed
    return 2 if failed else 0


def served_lines(result) -> list[str]:
    """What the table's rows are and which of them the bundle serves: a newcomer read "model"
    as one of three candidates and could not tell whether the ranker was kept, nor that the
    served retrieval is a refit the table did not score."""
    info, config = result.ranker_info, result.config
    lines = ["rows: model = what the bundle serves; retrieval = ALS + FAISS order alone; "
             "popularity = most popular unseen items (a baseline, never served)"]
    if not config.use_ranker:
        lines.append("served: retrieval alone (--no-ranker): the model row is retrieval's")
    elif result.ranker is None:
        lines.append(f"served: retrieval alone; ranker dropped: NDCG@10 "
                     f"{info['valid_ndcg']:.4f} on its validation users does not beat "
                     f"retrieval's order there ({info['valid_retrieval_ndcg']:.4f}); the model "
                     "row repeats retrieval's (manifest ranker = null)")
    else:
        lines.append(f"served: retrieval re-ranked by the ranker; ranker kept: NDCG@10 "
                     f"{info['valid_ndcg']:.4f} on its validation users against retrieval's "
                     f"order there {info['valid_retrieval_ndcg']:.4f}")
    fits = result.fits
    held = f"each user's last {config.test_frac:.0%} of rows held out"
    if fits["served"]["refit"]:
        lines.append(f"fits: the table scores the evaluation fit ({fits['evaluation']['rows']} "
                     f"rows, {held}); the bundle serves retrieval refit with the same "
                     f"parameters on all {fits['served']['rows']} rows, with the ranker the "
                     "table scored (--no-refit serves the fit the table scored)")
    else:
        lines.append(f"fits: the bundle serves the fit the table scored "
                     f"({fits['evaluation']['rows']} rows, {held}; --no-refit)")
    return lines


def _backtest(inter, catalog, result, path: Path) -> bool:
    """Print the served backtest of `train --backtest`; True when it failed (one ``error:``
    line that says the bundle at `path` is written: it does not depend on the backtest)."""
    from training.backtest import format_backtest, run_backtest

    try:
        report = run_backtest(inter, catalog, result.config, test_frac=result.config.test_frac,
                              baselines=False)
    except (ValueError, OSError) as err:   # OSError: ChildProcessError, its server not up
        logger.debug("backtest failed", exc_info=True)
        print(f"error: backtest failed: {err} (the bundle is written: {path})", file=sys.stderr)
        return True
    print("served backtest (a separate bundle trained before the split, served by a real "
          "server):")
    print(format_backtest(report))
    served = report["methods"]["tailor (served)"]
    if not measured(result.metrics):
        return False
    claimed = result.metrics["model"]["ndcg@10"]
    gap = (served["ndcg@10"] - claimed) / max(served["ndcg@10_se"], 1e-12)
    print(f"this bundle's manifest (evaluation fit, same hold-out rows) ndcg@10 = "
          f"{claimed:.4f}; served backtest ndcg@10 = {served['ndcg@10']:.4f} "
          f"+- {served['ndcg@10_se']:.4f} (bootstrap SE): {gap:+.1f} SE")
    return False
