"""Per-user temporal hold-out.

Definition (tests check it on hand-made cases): for each user, sort their rows by
(timestamp, item id) and hold out the last ``max(1, floor(frac * n))`` rows, n being the user's row
count; users with fewer than 2 rows stay in training only. Ties on (timestamp, item id) keep the
input order. Item ids compare as their external strings.
"""
from __future__ import annotations

import logging

import numpy as np

from training.events import Interactions

__all__ = ["temporal_split", "sorted_order", "distinct_items"]

logger = logging.getLogger("tailor.training.split")


def sorted_order(inter: Interactions) -> np.ndarray:
    """Row order by (user, timestamp, item id, input position)."""
    item_rank = np.empty(inter.n_items, np.int64)
    item_rank[np.argsort(inter.item_ids, kind="stable")] = np.arange(inter.n_items)
    return np.lexsort((item_rank[inter.item], inter.ts, inter.user))


def temporal_split(inter: Interactions, frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(train, test)`` over the rows of ``inter``.

    Parameters
    ----------
    inter : Interactions
    frac : float
        Share of each user's rows held out (rounded down, at least one).

    Returns
    -------
    train, test : ndarray of bool, shape (n_rows,)
    """
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    order = sorted_order(inter)
    counts = np.bincount(inter.user, minlength=inter.n_users)
    n_test = np.where(counts >= 2, np.maximum(1, np.floor(frac * counts + 1e-9)), 0)
    n_test = n_test.astype(np.int64)
    users = inter.user[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(order.shape[0]) - starts[users]
    test = np.zeros(len(inter), bool)
    test[order[pos >= counts[users] - n_test[users]]] = True
    logger.debug("split: %d train rows, %d test rows", (~test).sum(), test.sum())
    return ~test, test


def distinct_items(user: np.ndarray, item: np.ndarray,
                   n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct items per user as CSR ``(indptr, items)`` (items sorted within a user)."""
    key = np.unique(user.astype(np.int64) * (int(item.max(initial=0)) + 1) + item)
    width = int(item.max(initial=0)) + 1
    users, items = key // width, key % width
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    return indptr.astype(np.int64), items.astype(np.int32)
