"""Where each feature's bins sit in one flat counts vector, and how a batch fills them.

A bundle's drift reference (`contract.drift`) lists features; the layout gives each a slice of a
flat int64 vector and counts one Recommend batch's values (`BatchValues`) into it with a handful
of vectorised numpy calls (one `bincount` in the end), whatever the number of features:

- ``history_len``, ``history_category``: from the encoder's input (weights > 0);
- ``recommendation_category``: the rows answered to warm queries;
- ranker features (`kernels.ranking.FEATURES` names) and ``ranker_score``: the candidates (up to
  `MAX_CANDIDATES` per batch, a uniform sample beyond), binned together by
  `kernels.drift.bin_columns` (without a ranker only ``retrieval_score``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from contract.drift import FeatureReference
from kernels import ranking
from kernels.drift import bin_columns, pad_edges

if TYPE_CHECKING:
    from ..recommend.pipeline import BatchValues

__all__ = ["DriftLayout", "Slot"]

HISTORY_LEN, HISTORY_CATEGORY = "history_len", "history_category"
RECOMMENDATION_CATEGORY, RANKER_SCORE = "recommendation_category", "ranker_score"
_CATEGORICAL = (HISTORY_CATEGORY, RECOMMENDATION_CATEGORY)
_COLUMN = {f: i for i, f in enumerate(ranking.FEATURES)}
MAX_CANDIDATES = 256
"""Candidates of one batch whose features are counted (a uniform sample beyond that): the cost
per batch stays bounded, and every candidate is as likely to be counted."""


@dataclass(frozen=True)
class Slot:
    """One feature's reference and its bins ``[start, start + n_bins)`` in the counts vector;
    `skipped` says why the server does not count it ("" when it does)."""

    ref: FeatureReference
    start: int
    skipped: str = ""


def _skip_reason(ref: FeatureReference, n_categories: int) -> str:
    if ref.name in _CATEGORICAL:
        if not ref.categorical or ref.n_bins != n_categories:
            return f"reference has {ref.n_bins} bins for {n_categories} categories"
        return ""
    if ref.categorical:
        return "reference is categorical, the server's values are numeric"
    if ref.name not in _COLUMN and ref.name not in (HISTORY_LEN, RANKER_SCORE):
        return "not a value this server computes"
    return ""


class DriftLayout:
    """The flat counts layout of one bundle's reference."""

    def __init__(self, refs: Mapping[str, FeatureReference], n_categories: int):
        self.slots: list[Slot] = []
        start = 0
        for ref in refs.values():
            self.slots.append(Slot(ref, start, _skip_reason(ref, n_categories)))
            start += ref.n_bins
        self.size = start
        self.reference = np.zeros(start, np.float64)
        for s in self.slots:
            self.reference[s.start:s.start + s.ref.n_bins] = s.ref.counts
        self._by_name = {s.ref.name: s for s in self.slots if not s.skipped}
        self._edges = {n: pad_edges([s.ref.edges]) for n, s in self._by_name.items()}
        # candidate values: the ranker features (columns of the feature tensor), then the score
        cand = [s for s in self.slots if not s.skipped and s.ref.name in _COLUMN]
        cand += [s for s in self.slots if not s.skipped and s.ref.name == RANKER_SCORE]
        self._cand = cand
        self._feat_cols = np.asarray([_COLUMN[s.ref.name] for s in cand if s.ref.name in _COLUMN],
                                     np.int64)
        self._with_score = bool(cand) and cand[-1].ref.name == RANKER_SCORE
        self._cand_edges = pad_edges([s.ref.edges for s in cand])
        self._cand_start = np.asarray([s.start for s in cand], np.int64)
        self._retrieval = self._by_name.get("retrieval_score")
        self._rng = np.random.default_rng(0)

    def count(self, v: BatchValues) -> np.ndarray:
        """Counts of the batch's values per bin: int64 [size]."""
        return self.count_many([v])

    def count_many(self, batches: Sequence[BatchValues]) -> np.ndarray:
        """Counts of several batches' values per bin, int64 [size]: their histories and answers
        binned together, the candidates batch by batch (each batch's own sample). The batches
        are of one `Bundle` object (the first one's categories are read for all), so their
        histories have one width."""
        bundle = batches[0].bundle
        if len(batches) == 1:
            items, weights = batches[0].hist
        else:
            items = np.concatenate([b.hist[0] for b in batches])
            weights = np.concatenate([b.hist[1] for b in batches])
        keys = [self._history(bundle, items, weights),
                self._recommended(bundle, [r for b in batches for r in b.results]),
                *(self._candidates(b) for b in batches)]
        return np.bincount(np.concatenate(keys), minlength=self.size)

    def _binned(self, name: str, values: np.ndarray) -> np.ndarray:
        slot = self._by_name.get(name)
        if slot is None or not len(values):
            return np.zeros(0, np.int64)
        if slot.ref.categorical:
            return slot.start + values.astype(np.int64)
        return slot.start + bin_columns(values.reshape(-1, 1), self._edges[name])[:, 0]

    def _history(self, bundle, items: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mask = weights > 0
        cats = bundle.item_category[items[mask]] if HISTORY_CATEGORY in self._by_name else ()
        return np.concatenate([self._binned(HISTORY_LEN, mask.sum(axis=1)),
                               self._binned(HISTORY_CATEGORY, np.asarray(cats, np.int64))])

    def _recommended(self, bundle, results: list) -> np.ndarray:
        if RECOMMENDATION_CATEGORY not in self._by_name or not results:
            return np.zeros(0, np.int64)
        rows = np.concatenate([r.rows for r in results])
        return self._binned(RECOMMENDATION_CATEGORY, bundle.item_category[rows])

    def _candidates(self, v: BatchValues) -> np.ndarray:
        """The ranker features and score of the batch's candidates (at most `MAX_CANDIDATES`),
        binned in one call."""
        if not self._cand or not v.cands:
            return np.zeros(0, np.int64)
        scores = np.concatenate(v.scores) if len(v.scores) > 1 else v.scores[0]
        take = self._sample(len(scores))
        if v.feats is None:  # no ranker: only the retrieval scores (`scores` are those)
            return (self._binned("retrieval_score", scores[take]) if self._retrieval
                    else np.zeros(0, np.int64))
        lengths = np.fromiter((len(r) for r, _ in v.cands), np.int64, len(v.cands))
        flat = v.feats.reshape(-1, v.feats.shape[-1])
        if lengths.min() < v.feats.shape[1]:  # rows of candidates, not of the padding
            flat = flat[np.flatnonzero((np.arange(v.feats.shape[1])[None, :]
                                        < lengths[:, None]).ravel())[take]]
        else:
            flat = flat[take]
        mat = np.empty((len(flat), len(self._cand)), np.float32)
        mat[:, :len(self._feat_cols)] = flat[:, self._feat_cols]
        if self._with_score:
            mat[:, -1] = scores[take]
        return (bin_columns(mat, self._cand_edges) + self._cand_start).ravel()

    def _sample(self, n: int) -> slice | np.ndarray:
        """Every candidate, or `MAX_CANDIDATES` drawn uniformly with replacement (a stride
        would follow the lists' period: always the same ranks)."""
        if n <= MAX_CANDIDATES:
            return slice(None)
        return np.sort(self._rng.integers(0, n, MAX_CANDIDATES))
