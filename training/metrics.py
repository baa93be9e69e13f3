"""Top-k ranking metrics with the project's exact definitions.

For a user with distinct test items T and a recommendation list r_1..r_k (k = 10, -1 = empty slot):
``rel_j = r_j in T``; ``m = min(k, |T|)``;
Recall@k = sum rel / m; NDCG@k = sum rel_j / log2(j + 1) over the ideal DCG of m positions;
MAP@k = sum rel_j * P@j / m. Averages run over users with |T| > 0. Coverage = distinct recommended
items / catalog size.
"""
from __future__ import annotations

import logging

import numpy as np

__all__ = ["ranking_metrics", "hits"]

logger = logging.getLogger("tailor.training.metrics")


def hits(recs: np.ndarray, indptr: np.ndarray, items: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Boolean [U, k]: is ``recs[u, j]`` among the test items of ``users[u]`` (CSR ``indptr``)."""
    width = int(max(items.max(initial=0), recs.max(initial=0))) + 1
    owner = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
    test_keys = owner * width + items
    rec_keys = users.astype(np.int64)[:, None] * width + np.where(recs >= 0, recs, width - 1)
    found = np.isin(rec_keys, test_keys)
    return found & (recs >= 0)


def ranking_metrics(recs: np.ndarray, indptr: np.ndarray, items: np.ndarray,
                    users: np.ndarray, n_items: int, k: int = 10) -> dict:
    """Recall, NDCG, MAP at ``k`` and catalog coverage.

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
        ``recall@k``, ``ndcg@k``, ``map@k``, ``coverage``, ``n_users``.
    """
    recs = np.asarray(recs)[:, :k]
    n_test = (indptr[users + 1] - indptr[users]).astype(np.float64)
    keep = n_test > 0
    recs, n_test, users = recs[keep], n_test[keep], users[keep]
    rel = hits(recs, indptr, items, users).astype(np.float64)
    m = np.minimum(k, n_test)
    discount = 1.0 / np.log2(np.arange(2, recs.shape[1] + 2))
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    precision = np.cumsum(rel, axis=1) / np.arange(1, recs.shape[1] + 1)
    shown = np.unique(recs[recs >= 0])
    mean = (lambda x: float(x.mean())) if recs.shape[0] else (lambda x: 0.0)
    return {
        f"recall@{k}": mean(rel.sum(axis=1) / m),
        f"ndcg@{k}": mean((rel * discount).sum(axis=1) / ideal[m.astype(np.int64)]),
        f"map@{k}": mean((rel * precision).sum(axis=1) / m),
        "coverage": float(shown.shape[0] / max(n_items, 1)),
        "n_users": int(recs.shape[0]),
    }
