"""Temporal hold-out evaluation of the full pipeline, retrieval alone and a popularity baseline.

All three see the same users (those with at least one test item, or a seeded uniform sample of
``max_users`` of them), exclude the same training items and are scored with
`training.metrics.ranking_metrics` at k = 10 (recall and NDCG also at the smaller cut-offs of
``CURVE_KS``, for the report's curves). Retrieval is exact (`training.retrieval.top_k`). The
bootstrap standard error of each method's recall@10 and NDCG@10 over the evaluated users goes in
``se``, so a change between two runs can be judged against the sampling noise.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from training.events import Interactions
from training.metrics import bootstrap_se, per_user_metrics, ranking_metrics
from training.split import distinct_items

__all__ = ["CURVE_KS", "NOTHING_MEASURED", "eval_units", "eval_users", "evaluate", "measured",
           "rerank", "popular_unseen", "format_table", "segment_metrics", "unmeasured"]

logger = logging.getLogger("tailor.training.evaluate")

K = 10
CURVE_KS = (1, 3, 5)
"""Cut-offs below K whose recall and NDCG are also kept (the report's recall@k / NDCG@k curves)."""


def rerank(session, feats: np.ndarray, cand: np.ndarray, k: int = K) -> np.ndarray:
    """Order candidates by the ranker's score; returns item rows [U, k] (-1 = empty)."""
    u, c, f = feats.shape
    score = session.run(None, {"features": feats.reshape(u * c, f)})[0].reshape(u, c)
    score = np.where(cand >= 0, score, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1)


def popular_unseen(by_pop: np.ndarray, users: np.ndarray, seen: tuple, k: int = K) -> np.ndarray:
    """The ``k`` most popular items each user has not seen ([U, k], -1 = none left)."""
    indptr, items = seen
    counts = indptr[users + 1] - indptr[users]
    width = min(by_pop.shape[0], k + int(counts.max(initial=0)))
    cand = np.broadcast_to(by_pop[:width], (users.shape[0], width))
    n = by_pop.shape[0]
    owner = np.repeat(np.arange(users.shape[0], dtype=np.int64), counts)
    pos = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
           + np.repeat(indptr[users], counts))
    masked = np.isin(np.arange(users.shape[0])[:, None] * n + cand, owner * n + items[pos])
    pick = np.argsort(masked, axis=1, kind="stable")[:, :k]
    out = np.where(np.take_along_axis(masked, pick, 1), -1, np.take_along_axis(cand, pick, 1))
    return np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)


def eval_users(test: Interactions, max_users: int = 0, seed: int = 0):
    """CSR of the test items and the users to evaluate: every user with a test item, or a
    uniform sample of ``max_users`` of them without replacement (``seed``), in code order.

    Returns
    -------
    indptr, items : ndarray
        `training.split.distinct_items` of the test rows.
    users : ndarray of int64
    n_test_users : int
        How many users had a test item (the population sampled from).
    """
    indptr, items = distinct_items(test.user, test.item, test.n_users)
    users = np.flatnonzero(np.diff(indptr) > 0)
    n_test_users = int(users.shape[0])
    if 0 < max_users < n_test_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return indptr, items, users, n_test_users


NOTHING_MEASURED = ("no user has a held-out row: nothing measured (a user needs at least 2 "
                    "rows of positive weight; the last --test-frac of them are held out)")


def unmeasured(n_test: int = 0, **eval_info) -> dict:
    """The metrics of an empty hold-out: no method, ``se`` or ``segments`` figure (0.0 would
    read as measured, e.g. GetModelStatus's ``model.ndcg@10``), ``eval.measured`` false."""
    return {"n_eval_users": 0, "n_test_users": n_test,
            "eval": {**eval_info, "users": 0, "of_test_users": n_test, "measured": False,
                     "sample": NOTHING_MEASURED}}


def measured(metrics: dict) -> bool:
    """True when ``metrics`` hold figures (a hold-out was scored), False for `unmeasured`."""
    return isinstance(metrics.get("model"), dict)


def evaluate(stage, test: Interactions, ranker=None, n_candidates: int = 100,
             batch: int = 8192, segments: dict[str, np.ndarray] | None = None,
             max_users: int = 0, seed: int = 0) -> dict:
    """Metrics for ``model``, ``retrieval`` and ``popularity``, their ``se``, and who was scored
    (and ``segments``, when given: `segment_metrics`).

    Parameters
    ----------
    stage : training.stage.Stage
        Fitted on the training rows.
    test : Interactions
        Held-out rows (same code tables).
    ranker : onnxruntime.InferenceSession, optional
        Without it ``model`` equals ``retrieval``.
    segments : dict of str to bool array over user codes, optional
        `training.segments.user_segments`.
    max_users, seed : int
        Evaluate a seeded sample of this many users with test items (0: all of them).

    Returns
    -------
    dict
        Per method ``recall@10``, ``ndcg@10``, ``map@10``, ``coverage`` (and the curve points);
        ``se`` (per method, bootstrap SE of recall@10 and ndcg@10); ``n_eval_users``,
        ``n_test_users`` and ``eval`` (how the users were chosen and scored).
    """
    t0 = time.perf_counter()
    indptr, items, users, n_test_users = eval_users(test, max_users, seed)
    if not users.shape[0]:
        return unmeasured(n_test_users)
    recs = {"model": [], "retrieval": [], "popularity": []}
    by_pop = np.argsort(-stage.popularity, kind="stable")
    for start in range(0, users.shape[0], batch):
        rows = users[start:start + batch]
        cand, scores = stage.candidates(rows, max(n_candidates, K))
        recs["retrieval"].append(cand[:, :K])
        if ranker is not None:
            recs["model"].append(rerank(ranker, stage.features(rows, cand, scores), cand))
        recs["popularity"].append(popular_unseen(by_pop, rows, stage.seen, K))
    if ranker is None:
        recs["model"] = recs["retrieval"]
    n_items = stage.item_factors.shape[0]
    out, se = {}, {}
    lists = {name: np.concatenate(parts) if parts else np.zeros((0, K), np.int64)
             for name, parts in recs.items()}
    for name, r in lists.items():
        m = ranking_metrics(r, indptr, items, users, n_items, K)
        out[name] = {key: round(m[key], 6)
                     for key in ("recall@10", "ndcg@10", "map@10", "coverage")}
        out[name].update(_curve_points(r, indptr, items, users, n_items))
        per = per_user_metrics(r, indptr, items, users, K)
        se[name] = {key: round(bootstrap_se(per[key]), 6) for key in ("recall@10", "ndcg@10")}
    out["se"] = se
    out["n_eval_users"] = int(users.shape[0])
    if segments:
        out["segments"] = segment_metrics(lists, (indptr, items), users, n_items, segments)
    out["n_test_users"] = n_test_users
    out["eval"] = {"users": int(users.shape[0]), "of_test_users": n_test_users,
                   "sample": ("all users with a test item" if users.shape[0] == n_test_users else
                              f"uniform without replacement, seed {seed}"),
                   "top_k": "exact inner product over every item (FAISS brute force)",
                   "se": "bootstrap over the evaluated users, 1000 resamples"}
    logger.info("evaluated %d users in %.1fs", users.shape[0], time.perf_counter() - t0)
    return out


def segment_metrics(lists: dict[str, np.ndarray], test_csr: tuple, users: np.ndarray,
                    n_items: int, segments: dict[str, np.ndarray]) -> dict:
    """Per segment: ``n_users`` and, per method, recall@10 and NDCG@10 over its users."""
    out = {}
    for segment, member in segments.items():
        keep = member[users]
        entry: dict = {"n_users": int(keep.sum())}
        for name, r in lists.items():
            m = ranking_metrics(r[keep], *test_csr, users[keep], n_items, K)
            entry[name] = {"recall@10": round(m["recall@10"], 6), "ndcg@10": round(m["ndcg@10"], 6)}
        out[segment] = entry
    return out


def _curve_points(recs, indptr, items, users, n_items) -> dict:
    """``recall@k`` and ``ndcg@k`` of the same lists cut at each k of CURVE_KS."""
    out = {}
    for k in CURVE_KS:
        m = ranking_metrics(recs, indptr, items, users, n_items, k)
        out[f"recall@{k}"], out[f"ndcg@{k}"] = round(m[f"recall@{k}"], 6), round(m[f"ndcg@{k}"], 6)
    return out


def eval_units(metrics: dict) -> str:
    """What ``n_eval_users`` counts: ``"requests"`` for a context-features evaluation
    (`training.context_ranker.evaluate_requests`), else ``"users"``."""
    unit = metrics.get("eval", {}).get("unit", "")
    return "requests" if unit.startswith("request") else "users"


def format_table(metrics: dict) -> str:
    """Fixed-width table of the metric dict, one row per method."""
    cols = ("recall@10", "ndcg@10", "map@10", "coverage")
    lines = [f"{'method':<12}" + "".join(f"{c:>11}" for c in cols)]
    se = metrics.get("se", {})
    for name in ("model", "retrieval", "popularity"):
        if name in metrics:
            lines.append(f"{name:<12}" + "".join(f"{metrics[name][c]:>11.4f}" for c in cols))
        if name in se:
            lines.append(f"{'  (SE)':<12}" + "".join(
                f"{se[name][c]:>11.4f}" if c in se[name] else f"{'':>11}" for c in cols).rstrip())
    if eval_units(metrics) == "requests":
        lines.append(f"n_eval requests = {metrics.get('n_eval_users', 0)} of "
                     f"{metrics.get('n_test_users', 0)} hold-out (user, channel, daypart) "
                     f"requests, of {metrics['eval'].get('n_users', '?')} users")
    else:
        lines.append(f"n_eval_users = {metrics.get('n_eval_users', 0)}"
                     + (f" of {metrics['n_test_users']} users with test items"
                        if "n_test_users" in metrics else ""))
    if not measured(metrics):
        lines.append(NOTHING_MEASURED)
    if metrics.get("segments"):
        lines.append(f"{'segment (ndcg@10)':<18}{'users':>7}" + "".join(
            f"{n:>12}" for n in ("model", "retrieval", "popularity")))
        for segment, m in metrics["segments"].items():   # no user: nothing measured, not 0
            lines.append(f"{segment:<18}{m['n_users']:>7}" + "".join(
                f"{m[n]['ndcg@10']:>12.4f}" if m["n_users"] else f"{'-':>12}"
                for n in ("model", "retrieval", "popularity") if n in m))
    return "\n".join(lines)
