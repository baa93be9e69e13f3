"""A fitted retrieval stage: ALS on some rows, their histories, encoder and item statistics.

The pipeline fits up to three: stage 1 on the inner training rows (ranker training data without
leakage), the evaluation stage on all rows minus the hold-out (the manifest's metrics), and the
served stage refitted on every row (shipped in the bundle, with its complete seen sets).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx

from kernels.ranking import ItemTable, candidate_features, user_context
from training.als import ALSParams, aggregate, confidence, fit_als, histories
from training.encoder import build_encoder, pad_histories
from training.events import EVENTS, Catalog, Interactions
from training.retrieval import (
    encode_users,
    encoder_session,
    item_stats,
    seen_csr,
    top_k,
)

__all__ = ["SEEN_EVENT_TYPES", "Stage", "fit_stage", "seen_table"]

SEEN_EVENT_TYPES = tuple(EVENTS)
"""Bit order of ``seen_mask``: bit i is set when the user had an event ``EVENTS[i]`` on the item."""

logger = logging.getLogger("tailor.training.stage")


@dataclass
class Stage:
    """Everything needed to retrieve for and featurise the users of the rows it was fitted on."""

    params: ALSParams
    item_factors: np.ndarray
    user_factors: np.ndarray
    hist: tuple            # CSR (indptr, items, weights), last history_len items
    seen: tuple            # CSR (indptr, items), all training items per user
    encoder: onnx.ModelProto
    table: ItemTable
    popularity: np.ndarray
    recency_days: np.ndarray
    cutoff: int
    content: tuple | None = None
    """(kernels.content.ContentSpace, manifest entry) fitted on this stage's warm items, when the
    pipeline embedded its cold items (`training.content.embed_cold`), else None."""
    cold_items: dict = field(default_factory=dict)
    """`embed_cold`'s count of this fit's cold items and how many got a content vector (in
    ``item_factors``; the encoder keeps the ALS factors, zero for them)."""

    def __post_init__(self):
        self.session = encoder_session(self.encoder.SerializeToString(), self.params.threads)

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """Encoder output for the users' training histories (what the server computes)."""
        return encode_users(self.session, self.hist, users, self.params.history_len)

    def candidates(self, users: np.ndarray, k: int):
        """Top ``k`` unseen items and scores per user."""
        return top_k(self.user_vectors(users), self.item_factors, users, self.seen, k)

    def features(self, users: np.ndarray, cand: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``kernels.ranking`` features [U, K, F] from the users' padded histories."""
        items, weights = pad_histories(*self.hist, users, self.params.history_len)
        ctx = user_context(items, weights, self.table)
        return candidate_features(ctx, cand, np.where(np.isfinite(scores), scores, 0), self.table)


def fit_stage(rows: Interactions, catalog: Catalog, params: ALSParams,
              event_weights: dict | None = None) -> Stage:
    """Fit ALS and derive histories, encoder and item statistics from ``rows``."""
    agg = aggregate(rows, event_weights, params.half_life_days)
    item_f, user_f = fit_als(confidence(agg, params.alpha), params)
    hist = histories(agg, params.history_len)
    encoder = build_encoder(item_f, params.regularization, params.alpha, params.cg_steps,
                            params.history_len)
    popularity, recency, cutoff = item_stats(rows.item, rows.ts, rows.n_items)
    table = ItemTable.from_arrays(catalog.category, catalog.price, popularity, recency,
                                  n_categories=len(catalog.category_names))
    return Stage(params, item_f, user_f, hist, seen_csr(rows.user, rows.item, rows.n_users),
                 encoder, table, popularity, recency, cutoff)


def seen_table(rows: Interactions) -> dict:
    """Every (user, item) pair of ``rows`` as the bundle's seen set (users.npz, docs/bundle.md).

    Returns
    -------
    dict
        ``seen_indptr`` int64 [n_users + 1] (user code order), ``seen_items`` int32 item rows
        ascending within a user, ``seen_mask`` uint32 (bit i: an event of type
        ``SEEN_EVENT_TYPES[i]``), ``seen_last_ts`` int64 (latest interaction, unix seconds).
    """
    key = rows.user.astype(np.int64) * max(rows.n_items, 1) + rows.item
    order = np.lexsort((rows.ts, key))
    key_s = key[order]
    first = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]]) if len(order) else np.zeros(0, int)
    last = np.r_[first[1:], len(order)] - 1
    bits = (np.uint32(1) << rows.event.astype(np.uint32))[order]
    mask = np.bitwise_or.reduceat(bits, first) if len(order) else np.zeros(0, np.uint32)
    user = key_s[first] // max(rows.n_items, 1)
    indptr = np.r_[0, np.cumsum(np.bincount(user, minlength=rows.n_users))]
    return {"seen_indptr": indptr.astype(np.int64),
            "seen_items": (key_s[first] % max(rows.n_items, 1)).astype(np.int32),
            "seen_mask": mask.astype(np.uint32),
            "seen_last_ts": rows.ts[order][last].astype(np.int64)}
