"""Confidence matrix, user histories and the implicit-ALS retrieval model.

A row's weight is its event weight times ``2 ** (-(t_last - t) / half_life)``, t_last being the
user's latest event. Weights are summed per (user, item); the confidence fed to ALS is
``1 + alpha * w`` (implicit's convention: A = YtY + reg*I + sum (c-1) y y^T, b = sum c y), which is
exactly what `training.encoder` folds in. Histories are the same aggregated (item, weight) pairs,
the ``history_len`` most recently touched items per user, oldest first.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from contract.events import DEFAULT_HALF_LIFE_DAYS
from training.events import Interactions, event_weights

__all__ = ["ALSParams", "aggregate", "histories", "confidence", "fit_als"]

logger = logging.getLogger("tailor.training.als")

DAY = 86_400.0


@dataclass(frozen=True)
class ALSParams:
    """Retrieval hyper-parameters (all recorded in the manifest)."""

    factors: int = 64
    regularization: float = 1.0
    alpha: float = 2.0
    iterations: int = 15
    seed: int = 0
    threads: int = 2
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS
    history_len: int = 50
    """Encoder window. Measured by the served backtest (issue 21) on a long-history demo world
    (1,500 users x 600 items, --events-per-user 120, test-frac 0.2, --factors 32, the bundle's
    answers with every seen item filtered, NDCG@10 +- 0.004): 25 -> 0.160, 50 -> 0.167,
    100 -> 0.165, 150 -> 0.165. Longer windows
    do not help (the decayed ALS weights already fade old items); 25 loses 2 SE. Kept at 50."""
    cg_steps: int = 6


@dataclass
class Aggregated:
    """One entry per (user, item) with positive weight, sorted by (user, last_ts, item)."""

    user: np.ndarray
    item: np.ndarray
    weight: np.ndarray
    last_ts: np.ndarray
    n_users: int
    n_items: int


def aggregate(inter: Interactions, weights: dict | None = None,
              half_life_days: float = DEFAULT_HALF_LIFE_DAYS) -> Aggregated:
    """Decayed weights summed per (user, item); zero-weight pairs are dropped."""
    w = event_weights(inter, weights).astype(np.float64)
    t_last = np.full(inter.n_users, np.iinfo(np.int64).min)
    _max_at(t_last, inter)
    w *= np.exp2(-(t_last[inter.user] - inter.ts) / (half_life_days * DAY))
    key = inter.user.astype(np.int64) * inter.n_items + inter.item
    order = np.lexsort((inter.ts, key))
    key_s = key[order]
    bounds = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
    total = np.add.reduceat(w[order], bounds) if len(order) else np.zeros(0)
    last = np.r_[bounds[1:], len(order)] - 1
    keys, last_ts = key_s[bounds], inter.ts[order][last]
    keep = total > 0
    keys, total, last_ts = keys[keep], total[keep], last_ts[keep]
    user, item = keys // inter.n_items, keys % inter.n_items
    o = np.lexsort((item, last_ts, user))
    return Aggregated(user[o].astype(np.int32), item[o].astype(np.int32),
                      total[o].astype(np.float32), last_ts[o], inter.n_users, inter.n_items)


def _max_at(t_last: np.ndarray, inter: Interactions) -> None:
    order = np.lexsort((inter.ts, inter.user))
    u = inter.user[order]
    ends = np.r_[np.flatnonzero(u[1:] != u[:-1]), len(u) - 1]
    t_last[u[ends]] = inter.ts[order][ends]


def histories(agg: Aggregated, history_len: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR ``(indptr, items, weights)``: each user's last ``history_len`` items, oldest first."""
    counts = np.bincount(agg.user, minlength=agg.n_users)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    pos = np.arange(agg.user.shape[0]) - starts[agg.user]
    keep = pos >= counts[agg.user] - history_len
    kept = np.minimum(counts, history_len)
    indptr = np.r_[0, np.cumsum(kept)].astype(np.int64)
    return indptr, agg.item[keep].astype(np.int32), agg.weight[keep].astype(np.float32)


def confidence(agg: Aggregated, alpha: float) -> sp.csr_matrix:
    """Users x items CSR of ``1 + alpha * w`` (float32)."""
    data = (1.0 + alpha * agg.weight).astype(np.float32)
    mat = sp.csr_matrix((data, (agg.user, agg.item)), shape=(agg.n_users, agg.n_items))
    mat.sum_duplicates()
    return mat


def _too_large(what: str) -> str:
    return (f"{what}: event weights this large (--event-weight, a rating's value, --alpha, "
            "summed per user and item) overflow the fit's float32 arithmetic; scale them down")


def fit_als(cui: sp.csr_matrix, params: ALSParams) -> tuple[np.ndarray, np.ndarray]:
    """Fit implicit's CPU ALS on a confidence matrix.

    Returns
    -------
    item_factors, user_factors : ndarray of float32
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.recommender_base import ModelFitError
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    top = float(np.abs(cui.data).max(initial=0.0))
    if not np.isfinite(top):
        raise ValueError(_too_large("some confidences 1 + alpha * weight are infinite as float32"))
    with threadpool_limits(1, "blas"):   # implicit runs its own threads; BLAS pools fight them
        model = AlternatingLeastSquares(
            factors=params.factors, regularization=params.regularization, alpha=1.0,
            iterations=params.iterations, random_state=params.seed, num_threads=params.threads,
            calculate_training_loss=False)
        try:
            model.fit(cui, show_progress=False)
        except ModelFitError as err:   # NaN factors: float32 overflowed on these confidences
            raise ValueError(_too_large(f"the ALS fit failed ({err}); the largest confidence "
                                        f"1 + alpha * weight is {top:.3g}")) from None
    logger.info("ALS %d factors x %d iterations on %s (nnz %d) in %.1fs", params.factors,
                params.iterations, cui.shape, cui.nnz, time.perf_counter() - t0)
    return (np.ascontiguousarray(model.item_factors, np.float32),
            np.ascontiguousarray(model.user_factors, np.float32))
