"""`python -m training retrain --server HOST:PORT --work-dir W`: the retraining loop.

1. Ask the server what it serves (a running canary stops here: exit 1).
2. Export its tracked events (`training export`) to ``W/interactions.csv``.
3. Compare on the same hold-out: the rows after the serving bundle's data cutoff (events it never
   saw). A candidate is trained on the rows up to that cutoff with this run's options; the
   serving bundle (``--serving-bundle``, default ``W/bundles/<serving version>``: the loop keeps
   every bundle it pushed) and the candidate are each served by a real server on a loopback port
   (`training.backtest.serve_recommendations`) and scored on the later items of the same users
   (`training.backtest.score`, NDCG@10).
4. Not worse (candidate NDCG@10 >= serving NDCG@10 - ``--tolerance``): train on every row, write
   the bundle under ``W/bundles`` and push it as a canary (``--canary`` percent); the server's
   guardrails promote or abort it. Worse: push nothing and exit 3.

It learns only from the events the server holds (its event retention, 365 days by default): a
history kept in your own files reaches it only once tracked (`python -m clients track`).

Exit codes: 0 pushed, 1 a server or data problem, 2 no serving bundle to compare with, 3 the
candidate was worse (nothing pushed). Runs from cron or a Kubernetes CronJob
(docs/operations.md, "Retraining loop").
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from clients.transport import add_arguments

__all__ = ["add_parser", "compare", "run"]

K = 10


def add_parser(subparsers) -> None:
    from training.cli.options import add_secrets_dir, add_training_options
    from training.cli.types import canary_percent, finite_number, timeout_seconds

    p = subparsers.add_parser("retrain", help="export, train, compare with the serving bundle, "
                              "push as a canary if not worse", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:50051", help="host:port (default %(default)s)")
    add_arguments(p)
    p.add_argument("--work-dir", type=Path, required=True,
                   help="exports and bundles of the loop (kept between runs)")
    p.add_argument("--items", type=Path, help="item catalog CSV/Parquet (optional)")
    p.add_argument("--serving-bundle", type=Path,
                   help="the serving bundle's directory (default W/bundles/<serving version>)")
    p.add_argument("--canary", type=canary_percent, default=10.0, metavar="PERCENT",
                   help="share of users the new bundle starts with, 0.01..99.99 (default "
                        "%(default)s)")
    p.add_argument("--tolerance", type=finite_number, default=0.0,
                   help="NDCG@10 the candidate may lose and still count as not worse")
    p.add_argument("--timeout", type=timeout_seconds, default=900.0, help="seconds per server call")
    add_secrets_dir(p)
    add_training_options(p)
    p.set_defaults(func=run)


def compare(inter, catalog, config, serving: Path, workdir: Path, imps=None) -> dict:
    """NDCG@10 (and the rest of `backtest.score`) of the serving bundle and of a candidate
    trained with `config` (and the impressions ``imps`` shown before the cutoff) on the rows up
    to the serving bundle's cutoff, on the rows after it."""
    from training.backtest import askable, score, serve_recommendations, split_rows
    from training.bundle import write_bundle
    from training.pipeline import train
    from training.split import distinct_items

    cutoff = int(json.loads((serving / "manifest.json").read_text())["data"]["cutoff"]) + 1
    before, after = split_rows(inter, cutoff=cutoff, weights=config.event_weights)
    if len(after) == 0 or len(before) == 0:
        raise ValueError(_one_sided(cutoff, len(before), len(after)))
    test = distinct_items(after.user, after.item, after.n_users)
    seen = distinct_items(before.user, before.item, before.n_users)
    users, unaskable = askable(inter, np.flatnonzero(np.diff(test[0]) > 0))
    ids = inter.user_ids[users].tolist()
    item_row = defaultdict(lambda: -1, {iid: i for i, iid in enumerate(inter.item_ids.tolist())})
    out = {"cutoff": cutoff, "rows_before": len(before), "rows_after": len(after),
           "users_scored": len(ids), "users_unaskable": unaskable}
    with tempfile.TemporaryDirectory(prefix="tailor-retrain-", dir=workdir) as tmp:
        early = None if imps is None else imps.subset(imps.ts < cutoff)
        early = early if early is not None and early.positive.any() else None  # events then
        candidate = write_bundle(train(before, catalog, config, early), Path(tmp) / "candidate")
        for name, bundle in (("serving", serving), ("candidate", candidate)):
            data_dir = Path(tmp) / f"serve-{name}"  # a server's data dir per bundle
            data_dir.mkdir()
            recs, _ = serve_recommendations(data_dir, bundle, ids, item_row, K)
            out[name] = score(recs, users, test, seen, inter.n_items)
    return out


def _one_sided(cutoff: int, before: int, after: int) -> str:
    """Why there is nothing to compare on, and what to do: the serving bundle's data cutoff
    has none of the server's events on one side."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cutoff))
    counts = (f"the server holds {before} weighted events before the serving bundle's data "
              f"cutoff ({when}) ")
    if not before:
        return (counts + f"and {after} after it: the bundle was trained on events never tracked "
                "into the server (the demo world's, your own files), and the candidate must be "
                "trained on them to be compared with it. Track them first (`python -m clients "
                "track`, JSON lines; the server keeps TAILOR_EVENT_RETENTION_DAYS, 365 by default: "
                "older ones are dropped), then run retrain again; or train the next bundle from "
                "your files with `training train` and push it with `training push --canary 10` "
                "(training/README.md, \"Your own data, step by step\")")
    return (counts + "and none after it: the bundle has seen every event the server holds, so "
            "there is nothing to score a candidate on yet. Track new events (those after its "
            "cutoff), then run retrain again")


def _serving(args, client) -> tuple[str, Path] | int:
    """(serving version, its bundle directory), or the exit code of why there is none."""
    status = client.model_status(timeout=args.timeout)
    if status.canary is not None:
        print(f"canary {status.canary.version} is running: promote or abort it first",
              file=sys.stderr)
        return 1
    if status.active is None:
        print("the server serves no bundle: push one first", file=sys.stderr)
        return 2
    path = args.serving_bundle or args.work_dir / "bundles" / status.active.version
    if not (path / "manifest.json").is_file():
        print(f"no copy of the serving bundle {status.active.version} at {path}: pass "
              "--serving-bundle DIR", file=sys.stderr)
        return 2
    return status.active.version, path


def _impressions(path: Path, inter):
    """The exported log for the context features, or None (events then) when nothing in it
    was taken."""
    from training.impression_log import read_impressions

    imps = read_impressions(path, inter.user_ids, inter.item_ids)
    if not imps.positive.any():
        print(f"{path}: no shown item was taken; context tables from the events", file=sys.stderr)
        return None
    return imps


def run(args) -> int:
    from clients import TailorClient, TailorError
    from training import export
    from training.bundle import write_bundle
    from training.cli.options import config_from_args, without_erased
    from training.pipeline import train
    from training.readers import load

    csv_path = args.work_dir / "interactions.csv"
    with TailorClient(args.server, timeout=args.timeout, tls_ca=args.tls_ca, cert=args.cert,
                      key=args.key, token=args.token, insecure=args.insecure) as client:
        try:
            serving = _serving(args, client)
        except TailorError as err:
            print(f"retrain: {err}", file=sys.stderr)
            return 1
    if isinstance(serving, int):
        return serving
    version, serving_dir = serving
    # made once the server said what it serves: a refused run (a canary running, no bundle, no
    # copy of the serving one, the server unreachable) left an empty --work-dir behind
    args.work_dir.mkdir(parents=True, exist_ok=True)
    # Events and the impression log (impressions.jsonl beside the events: the record of what
    # was served; with --context-features the context tables are fitted from it).
    exported = export.run(argparse.Namespace(**{**vars(args), "out": csv_path, "start": 0.0,
                                                "end": 0.0, "tombstones_out": None,
                                                "impressions": True, "impressions_out": None}))
    if exported:
        return exported
    keep = without_erased(argparse.Namespace(interactions=csv_path, tombstones=None,
                                              secrets_dir=args.secrets_dir))
    inter, catalog = load(csv_path, args.items, keep=keep)
    config = config_from_args(args)
    imps = _impressions(args.work_dir / "impressions.jsonl", inter) if config.context_features else None
    try:
        report = compare(inter, catalog, config, serving_dir, args.work_dir, imps)
    except (ValueError, ChildProcessError) as err:   # no data to compare on; a server not up
        print(f"retrain: {err}", file=sys.stderr)
        return 1
    served, cand = report["serving"]["ndcg@10"], report["candidate"]["ndcg@10"]
    print(json.dumps({"serving_version": version, **report}, indent=2))
    if cand < served - args.tolerance:
        print(f"refused: candidate NDCG@10 {cand:.4f} < serving {served:.4f} - {args.tolerance:g} "
              "on the same hold-out; nothing pushed", file=sys.stderr)
        return 3
    bundle = write_bundle(train(inter, catalog, config, imps), args.work_dir / "bundles")
    print(f"not worse (NDCG@10 {cand:.4f} vs {served:.4f}): pushing {bundle.name} as a "
          f"{args.canary:g}% canary")
    # never --new-catalog: a candidate of another catalog than the serving bundle's is refused
    push_args = argparse.Namespace(**{**vars(args), "bundle": bundle, "stage_only": False,
                                      "new_catalog": False})
    from training import push
    return push.run(push_args)
