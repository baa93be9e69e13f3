"""The ranker with request-context features (``train --context-features``): training and hold-out.

The context features (`kernels.context.CONTEXT_FEATURES`: the candidate category's lift on the
request's channel and in its UTC daypart) are appended to `kernels.ranking.FEATURES`. Here their
tables are fitted from training rows that carry a channel and a time: the *events' own*
``channel`` column with their timestamps. This is the fallback source: ``train --impressions``
fits them from the impression log instead (`training.context_impressions`, which says why that
is better: the request's own context, and the shown items not taken as negatives). Events are
the only source before a context bundle has been served and logged, and for data from elsewhere.
The demo tastes world (`training.demo_tastes`) writes such a column.

A *request* is one (user, channel, daypart) of the rows, as the server sees one: its relevant
items are the user's items in that context. The ranker is trained like `training.ranker`
(inner temporal split of the training rows, stage 1 fitted on the rest, fewest trees within the
tolerance) but grouped per request, and evaluated per request on the hold-out
(`evaluate_requests`, the same keys as `training.evaluate.evaluate`).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from kernels.context import CONTEXT_FEATURES, ContextTable, context_features, daypart
from kernels.ranking import FEATURES
from training.evaluate import K, _curve_points, popular_unseen, rerank, unmeasured
from training.events import Catalog, Interactions
from training.metrics import bootstrap_se, hits, per_user_metrics, ranking_metrics
from training.ranker import RankerParams, fit_booster
from training.split import distinct_items, temporal_split

__all__ = ["fit_table", "requests", "request_features", "request_parts", "train_context_ranker",
           "evaluate_requests"]

logger = logging.getLogger("tailor.training.context_ranker")


def fit_table(rows: Interactions, catalog: Catalog) -> ContextTable:
    """Context tables from ``rows`` (their ``channel`` codes and UTC times)."""
    return ContextTable.fit(catalog.category[rows.item], _channel(rows), rows.ts,
                            len(catalog.category_names))


def _channel(rows: Interactions) -> np.ndarray:
    if rows.channel is None:
        raise ValueError("context features need a channel per row: the interactions file has "
                         "no `channel` column (e.g. `training demo-data --context-tastes 1`)")
    return rows.channel.astype(np.int64)


def requests(rows: Interactions, channel: np.ndarray | None = None) -> tuple:
    """One request per distinct (user, channel, daypart): user, channel, daypart arrays and the
    CSR of its distinct items (``channel``: the rows' codes, default ``rows.channel``)."""
    channel = _channel(rows) if channel is None else np.asarray(channel, np.int64)
    key = (rows.user.astype(np.int64) * 4 + (channel + 1)) * 8 + daypart(rows.ts)
    uniq, inv = np.unique(key, return_inverse=True)
    indptr, items = distinct_items(inv, rows.item, uniq.shape[0])
    return uniq // 32, (uniq // 8) % 4 - 1, uniq % 8, (indptr, items)


def subset(req, idx) -> tuple:
    """Requests ``idx`` (sorted) of ``req``."""
    indptr, items = req[3]
    sizes = indptr[idx + 1] - indptr[idx]
    pos = np.concatenate([np.arange(indptr[i], indptr[i + 1]) for i in idx]) if len(idx) else []
    return (req[0][idx], req[1][idx], req[2][idx],
            (np.concatenate([[0], np.cumsum(sizes)]), items[np.asarray(pos, np.int64)]))


def request_features(stage, table: ContextTable, req, n_candidates: int, context: bool = True):
    """Candidates [R, C] and features [R, C, F (+2)] of requests ``req`` (`requests` output):
    the columns the server computes for such a request (`server.recommend.context`)."""
    users, channel, part = req[:3]
    cand, scores = stage.candidates(users, n_candidates)
    feats = stage.features(users, cand, scores)
    if context:
        cat = stage.table.category[np.maximum(cand, 0)]
        feats = np.concatenate([feats, context_features(table, cat, channel, part)], axis=2)
    return cand, feats


def _dataset(stage, table, req, p: RankerParams, context: bool):
    cand, feats = request_features(stage, table, req, p.n_candidates, context)
    y = hits(cand, *req[3], np.arange(cand.shape[0]))
    keep = y.any(axis=1)
    valid = cand[keep] >= 0
    return feats[keep][valid], y[keep][valid].astype(np.int32), valid.sum(axis=1)


def request_parts(stage, table: ContextTable, req, p: RankerParams, context: bool) -> list:
    """``[(X, y, group sizes) of training, of validation]`` of at most ``p.max_users`` requests
    ``req`` (`requests` output; seeded pick, ``p.valid_frac`` of them for validation)."""
    pick = np.random.default_rng(p.seed).permutation(req[0].shape[0])[:p.max_users]
    n_valid = int(pick.shape[0] * p.valid_frac)
    return [_dataset(stage, table, subset(req, np.sort(idx)), p, context)
            for idx in (pick[n_valid:], pick[:n_valid])]


def train_context_ranker(train: Interactions, catalog: Catalog, fit_stage,
                         p: RankerParams | None = None, context: bool = True):
    """A booster over `FEATURES` (+ `CONTEXT_FEATURES` with ``context``) grouped per request of
    the inner split's label rows (at most ``p.max_users`` requests, seeded).

    Returns
    -------
    booster : lightgbm.Booster
    info : dict
        As `training.ranker.train_ranker`'s, plus ``requests``.
    """
    t0, p = time.perf_counter(), p or RankerParams()
    inner_tr, inner_lab = temporal_split(train, 0.2)
    fit_rows = train.subset(inner_tr)
    stage1, table = fit_stage(fit_rows), fit_table(fit_rows, catalog)
    req = requests(train.subset(inner_lab))
    parts = request_parts(stage1, table, req, p, context)
    names = list(FEATURES) + (list(CONTEXT_FEATURES) if context else [])
    booster, info = fit_booster(parts, names, p)
    info.update(requests=int(req[0].shape[0]), features=names,
                seconds=round(time.perf_counter() - t0, 1))
    logger.info("context ranker trained: %s", info)
    return booster, info


REQUEST_UNIT = "request: one (user, channel, UTC daypart) of the hold-out rows"


def evaluate_requests(stage, table: ContextTable, test: Interactions, session=None,
                      n_candidates: int = 100, max_requests: int = 0, seed: int = 0,
                      batch: int = 4096) -> dict:
    """Hold-out metrics per request of ``test`` for ``model`` (``session``, a ranker reading
    `FEATURES` + `CONTEXT_FEATURES`; without it ``model`` is ``retrieval``), ``retrieval`` and
    ``popularity``, with bootstrap ``se`` over the requests; keys as `training.evaluate.evaluate`
    (``n_eval_users`` counts requests; ``eval.unit`` says so)."""
    req = requests(test)
    n_req = int(req[0].shape[0])
    if not n_req:
        return unmeasured(0, unit=REQUEST_UNIT, n_users=0)
    idx = np.arange(n_req)
    if 0 < max_requests < n_req:
        idx = np.sort(np.random.default_rng(seed).choice(n_req, max_requests, replace=False))
    req = subset(req, idx)
    by_pop = np.argsort(-stage.popularity, kind="stable")
    recs: dict[str, list] = {"model": [], "retrieval": [], "popularity": []}
    for start in range(0, idx.shape[0], batch):
        part = subset(req, np.arange(start, min(start + batch, idx.shape[0])))
        cand, feats = request_features(stage, table, part, max(n_candidates, K), True)
        recs["retrieval"].append(cand[:, :K])
        recs["model"].append(rerank(session, feats, cand) if session is not None else cand[:, :K])
        recs["popularity"].append(popular_unseen(by_pop, part[0], stage.seen, K))
    ids, n_items = np.arange(idx.shape[0]), stage.item_factors.shape[0]
    out: dict = {"se": {}}
    for name, parts in recs.items():
        r = np.concatenate(parts) if parts else np.zeros((0, K), np.int64)
        m = ranking_metrics(r, *req[3], ids, n_items, K)
        out[name] = {key: round(m[key], 6) for key in ("recall@10", "ndcg@10", "map@10", "coverage")}
        out[name].update(_curve_points(r, *req[3], ids, n_items))
        per = per_user_metrics(r, *req[3], ids, K)
        owner = req[0][per["users"]]   # a user's requests are resampled together
        out["se"][name] = {key: round(bootstrap_se(per[key], groups=owner), 6)
                           for key in ("recall@10", "ndcg@10")}
    out.update(n_eval_users=int(idx.shape[0]), n_test_users=n_req,
               eval={"unit": REQUEST_UNIT,
                     "users": int(idx.shape[0]), "of_test_users": n_req,
                     "n_users": int(np.unique(req[0]).shape[0]),
                     "sample": ("all requests" if idx.shape[0] == n_req
                                else f"uniform without replacement, seed {seed}"),
                     "se": "bootstrap over the users of the evaluated requests (a user's "
                           "requests together), 1000 resamples"})
    return out
