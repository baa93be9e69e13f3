"""Top-k ranking metrics with the project's exact definitions.

For a user with distinct test items T and a recommendation list r_1..r_k (k = 10, -1 = empty slot):
``rel_j = r_j in T``; ``m = min(k, |T|)``;
Recall@k = sum rel / m; NDCG@k = sum rel_j / log2(j + 1) over the ideal DCG of m positions;
MAP@k = sum rel_j * P@j / m; MRR@k = 1 / rank of the first hit (0 without one). Averages run over
users with |T| > 0. Coverage = distinct recommended items / catalog size. `bootstrap_se` is the
standard error of a per-user mean by resampling users. `group_ndcg` is NDCG@k within candidate
groups (the ranker's validation: its positives are the group's, not the user's whole T).
"""
from __future__ import annotations

import logging

import numpy as np

__all__ = ["bootstrap_se", "group_ndcg", "hits", "per_user_metrics", "ranking_metrics"]

logger = logging.getLogger("tailor.training.metrics")


def hits(recs: np.ndarray, indptr: np.ndarray, items: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Boolean [U, k]: is ``recs[u, j]`` among the test items of ``users[u]`` (CSR ``indptr``)."""
    width = int(max(items.max(initial=0), recs.max(initial=0))) + 1
    owner = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
    test_keys = owner * width + items
    rec_keys = users.astype(np.int64)[:, None] * width + np.where(recs >= 0, recs, width - 1)
    found = np.isin(rec_keys, test_keys)
    return found & (recs >= 0)


def per_user_metrics(recs: np.ndarray, indptr: np.ndarray, items: np.ndarray,
                     users: np.ndarray, k: int = 10) -> dict:
    """Per-user ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr@k`` (arrays over users with |T| > 0).

    Also returns ``users`` (the kept user codes) and ``recs`` (their first k slots).
    """
    recs = np.asarray(recs)[:, :k]
    n_test = (indptr[users + 1] - indptr[users]).astype(np.float64)
    keep = n_test > 0
    recs, n_test, users = recs[keep], n_test[keep], users[keep]
    rel = hits(recs, indptr, items, users).astype(np.float64)
    m = np.minimum(k, n_test)
    ranks = np.arange(1, recs.shape[1] + 1)
    discount = 1.0 / np.log2(ranks + 1)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    precision = np.cumsum(rel, axis=1) / ranks
    first = np.where(rel.any(axis=1), rel.argmax(axis=1) + 1, np.inf)
    return {f"recall@{k}": rel.sum(axis=1) / m,
            f"ndcg@{k}": (rel * discount).sum(axis=1) / ideal[m.astype(np.int64)],
            f"map@{k}": (rel * precision).sum(axis=1) / m,
            f"mrr@{k}": 1.0 / first, "users": users, "recs": recs}


def group_ndcg(scores: np.ndarray, labels: np.ndarray, sizes: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over consecutive groups of ``sizes`` rows, each ranked by ``scores``
    (descending; ties by row order), with ``labels`` > 0 relevant and the ideal DCG of
    min(k, the group's relevant rows); groups without one are left out (0.0 with none left)."""
    total, counted, start = 0.0, 0, 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    for size in np.asarray(sizes, np.int64):
        rel = np.asarray(labels[start:start + size]) > 0
        order = np.argsort(-np.asarray(scores[start:start + size], np.float64), kind="stable")[:k]
        start += size
        m = min(k, int(rel.sum()))
        if m:
            total += float(rel[order] @ discount[:len(order)]) / float(discount[:m].sum())
            counted += 1
    return total / counted if counted else 0.0


def bootstrap_se(values: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 groups: np.ndarray | None = None) -> float:
    """Standard error of ``values.mean()`` from ``n_boot`` resamples of the users (seeded).

    With ``groups`` (one label per value, e.g. the user of each request) whole groups are
    resampled and each resample's mean is its values' sum over their count: values of one group
    are not independent, and resampling them one by one understates the SE.
    """
    values = np.asarray(values, np.float64)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != values.shape:
            raise ValueError(f"one group label per value: {groups.shape[0]} labels, "
                             f"{values.shape[0]} values")
        _, inverse = np.unique(groups, return_inverse=True)
        sums, counts = np.bincount(inverse, values), np.bincount(inverse).astype(np.float64)
    else:
        sums, counts = values, None
    if sums.shape[0] < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    n = sums.shape[0]
    for b in range(n_boot):   # one row of indices at a time: memory stays O(n_users)
        pick = rng.integers(0, n, n)
        means[b] = sums[pick].mean() if counts is None else sums[pick].sum() / counts[pick].sum()
    return float(means.std(ddof=1))


def ranking_metrics(recs: np.ndarray, indptr: np.ndarray, items: np.ndarray,
                    users: np.ndarray, n_items: int, k: int = 10) -> dict:
    """Recall, NDCG, MAP, MRR at ``k`` and catalog coverage.

    Parameters
    ----------
    recs : ndarray of int, shape (U, >=k)
        Ranked item codes per evaluated user; -1 marks an empty slot. Only the first k are used.
    indptr, items : ndarray
        CSR of distinct test items, indexed by user code.
    users : ndarray of int, shape (U,)
        User code of each row of ``recs``.
    n_items : int
        Catalog size for coverage.

    Returns
    -------
    dict
        ``recall@k``, ``ndcg@k``, ``map@k``, ``mrr@k``, ``coverage``, ``n_users``.
    """
    per = per_user_metrics(recs, indptr, items, users, k)
    recs = per.pop("recs")
    per.pop("users")
    shown = np.unique(recs[recs >= 0])
    out = {name: float(v.mean()) if v.shape[0] else 0.0 for name, v in per.items()}
    out["coverage"] = float(shown.shape[0] / max(n_items, 1))
    out["n_users"] = int(recs.shape[0])
    return out
