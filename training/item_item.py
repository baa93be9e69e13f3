"""Item-to-item ranker features: how a candidate relates to the items in the user's history.

An experiment (`training.item_item_eval`), not yet served: the server computes
`kernels.ranking.FEATURES` only, so a bundle's ranker never reads these columns.

A `NeighbourTable` keeps each item's ``m`` strongest neighbours (CSR, neighbours ascending per
row, so a lookup is one binary search) from one of two item-item models fitted on training rows:

- ``ease``: the EASE weights (Steck 2019, `training.ease`): B = -P / diag(P) with
  P = (X^T X + lambda I)^-1; B[h, c] is how much having ``h`` raises the score of ``c``;
- ``cosine``: co-visitation counts C = X^T X scaled by 1 / sqrt(n_h n_c), zero diagonal.

`item_item_features` reads the same padded history the encoder reads (item rows oldest first,
right-aligned, weight 0 = padding) and the ranker's candidates, columns in `ITEM_ITEM_FEATURES`
order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.ease import binary_matrix
from training.events import Interactions

__all__ = ["ITEM_ITEM_FEATURES", "NeighbourTable", "neighbour_table", "item_item_features"]

ITEM_ITEM_FEATURES = (
    "ii_sum",             # sum over the history window of S[h, c] (EASE's score, windowed)
    "ii_weighted",        # the same weighted by the history weights (event type, recency decay)
    "ii_max",             # max over the window of S[h, c]
    "ii_last",            # S[last item, c]
    "ii_recent",          # sum of S[h, c] over the RECENT most recent items
    "recent_category",    # how many of the RECENT most recent items share c's category
)
RECENT = 5


@dataclass(frozen=True)
class NeighbourTable:
    """Each item's strongest neighbours: row h holds ``neighbours[indptr[h]:indptr[h + 1]]``
    (ascending) with weights S[h, neighbour] at the same positions."""

    indptr: np.ndarray      # int64 [n_items + 1]
    neighbours: np.ndarray  # int32 [nnz]
    weights: np.ndarray     # float32 [nnz]

    def lookup(self, h: np.ndarray, c: np.ndarray) -> np.ndarray:
        """S[h, c] elementwise (0 where c is not among h's neighbours); h, c in [0, n_items).

        One binary search per pair over the flattened (row, neighbour) keys, O(log nnz).
        """
        n = self.indptr.shape[0] - 1
        if not self.neighbours.shape[0]:
            return np.zeros(np.broadcast(h, c).shape, np.float32)
        owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.indptr))
        keys = owner * n + self.neighbours
        q = np.asarray(h, np.int64) * n + np.asarray(c, np.int64)
        pos = np.minimum(np.searchsorted(keys, q), keys.shape[0] - 1)
        return np.where(keys[pos] == q, self.weights[pos], np.float32(0))


def _top_m(scores: np.ndarray, m: int) -> NeighbourTable:
    """The ``m`` largest positive off-diagonal entries of each row of a dense square matrix."""
    n = scores.shape[0]
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    m = min(m, n - 1)
    idx = np.argpartition(-scores, m - 1, axis=1)[:, :m] if m > 0 else np.zeros((n, 0), int)
    val = np.take_along_axis(scores, idx, axis=1)
    keep = val > 0
    counts = keep.sum(axis=1)
    order = np.argsort(np.where(keep, idx, n), axis=1, kind="stable")
    idx, val = np.take_along_axis(idx, order, 1), np.take_along_axis(val, order, 1)
    first = np.arange(idx.shape[1])[None, :] < counts[:, None]
    return NeighbourTable(np.r_[0, np.cumsum(counts)].astype(np.int64),
                          idx[first].astype(np.int32), val[first].astype(np.float32))


def neighbour_table(rows: Interactions, kind: str = "ease", m: int = 50,
                    regularization: float = 500.0) -> NeighbourTable:
    """Top-``m`` neighbours per item from the binary user x item matrix of ``rows``.

    Parameters
    ----------
    kind : {"ease", "cosine"}
    regularization : float
        EASE's lambda (``ease`` only).

    Time and memory are those of one dense n_items x n_items matrix (and its inverse for
    ``ease``): catalogs up to ~20k items.
    """
    x = binary_matrix(rows)
    gram = (x.T @ x).toarray().astype(np.float64)
    if kind == "cosine":
        norm = np.sqrt(np.maximum(np.diag(gram), 1.0))
        return _top_m(gram / norm[:, None] / norm[None, :], m)
    if kind != "ease":
        raise ValueError(f"kind must be 'ease' or 'cosine', got {kind!r}")
    gram[np.diag_indices_from(gram)] += regularization
    p = np.linalg.inv(gram)
    return _top_m(p / -np.diag(p)[None, :], m)


def item_item_features(table: NeighbourTable, hist_items: np.ndarray, hist_weights: np.ndarray,
                       cand: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Features [B, K, len(ITEM_ITEM_FEATURES)] of candidates ``cand`` [B, K] (< 0: padding,
    junk row) given histories ``hist_items``/``hist_weights`` [B, L] (oldest first,
    right-aligned, weight <= 0 = padding) and each item's ``category``."""
    n = table.indptr.shape[0] - 1
    live = hist_weights > 0
    h = np.clip(hist_items, 0, n - 1)
    c = np.clip(cand, 0, n - 1)
    s = table.lookup(h[:, :, None], c[:, None, :]) * live[:, :, None]     # [B, L, K]
    recent_live = live[:, -RECENT:, None]
    same = (category[h[:, -RECENT:]][:, :, None] == category[c][:, None, :]) & recent_live
    cols = (s.sum(axis=1),
            np.einsum("bl,blk->bk", np.where(live, hist_weights, 0).astype(np.float32), s),
            s.max(axis=1, initial=0.0),
            s[:, -1],
            s[:, -RECENT:].sum(axis=1),
            same.sum(axis=1))
    return np.stack(cols, axis=-1).astype(np.float32)
