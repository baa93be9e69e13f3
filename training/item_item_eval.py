"""Do item-item features lift the ranker past EASE and ALS? An offline experiment (issue 21).

``python -m training.item_item_eval --users 10000 [--events-per-user 120] [--kind ease]``
draws a demo world (`training.demo`), splits it as the served backtest does (each user's last
20% of rows, `training.backtest.split_rows`) and scores, on the users with rows on both sides
and with every seen item filtered (`training.backtest.score`):

- ``retrieval``: Tailor's ALS candidates in score order;
- ``ranker``: LightGBM over `kernels.ranking.FEATURES` (what bundles serve today);
- ``ranker+item-item``: the same plus `training.item_item.ITEM_ITEM_FEATURES` (the neighbour
  table fitted on the rows each stage saw: no leakage into the ranker's labels);
- ``ease``, ``implicit-als``: the backtest's baselines, tuned on an inner split of the training
  rows (`training.backtest._tune`; ALS on a two-point grid around the full grid's picks);
- ``oracle``: the world's true view probabilities (`training.ceiling`) on a sample of users,
  with every method scored again on the same sample (``*_sample`` rows): the ceiling.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from kernels.ranking import FEATURES
from training.als import ALSParams
from training.backtest import EASE_GRID, _als, _ease, _tune, score, split_rows
from training.ceiling import oracle_recommendations, view_probabilities
from training.cli.types import positive_int, positive_number
from training.demo import DemoConfig, in_memory, make_world, user_events
from training.encoder import pad_histories
from training.evaluate import rerank
from training.events import DEFAULT_EVENT_WEIGHTS, Catalog, Interactions
from training.item_item import ITEM_ITEM_FEATURES, item_item_features, neighbour_table
from training.ranker import RankerParams, to_onnx, train_ranker
from training.retrieval import encoder_session
from training.split import distinct_items
from training.stage import fit_stage

__all__ = ["ALS_POINTS", "ItemItemStage", "world_rows", "run"]

K = 10
ALS_POINTS = [{"factors": 128, "regularization": 100.0, "alpha": 1.0},
              {"factors": 64, "regularization": 10.0, "alpha": 1.0}]
"""The full grid's picks on the default and long-history worlds (`training.backtest.ALS_GRID`)."""


class ItemItemStage:
    """A fitted `training.stage.Stage` whose features gain the item-item columns."""

    def __init__(self, stage, table):
        self.stage, self.table = stage, table

    def __getattr__(self, name):
        return getattr(self.stage, name)

    def features(self, users, cand, scores):
        base = self.stage.features(users, cand, scores)
        items, weights = pad_histories(*self.stage.hist, users, self.stage.params.history_len)
        extra = item_item_features(self.table, items, weights, cand, self.stage.table.category)
        return np.concatenate([base, extra], axis=2)


def world_rows(cfg: DemoConfig) -> tuple[Interactions, Catalog, object, dict]:
    """The world's rows (codes = raw ids), catalog, `demo.World` and users' ground truth."""
    world = make_world(cfg)
    parts = [user_events(cfg, world, c) for c in range(-(-cfg.n_users // cfg.chunk_users))]
    ev = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    users = {k: np.concatenate([p[0][k] for p in parts]) for k in ("mix", "taste", "price_sens")}
    inter, catalog = in_memory(cfg, world, ev)
    return inter, catalog, world, users


def _ranked(stage, booster, users: np.ndarray, n_candidates: int) -> tuple:
    session = encoder_session(to_onnx(booster).SerializeToString(), 2)
    out, retrieval = [], []
    for start in range(0, users.shape[0], 2048):
        rows = users[start:start + 2048]
        cand, scores = stage.candidates(rows, n_candidates)
        retrieval.append(cand[:, :K])
        out.append(rerank(session, stage.features(rows, cand, scores), cand))
    return np.concatenate(out), np.concatenate(retrieval)


def _tailor(before, catalog, users, kind: str, m: int, p: RankerParams) -> dict:
    """Recommendation lists of retrieval, the ranker and the ranker with item-item features."""
    def fit(rows):
        return fit_stage(rows, catalog, ALSParams(), DEFAULT_EVENT_WEIGHTS)

    def fit_ii(rows):
        return ItemItemStage(fit(rows), neighbour_table(rows, kind, m))

    stage = fit_ii(before)
    out, info = {}, {}
    for name, fitter, names in (("ranker", fit, FEATURES),
                                ("ranker+item-item", fit_ii, FEATURES + ITEM_ITEM_FEATURES)):
        booster, info[name] = train_ranker(before, catalog, fitter, p, feature_names=names)
        served = stage if fitter is fit_ii else stage.stage
        out[name], out["retrieval"] = _ranked(served, booster, users, p.n_candidates)
        gain = booster.feature_importance("gain")
        info[name]["top_gain"] = {names[i]: round(float(gain[i] / gain.sum()), 3)
                                  for i in np.argsort(-gain)[:6]}
    return out, info


def run(cfg: DemoConfig, kind: str = "ease", m: int = 50, oracle_users: int = 2000,
        oracle_samples: int = 2000, p: RankerParams | None = None) -> dict:
    """Scores of every method (see the module docstring) on one world."""
    p = p or RankerParams()
    inter, catalog, world, truth = world_rows(cfg)
    before, after = split_rows(inter, test_frac=0.2, weights=DEFAULT_EVENT_WEIGHTS)
    test = distinct_items(after.user, after.item, after.n_users)
    seen = distinct_items(before.user, before.item, before.n_users)
    users = np.flatnonzero((np.diff(test[0]) > 0) & (np.diff(seen[0]) > 0))
    lists, info = _tailor(before, catalog, users, kind, m, p)
    for name, make, grid in (("ease", _ease, [{"regularization": g} for g in EASE_GRID]),
                             ("implicit-als", _als, ALS_POINTS)):
        model, best, _ = _tune(name, make, grid, before)
        lists[name] = model.recommend(users, K)
        info[name] = {"params": best}
    out = {"world": {"n_users": cfg.n_users, "n_items": cfg.n_items,
                     "events_per_user": cfg.events_per_user, "kind": kind, "m": m},
           "users": int(users.shape[0]), "info": info}
    for name, recs in lists.items():
        out[name] = _metrics(recs, users, test, seen, inter.n_items)
    if oracle_users:
        pick = np.sort(np.random.default_rng(0).permutation(users.shape[0])[:oracle_users])
        prob = view_probabilities(world, cfg, truth, users[pick], oracle_samples)
        lists["oracle"] = None
        for name, recs in lists.items():
            recs = oracle_recommendations(prob, seen, users[pick], K) if recs is None else recs[pick]
            out[f"{name}_sample"] = _metrics(recs, users[pick], test, seen, inter.n_items)
    return out


def _metrics(recs, users, test, seen, n_items) -> dict:
    m = score(recs, users, test, seen, n_items, K)
    return {key: round(m[key], 4) for key in ("ndcg@10", "ndcg@10_se", "recall@10")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.item_item_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=positive_int, default=10_000)
    ap.add_argument("--items", type=positive_int, default=5_000)
    ap.add_argument("--events-per-user", type=positive_number)
    ap.add_argument("--kind", choices=("ease", "cosine"), default="ease")
    ap.add_argument("--neighbours", type=positive_int, default=50)
    ap.add_argument("--oracle-users", type=positive_int, default=2000)
    ap.add_argument("--oracle-samples", type=positive_int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = DemoConfig(n_users=args.users, n_items=args.items, seed=args.seed,
                     events_per_user=args.events_per_user, chunk_users=min(args.users, 25_000))
    print(json.dumps(run(cfg, args.kind, args.neighbours, args.oracle_users,
                         args.oracle_samples), indent=1))


if __name__ == "__main__":
    from training.cli import run_guarded

    raise SystemExit(run_guarded(main))
