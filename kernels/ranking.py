"""Ranker features per (user, candidate), shared by training and the server hot path.

Pure numpy, imports nothing of Tailor's. Two steps, both batched and vectorised:

1. `user_context` summarises each user's weighted history (the encoder's input: item rows and
   weights, 0 = padding) into category shares, weighted mean log price and history length.
2. `candidate_features` builds the float32 ``[B, K, F]`` tensor for candidate item rows and their
   retrieval scores (sorted best first per user, as the index returns them), columns in `FEATURES`
   order. Candidate rows < 0 (index padding) give finite junk rows the caller must ignore.

Item-side inputs come from the bundle's ``items.npz`` via `ItemTable.from_arrays`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FEATURES", "ItemTable", "UserContext", "user_context", "candidate_features"]

FEATURES = (
    "retrieval_score",      # inner product of user and item vectors
    "retrieval_rank",       # 0-based position in the candidate list
    "score_gap",            # retrieval_score minus the user's best candidate score
    "log_popularity",       # log1p(training interaction count)
    "log_recency_days",     # log1p(days between the item's last interaction and the cutoff)
    "category_affinity",    # weighted share of the user's history in the item's category
    "log_price",            # log1p(price)
    "price_gap",            # |log_price - the user's weighted mean log_price|
    "log_history_len",      # log1p(number of non-padding history items)
)


@dataclass(frozen=True)
class ItemTable:
    """Per-item arrays the features read (row i = FAISS id i)."""

    category: np.ndarray        # int64 [n]
    n_categories: int
    log_price: np.ndarray       # float32 [n]
    log_popularity: np.ndarray  # float32 [n]
    log_recency: np.ndarray     # float32 [n]

    @classmethod
    def from_arrays(cls, category, price, popularity, recency_days,
                    n_categories: int | None = None) -> "ItemTable":
        """Build from the ``items.npz`` columns of the same names."""
        category = np.asarray(category, np.int64)
        n = category.shape[0]
        for name, arr in (("price", price), ("popularity", popularity),
                          ("recency_days", recency_days)):
            if np.shape(arr) != (n,):
                raise ValueError(f"{name} must have shape ({n},) like category, "
                                 f"got {np.shape(arr)}")
        n_cat = int(n_categories if n_categories is not None else category.max(initial=-1) + 1)
        f32 = np.float32
        return cls(category, n_cat,
                   np.log1p(np.maximum(np.asarray(price, np.float64), 0)).astype(f32),
                   np.log1p(np.maximum(np.asarray(popularity, np.float64), 0)).astype(f32),
                   np.log1p(np.maximum(np.asarray(recency_days, np.float64), 0)).astype(f32))


@dataclass(frozen=True)
class UserContext:
    """History summaries for a batch of B users."""

    category_share: np.ndarray  # float32 [B, C]
    mean_log_price: np.ndarray  # float32 [B]
    history_len: np.ndarray     # float32 [B]


def _check_2d(name: str, arr, dtype_kind: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [B, L], got shape {arr.shape}")
    if arr.dtype.kind not in dtype_kind:
        raise ValueError(f"{name} must have dtype kind in {dtype_kind!r}, got {arr.dtype}")
    return arr


def user_context(hist_items, hist_weights, table: ItemTable) -> UserContext:
    """Summarise weighted histories.

    Parameters
    ----------
    hist_items : array of int, shape (B, L)
        Item rows; any value where the weight is 0.
    hist_weights : array of float, shape (B, L)
        Non-negative weights, 0 marks padding.
    table : ItemTable

    Returns
    -------
    UserContext
        Time and memory O(B * (L + C)).
    """
    items = _check_2d("hist_items", hist_items, "iu")
    w = _check_2d("hist_weights", hist_weights, "f").astype(np.float64)
    if items.shape != w.shape:
        raise ValueError(f"hist_items {items.shape} and hist_weights {w.shape} must match")
    w = np.where(w > 0, w, 0.0)
    rows = np.clip(items, 0, table.category.shape[0] - 1)
    b, c = items.shape[0], table.n_categories
    keys = (np.arange(b)[:, None] * c + table.category[rows]).ravel()
    share = np.bincount(keys, weights=w.ravel(), minlength=b * c).reshape(b, c)
    total = w.sum(axis=1)
    denom = np.maximum(total, 1e-12)
    mean_lp = (w * table.log_price[rows]).sum(axis=1) / denom
    return UserContext((share / denom[:, None]).astype(np.float32), mean_lp.astype(np.float32),
                       (w > 0).sum(axis=1).astype(np.float32))


def candidate_features(ctx: UserContext, cand_items, scores, table: ItemTable) -> np.ndarray:
    """Feature tensor for candidates.

    Parameters
    ----------
    ctx : UserContext
        From `user_context` for the same B users.
    cand_items : array of int, shape (B, K)
        Candidate item rows, best retrieval score first; < 0 marks padding.
    scores : array of float, shape (B, K)
        Retrieval scores of the candidates.
    table : ItemTable

    Returns
    -------
    ndarray of float32, shape (B, K, len(FEATURES))
    """
    items = _check_2d("cand_items", cand_items, "iu")
    s = _check_2d("scores", scores, "f").astype(np.float32)
    if items.shape != s.shape or items.shape[0] != ctx.history_len.shape[0]:
        raise ValueError(f"cand_items {items.shape}, scores {s.shape} and context "
                         f"({ctx.history_len.shape[0]} users) must agree")
    b, k = items.shape
    rows = np.clip(items, 0, table.category.shape[0] - 1)
    out = np.empty((b, k, len(FEATURES)), np.float32)
    out[..., 0] = s
    out[..., 1] = np.arange(k, dtype=np.float32)[None, :]
    out[..., 2] = s - (s[:, :1] if k else 0)
    out[..., 3] = table.log_popularity[rows]
    out[..., 4] = table.log_recency[rows]
    out[..., 5] = np.take_along_axis(ctx.category_share, table.category[rows], axis=1)
    lp = table.log_price[rows]
    out[..., 6] = lp
    out[..., 7] = np.abs(lp - ctx.mean_log_price[:, None])
    out[..., 8] = np.log1p(ctx.history_len)[:, None]
    return out
