"""Batched retrieval as the server performs it: encode histories, score items, drop seen items.

Scoring is exact (user vectors times all item vectors, in batches); the FAISS index is tuned
separately to reproduce this top-k at recall >= 0.95.
"""
from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from training.encoder import pad_histories

__all__ = ["encode_users", "top_k", "item_stats", "seen_csr"]

logger = logging.getLogger("tailor.training.retrieval")


def encoder_session(model_bytes: bytes, threads: int = 2) -> ort.InferenceSession:
    """ONNX Runtime CPU session with ``threads`` intra-op threads."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def encode_users(session: ort.InferenceSession, hist: tuple, users: np.ndarray,
                 history_len: int, batch: int = 4096) -> np.ndarray:
    """User vectors [len(users), d] from CSR histories ``hist = (indptr, items, weights)``."""
    out = []
    for start in range(0, users.shape[0], batch):
        items, weights = pad_histories(*hist, users[start:start + batch], history_len)
        out.append(session.run(["user_vec"], {"items": items, "weights": weights})[0])
    d = session.get_outputs()[0].shape[1]
    return np.concatenate(out) if out else np.zeros((0, d), np.float32)


def seen_csr(user: np.ndarray, item: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, items)`` of the distinct items each user interacted with."""
    from training.split import distinct_items

    return distinct_items(user, item, n_users)


def top_k(user_vecs: np.ndarray, item_vecs: np.ndarray, users: np.ndarray, seen: tuple,
          k: int, batch: int = 2048, max_cells: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` unseen items per user by inner product.

    At most ``max_cells`` user x item scores are held at once (batch shrinks for big catalogs:
    2048 users x 1M items would need 8 GB, twice).

    Returns
    -------
    items : ndarray of int64 [U, k]
        -1 where fewer than k items are left.
    scores : ndarray of float32 [U, k]
    """
    indptr, seen_items = seen
    n_items = item_vecs.shape[0]
    k_eff = min(k, n_items)
    out_i = np.full((users.shape[0], k), -1, np.int64)
    out_s = np.full((users.shape[0], k), -np.inf, np.float32)
    batch = max(1, min(batch, max_cells // max(n_items, 1)))
    for start in range(0, users.shape[0], batch):
        rows = users[start:start + batch]
        scores = user_vecs[start:start + batch] @ item_vecs.T
        counts = indptr[rows + 1] - indptr[rows]
        owner = np.repeat(np.arange(rows.shape[0]), counts)
        pos = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
               + np.repeat(indptr[rows], counts))
        cols = seen_items[pos]
        scores[owner, cols] = -np.inf
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        part_s = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_s, axis=1, kind="stable")
        top_i, top_s = np.take_along_axis(part, order, 1), np.take_along_axis(part_s, order, 1)
        top_i = np.where(np.isfinite(top_s), top_i, -1)
        out_i[start:start + rows.shape[0], :k_eff] = top_i
        out_s[start:start + rows.shape[0], :k_eff] = top_s
    return out_i, out_s


def item_stats(item: np.ndarray, ts: np.ndarray,
               n_items: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(popularity, recency_days, cutoff)`` from training rows.

    popularity is the interaction count per item; recency_days the days between an item's last
    interaction and the cutoff (the last training event), or the whole span for unseen items.
    """
    cutoff = int(ts.max()) if ts.size else 0
    popularity = np.bincount(item, minlength=n_items).astype(np.float32)
    last = np.full(n_items, ts.min() if ts.size else 0, np.int64)
    order = np.argsort(ts, kind="stable")
    last[item[order]] = ts[order]
    recency = ((cutoff - last) / 86_400.0).astype(np.float32)
    return popularity, recency, cutoff
