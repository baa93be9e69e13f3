"""NDCG@10 of the Recommend pipeline without context features, with them fitted from the events,
and with them fitted from the impression log, in process (issue 19).

    python -m loadtests.context_ndcg [--users 4000] [--items 800] [--days 60] [--strength 1.0]
                                     [--impressions-per-user 8]

Draws the demo tastes world with its simulated impression log (`training demo-data
--context-tastes STRENGTH --impressions-per-user R`: a context-blind model's answers and the
clicks the world's context tastes give them, `training.demo_impressions`), reads both back
through the training readers, holds out each user's last 20% of rows
(`training.backtest.split_rows`; impressions shown at or after a user's first hold-out row are
dropped too), trains three bundles on the rest with `training train`'s pipeline, identical but
for ``--context-features``, ``--impressions`` and ``--impression-groups`` (the fourth, an
ablation: the ranker also trained on the shown candidates of the impressions), loads each as the
server does (`server.models.load_bundle`) and answers
every hold-out request through `server.recommend.pipeline.recommend_batch` (seen items excluded
for good, as the served backtest does). A request is one (user, channel, UTC daypart) of the
hold-out: it is sent with that ``channel`` and a request time in that daypart, and its relevant
items are the user's hold-out items in that context. So both bundles are scored on the same
requests, with the features the server computes. Printed: a table of NDCG@10 and recall@10 per
bundle with bootstrap SE over the users of the requests (a user's requests resampled
together), each bundle's paired NDCG@10 difference from the
bundle without context (and impressions minus events) with its bootstrap SE, then the JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from contract.events import EVENT_TYPES
from kernels.context import CHANNELS
from server.models.bundle import load_bundle
from server.recommend.exclusion import SeenPolicy
from server.recommend.handler import bundle_histories
from server.recommend.pipeline import RecQuery, recommend_batch
from training.als import ALSParams
from training.backtest import split_rows
from training.bundle import write_bundle
from training.context_impressions import before_cutoffs
from training.context_ranker import requests
from training.demo import DemoConfig
from training.demo_files import write_demo
from training.impression_log import read_impressions, user_cutoffs
from training.metrics import bootstrap_se, per_user_metrics
from training.pipeline import TrainConfig, train
from training.readers import load

K = 10
MONDAY = 1_701_648_000  # 2023-12-04 00:00 UTC


def request_time(part: int) -> int:
    """A unix time in UTC daypart ``part`` (`kernels.context.daypart`): the middle of its block."""
    day = 5 if part >= 4 else 0
    return MONDAY + day * 86_400 + (part % 4) * 6 * 3_600 + 3 * 3_600


def served(bundle, user_ids: np.ndarray, req, batch: int = 256) -> np.ndarray:
    """Item rows [R, K] the pipeline answers for each request (-1: fewer than K)."""
    users, channel, part = req[:3]
    policy = SeenPolicy({t: float("inf") for t in EVENT_TYPES})
    out = np.full((users.shape[0], K), -1, np.int64)
    for p in np.unique(part):
        idx = np.flatnonzero(part == p)
        for start in range(0, idx.shape[0], batch):
            chunk = idx[start:start + batch]
            queries = [RecQuery(str(user_ids[users[j]]), K,
                                channel=CHANNELS[channel[j]] if channel[j] >= 0 else "")
                       for j in chunk]
            results = recommend_batch(bundle, queries, bundle_histories, policy=policy,
                                      now=request_time(int(p)))
            for j, r in zip(chunk, results):
                out[j, :len(r.rows)] = r.rows[:K]
    return out


BUNDLES = (("without context", False, False, False), ("context from events", True, False, False),
           ("context from impressions", True, True, False),
           ("impressions + shown groups", True, True, True))


def _owners(req, m: dict) -> np.ndarray:
    """The user of each request `per_user_metrics` kept: a user's requests are not independent,
    so a standard error resamples them together (`bootstrap_se(groups=)`)."""
    return req[0][m["users"]]


def _diff(per: dict, name: str, base: str, owners: np.ndarray) -> dict:
    diff = per[name]["ndcg@10"] - per[base]["ndcg@10"]
    return {"mean": round(float(diff.mean()), 4),
            "se (paired bootstrap)": round(bootstrap_se(diff, groups=owners), 4),
            "relative": round(float(diff.mean()) / max(float(per[base]["ndcg@10"].mean()), 1e-12), 4)}


def _world(args, tmp: Path):
    """(events before, after the split, catalog, the impressions before each user's split)."""
    cfg = DemoConfig(n_users=args.users, n_items=args.items, n_days=args.days, seed=args.seed,
                     chunk_users=min(args.users, 25_000))
    write_demo(tmp / "data", cfg, context_tastes=args.strength,
               impressions_per_user=args.impressions_per_user)
    inter, catalog = load(tmp / "data" / "interactions.csv", tmp / "data" / "items.csv")
    before, after = split_rows(inter, test_frac=0.2)
    imps = read_impressions(tmp / "data" / "impressions.jsonl", inter.user_ids, inter.item_ids)
    cut = user_cutoffs(after, np.ones(len(after), bool))
    return inter, before, after, catalog, imps.subset(before_cutoffs(imps, cut))


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="tailor-context-") as tmp:
        inter, before, after, catalog, imps = _world(args, Path(tmp))
        req = requests(after.subset(after.channel >= 0))
        ids = np.arange(req[0].shape[0])
        out = {"world": {"users": args.users, "items": args.items, "days": args.days,
                         "strength": args.strength,
                         "impressions_per_user": args.impressions_per_user},
               "n_requests": int(ids.shape[0]), "n_impressions": len(imps)}
        per = {}
        for name, context, logged, shown in BUNDLES:
            config = TrainConfig(als=ALSParams(seed=args.seed), context_features=context,
                                 impression_groups=shown)
            result = train(before, catalog, config, imps if logged else None)
            bundle = load_bundle(write_bundle(result, Path(tmp) / "bundles"))
            m = per_user_metrics(served(bundle, inter.user_ids, req), *req[3], ids, K)
            per[name] = m
            out[name] = {"ndcg@10": round(float(m["ndcg@10"].mean()), 4),
                         "ndcg@10_se": round(bootstrap_se(m["ndcg@10"], groups=_owners(req, m)), 4),
                         "recall@10": round(float(m["recall@10"].mean()), 4),
                         "context_source": result.context_source.get("source", "none"),
                         "ranker_features": list(bundle.manifest.ranker_features)}
        owners = _owners(req, per["without context"])  # the same requests in every bundle
        out["ndcg@10 difference"] = {
            "events - without": _diff(per, "context from events", "without context", owners),
            "impressions - without": _diff(per, "context from impressions", "without context",
                                           owners),
            "shown groups - without": _diff(per, "impressions + shown groups", "without context",
                                            owners),
            "impressions - events": _diff(per, "context from impressions", "context from events",
                                          owners)}
    return out


def table(out: dict) -> str:
    """The figure: one line per bundle (NDCG@10 +- SE, recall@10, paired difference)."""
    lines = [f"{'bundle':<26}{'ndcg@10':>9}{'(SE)':>8}{'recall@10':>11}  paired diff vs without",
             ]
    diffs = out["ndcg@10 difference"]
    for name, key in (("without context", None), ("context from events", "events - without"),
                      ("context from impressions", "impressions - without"),
                      ("impressions + shown groups", "shown groups - without")):
        row, d = out[name], diffs.get(key)
        gain = "" if d is None else f"{d['mean']:+.4f} +- {d['se (paired bootstrap)']:.4f}"
        lines.append(f"{name:<26}{row['ndcg@10']:>9.4f}{row['ndcg@10_se']:>8.4f}"
                     f"{row['recall@10']:>11.4f}  {gain}")
    d = diffs["impressions - events"]
    lines.append(f"impressions - events: {d['mean']:+.4f} +- {d['se (paired bootstrap)']:.4f} "
                 f"(paired bootstrap SE), {out['n_requests']} hold-out requests")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtests.context_ndcg", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--items", type=int, default=800)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--strength", type=float, default=1.0,
                    help="context_tastes of the demo world (0: the default world)")
    ap.add_argument("--impressions-per-user", type=float, default=8.0,
                    help="mean requests per user of the simulated impression log")
    ap.add_argument("--seed", type=int, default=0)
    out = run(ap.parse_args(argv))
    print(table(out))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
