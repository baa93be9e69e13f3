"""Batched retrieval as the server performs it: encode histories, score items, drop seen items.

Scoring is exact (user vectors against all item vectors by FAISS brute force, in batches); the
served FAISS index is tuned separately to reproduce this top-k at recall >= 0.95.
"""
from __future__ import annotations

import logging

import faiss
import numpy as np
import onnxruntime as ort

from training.encoder import pad_histories

__all__ = ["encode_users", "top_k", "item_stats", "seen_csr"]

logger = logging.getLogger("tailor.training.retrieval")


def encoder_session(model_bytes: bytes, threads: int = 2) -> ort.InferenceSession:
    """ONNX Runtime CPU session with ``threads`` intra-op threads.

    The threads sleep between runs instead of spinning: training runs large batches, and on a
    shared machine spinning threads burn CPU that the other stages' threads need."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
          k: int, batch: int = 4096, threads: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` unseen items per user by inner product (exact).

    FAISS's brute-force inner-product search (blocked BLAS and per-query heaps, no users x items
    score matrix) fetches each batch's best ``k + s`` items, ``s`` being the largest seen-set of
    the batch; dropping the user's seen items from that list leaves exactly their ``k`` best
    unseen items (up to the order of equal scores).

    Returns
    -------
    items : ndarray of int64 [U, k]
        -1 where fewer than k items are left.
    scores : ndarray of float32 [U, k]
    """
    indptr = seen[0]
    n_items = item_vecs.shape[0]
    out_i = np.full((users.shape[0], k), -1, np.int64)
    out_s = np.full((users.shape[0], k), -np.inf, np.float32)
    if n_items == 0 or k == 0:
        return out_i, out_s
    items = np.ascontiguousarray(item_vecs, np.float32)
    counts = indptr[users + 1] - indptr[users]
    faiss.omp_set_num_threads(threads)
    for start in range(0, users.shape[0], batch):
        rows, stop = users[start:start + batch], start + batch
        width = int(min(n_items, k + counts[start:stop].max(initial=0)))
        query = np.ascontiguousarray(user_vecs[start:stop], np.float32)
        scores, found = faiss.knn(query, items, width, metric=faiss.METRIC_INNER_PRODUCT)
        drop = (found < 0) | _seen_mask(rows, found, seen, n_items)
        pick = np.argsort(drop, axis=1, kind="stable")[:, :k]
        keep = ~np.take_along_axis(drop, pick, axis=1)
        n = pick.shape[1]
        out_i[start:stop, :n] = np.where(keep, np.take_along_axis(found, pick, axis=1), -1)
        out_s[start:stop, :n] = np.where(keep, np.take_along_axis(scores, pick, axis=1), -np.inf)
    return out_i, out_s


def _seen_mask(rows: np.ndarray, found: np.ndarray, seen: tuple, n_items: int) -> np.ndarray:
    """Boolean like ``found``: is ``found[u, j]`` in the seen set of ``rows[u]``."""
    indptr, seen_items = seen
    counts = indptr[rows + 1] - indptr[rows]
    owner = np.repeat(np.arange(rows.shape[0], dtype=np.int64), counts)
    pos = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
           + np.repeat(indptr[rows], counts))
    keys = np.arange(rows.shape[0], dtype=np.int64)[:, None] * n_items + found
    return np.isin(keys, owner * n_items + seen_items[pos])


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
