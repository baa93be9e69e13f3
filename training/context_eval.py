"""Do channel and daypart help the ranker? An offline experiment on the demo world.

``python -m training.context_eval --users 8000 --items 1500 --strength 1.0`` draws a demo world
(`training.demo`, ``context_tastes=strength``; 0 is the default world), splits each user's rows
temporally (last 20% held out), and compares on the hold-out:

- ``retrieval``: the ALS candidates in score order;
- ``ranker``: LightGBM over `kernels.ranking.FEATURES`;
- ``ranker+context``: the same plus `kernels.context.CONTEXT_FEATURES`.

A *request* is one (user, channel, daypart) of the hold-out: the request carries that channel and
daypart as context, and its relevant items are the user's hold-out items in that context (so each
hold-out interaction is scored with its own channel and hour). Both rankers are trained the same
way on the inner split of the training rows (`training.context_ranker.train_context_ranker`, the
one ``training train --context-features`` uses), and the context tables are fitted on the rows the
retrieval stage saw. Features come from `training.context_ranker.request_features`, which calls
the kernel the server calls (`kernels.context.context_features`). Trained from the events'
channel and time (`training.context_ranker` says why). The same comparison through the server's
own pipeline, on bundles: ``python -m loadtests.context_ndcg``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from kernels.context import ContextTable
from training.als import ALSParams
from training.cli.types import positive_int
from training.context_ranker import fit_table, request_features, requests, train_context_ranker
from training.demo import DemoConfig, in_memory, make_world, user_events
from training.events import DEFAULT_EVENT_WEIGHTS, EVENTS, Catalog, Interactions, event_weights
from training.metrics import ranking_metrics
from training.ranker import RankerParams
from training.split import temporal_split
from training.stage import fit_stage

__all__ = ["demo_rows", "requests", "request_features", "run"]

K = 10


def demo_rows(cfg: DemoConfig, strength: float) -> tuple[Interactions, Catalog, np.ndarray]:
    """The world's preference rows (event weight > 0), its catalog and each row's channel code."""
    world = make_world(cfg)
    chunks = [user_events(cfg, world, c, strength)[1]
              for c in range(-(-cfg.n_users // cfg.chunk_users))]
    ev = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    channel = ev.get("channel", np.full(ev["user_id"].shape[0], -1))
    inter, catalog = in_memory(cfg, world, ev)
    keep = event_weights(inter, DEFAULT_EVENT_WEIGHTS) > 0
    assert len(EVENTS) > 6
    return inter.subset(keep), catalog, channel[keep]


def _train(train, channel, catalog, als, p: RankerParams, context: bool, max_requests: int):
    rows = replace(train, channel=channel)
    booster, _ = train_context_ranker(rows, catalog,
                                      lambda r: fit_stage(r, catalog, als, DEFAULT_EVENT_WEIGHTS),
                                      replace(p, max_users=max_requests), context)
    return booster


def _table(rows: Interactions, channel: np.ndarray, catalog: Catalog) -> ContextTable:
    return fit_table(replace(rows, channel=channel), catalog)


def _metrics(recs, req, n_items) -> dict:
    m = ranking_metrics(recs, *req[3], np.arange(recs.shape[0]), n_items, K)
    return {"recall@10": round(m["recall@10"], 4), "ndcg@10": round(m["ndcg@10"], 4)}


def run(cfg: DemoConfig, strength: float, p: RankerParams | None = None,
        als: ALSParams | None = None, max_requests: int = 20_000) -> dict:
    """Hold-out recall@10 / NDCG@10 per request of retrieval and both rankers."""
    p, als = p or RankerParams(), als or ALSParams()
    rows, catalog, channel = demo_rows(cfg, strength)
    tr, te = temporal_split(rows, 0.2)
    train = rows.subset(tr)
    stage = fit_stage(train, catalog, als, DEFAULT_EVENT_WEIGHTS)
    table = _table(train, channel[tr], catalog)
    req = requests(rows.subset(te), channel[te])
    out = {"strength": strength, "n_users": cfg.n_users, "n_items": cfg.n_items,
           "n_requests": int(req[0].shape[0])}
    cand, _ = request_features(stage, table, req, p.n_candidates, False)
    out["retrieval"] = _metrics(cand[:, :K], req, cfg.n_items)
    for name, context in (("ranker", False), ("ranker+context", True)):
        booster = _train(train, channel[tr], catalog, als, p, context, max_requests)
        cand, feats = request_features(stage, table, req, p.n_candidates, context)
        score = booster.predict(feats.reshape(-1, feats.shape[2])).reshape(cand.shape)
        order = np.argsort(-np.where(cand >= 0, score, -np.inf), axis=1, kind="stable")[:, :K]
        out[name] = _metrics(np.take_along_axis(cand, order, axis=1), req, cfg.n_items)
        out[name]["trees"] = int(booster.num_trees())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.context_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=positive_int, default=8000)
    ap.add_argument("--items", type=positive_int, default=1500)
    ap.add_argument("--strength", type=float, default=1.0,
                    help="context_tastes of the demo world (0 = the default world)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = DemoConfig(n_users=args.users, n_items=args.items, seed=args.seed,
                     chunk_users=min(args.users, 25_000))
    print(json.dumps(run(cfg, args.strength), indent=1))


if __name__ == "__main__":
    from training.cli import run_guarded

    raise SystemExit(run_guarded(main))
