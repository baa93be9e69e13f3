"""Ranker features per (user, candidate), shared by training and the server hot path.

Imports nothing of Tailor's but its own kernel and `kernels.arrays`. Two numpy steps, both batched
and vectorised:

1. `user_context` summarises each user's weighted history (the encoder's input: item rows and
   weights, 0 = padding) into category shares, weighted mean log price and history length.
2. `candidate_features` builds the float32 ``[B, K, F]`` tensor for candidate item rows and their
   retrieval scores (sorted best first per user, as the index returns them), columns in `FEATURES`
   order. Candidate rows < 0 (index padding) give finite junk rows the caller must ignore.

`features` does both steps at once for the server's hot path: the Cython kernel
(`kernels._ranking`, one pass per user, no [B, C] temporaries) unless ``use_native=False``, which
runs the two numpy functions above, the reference (training calls them directly).

Item-side inputs come from the bundle's ``items.npz`` via `ItemTable.from_arrays`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .arrays import F32, F64, I64, contiguous

__all__ = ["FEATURES", "ItemTable", "UserContext", "user_context", "candidate_features",
           "features"]

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
                    n_categories: int | None = None) -> ItemTable:
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

    @cached_property
    def _kernel_columns(self) -> tuple:
        """The arguments `features` passes to the kernel, validated and converted once.

        The table is frozen: its arrays are treated as read-only from then on.
        """
        n = np.shape(self.category)[0] if np.ndim(self.category) == 1 else -1
        if n < 1 or self.n_categories < 1:
            raise ValueError(f"table must have items and categories, got category shape "
                             f"{np.shape(self.category)} and n_categories={self.n_categories}")
        for name in ("log_price", "log_popularity", "log_recency"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"table.{name} must have shape ({n},) like table.category, "
                                 f"got {np.shape(getattr(self, name))}")
        return (contiguous(self.category, I64), contiguous(self.log_price, F32),
                contiguous(self.log_popularity, F32), contiguous(self.log_recency, F32),
                int(self.n_categories))


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


def _native_rows(arr: np.ndarray, n: int) -> np.ndarray:
    """int64 item rows; uint64 rows are first capped at n - 1, as the reference's clip does."""
    if arr.dtype is not I64 and arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        arr = np.minimum(arr, n - 1)
    return contiguous(arr, I64)


def features(hist_items, hist_weights, cand_items, scores, table: ItemTable,
             use_native: bool = True) -> np.ndarray:
    """Feature tensor straight from histories: ``candidate_features(user_context(...), ...)``.

    Parameters
    ----------
    hist_items, hist_weights : arrays, shape (B, L)
        As for `user_context` (int item rows; float weights, <= 0 = padding).
    cand_items, scores : arrays, shape (B, K)
        As for `candidate_features` (int rows, < 0 = padding; float retrieval scores).
    table : ItemTable
    use_native : bool
        Run the Cython kernel (default) or the numpy reference.

    Returns
    -------
    ndarray of float32, shape (B, K, len(FEATURES))
        The native kernel takes O(B * (L + K)) time and O(n_categories) scratch, and raises
        ValueError for an item whose category is outside [0, n_categories).
    """
    h_items = _check_2d("hist_items", hist_items, "iu")
    h_weights = _check_2d("hist_weights", hist_weights, "f")
    c_items = _check_2d("cand_items", cand_items, "iu")
    c_scores = _check_2d("scores", scores, "f")
    if h_items.shape != h_weights.shape:
        raise ValueError(f"hist_items {h_items.shape} and hist_weights {h_weights.shape} must match")
    if c_items.shape != c_scores.shape or c_items.shape[0] != h_items.shape[0]:
        raise ValueError(f"cand_items {c_items.shape} and scores {c_scores.shape} must match, "
                         f"for the {h_items.shape[0]} users of hist_items")
    columns = table._kernel_columns
    if not use_native:
        return candidate_features(user_context(h_items, h_weights, table), c_items, c_scores, table)
    from . import _ranking
    n = columns[0].shape[0]
    out = np.empty((c_items.shape[0], c_items.shape[1], len(FEATURES)), np.float32)
    bad = _ranking.features(_native_rows(h_items, n),
                            contiguous(h_weights, F64 if h_weights.dtype.itemsize >= 8 else F32),
                            _native_rows(c_items, n), contiguous(c_scores, F32), *columns, out)
    if bad >= 0:
        raise ValueError(f"table.category[{bad}] = {table.category[bad]} is outside "
                         f"[0, {table.n_categories})")
    return out
