"""Content features of an item (category, price band, title tokens), shared by training and server.

Imports nothing of Tailor's. Training fits the vocabulary and idf with scikit-learn's
``TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None)`` and the ridge map
from these features to the item-embedding space; both sides then compute the features with
`feature_entries` below (training fits on them as a sparse matrix, the server's
`ContentSpace.embed` sums the ridge rows of each item's entries; `features` is the same as a
dense matrix), so a new item served between trainings is featurised exactly as the warm items
the map was fitted on. The bundle carries the fitted arrays (`ContentSpace`), so serving needs
no scikit-learn.

A row of `features` is three blocks, in this order:

- one-hot category (``n_categories`` columns, the bundle's category codes);
- one-hot price band (``len(price_edges) + 1`` columns, `price_band`);
- TF-IDF of the title tokens (``len(vocabulary)`` columns): term count times idf, the row
  scaled to unit L2 norm (a title without known tokens gives zeros). This is scikit-learn's
  default TF-IDF (``norm="l2"``, raw counts, the idf as fitted).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["ARRAYS", "ContentSpace", "feature_entries", "features", "price_band", "tokenize"]

ARRAYS = ("vocabulary", "idf", "price_edges", "ridge", "bias")
"""The arrays of a bundle's ``content.npz`` (docs/bundle.md)."""

_WORD = re.compile(r"[^\W\d_]{2,}")


def tokenize(title: str) -> list[str]:
    """Lower-case words of two or more letters; digits and punctuation split words and are
    dropped (item numbers in titles carry no content)."""
    return _WORD.findall(title.lower())


def price_band(price: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band of each price: the number of ``edges`` (ascending) at or below it."""
    return np.searchsorted(np.asarray(edges, np.float64), np.asarray(price, np.float64),
                           side="right").astype(np.int64)


@dataclass(frozen=True)
class ContentSpace:
    """The fitted arrays: ``vocabulary`` [V] (str, column order), ``idf`` [V], ``price_edges``
    [B-1] ascending, ``ridge`` [F, dim] and ``bias`` [dim], F = n_categories + B + V."""

    vocabulary: np.ndarray
    idf: np.ndarray
    price_edges: np.ndarray
    ridge: np.ndarray
    bias: np.ndarray
    n_categories: int

    @property
    def n_bands(self) -> int:
        return len(self.price_edges) + 1

    @property
    def n_features(self) -> int:
        return self.n_categories + self.n_bands + len(self.vocabulary)

    def check(self) -> None:
        """ValueError naming the first array whose shape or values do not fit the others."""
        dim = self.bias.shape[0] if self.bias.ndim == 1 else -1
        if self.idf.shape != self.vocabulary.shape or self.vocabulary.ndim != 1:
            raise ValueError(f"idf {self.idf.shape} does not match vocabulary {self.vocabulary.shape}")
        if self.price_edges.ndim != 1 or np.any(np.diff(self.price_edges) < 0):
            raise ValueError("price_edges must be one ascending row")
        if self.ridge.shape != (self.n_features, dim):
            raise ValueError(f"ridge is {self.ridge.shape}, expected ({self.n_features}, {dim})")
        if not all(np.all(np.isfinite(a)) for a in (self.idf, self.price_edges, self.ridge, self.bias)):
            raise ValueError("arrays hold non-finite values")

    @cached_property
    def column(self) -> dict[str, int]:
        """Token -> its TF-IDF column (0-based within the block)."""
        return {str(t): j for j, t in enumerate(self.vocabulary.tolist())}

    def embed(self, categories: np.ndarray, prices: np.ndarray, titles: Sequence[str],
              chunk: int = 4096) -> np.ndarray:
        """float32 [N, dim]: ``features(...) @ ridge + bias``, summed over each item's non-zero
        features only, `chunk` items at a time (no dense [N, F] matrix: real vocabularies are
        large)."""
        categories, prices = np.asarray(categories), np.asarray(prices)
        out = np.empty((len(titles), len(self.bias)), np.float32)
        for lo in range(0, len(titles), chunk):
            hi = min(lo + chunk, len(titles))
            rows, cols, vals = feature_entries(categories[lo:hi], prices[lo:hi], titles[lo:hi],
                                               self)
            order = np.argsort(rows, kind="stable")  # every item has entries (its category)
            rows, cols, vals = rows[order], cols[order], vals[order]
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            out[lo:hi] = np.add.reduceat(vals[:, None] * self.ridge[cols], starts) + self.bias
        return out


def _tfidf(titles: Sequence[str], space: ContentSpace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of the non-zero TF-IDF entries, rows ascending."""
    column, v = space.column, max(len(space.vocabulary), 1)
    rows, cols = [], []
    for i, title in enumerate(titles):
        for token in tokenize(title):
            j = column.get(token)
            if j is not None:
                rows.append(i)
                cols.append(j)
    keys, counts = np.unique(np.asarray(rows, np.int64) * v + np.asarray(cols, np.int64),
                             return_counts=True)
    r, c = keys // v, keys % v
    vals = counts * np.asarray(space.idf, np.float64)[c]
    norms = np.sqrt(np.bincount(r, vals * vals, minlength=len(titles)))
    return r, c, vals / norms[r] if len(r) else vals


def feature_entries(categories: np.ndarray, prices: np.ndarray, titles: Sequence[str],
                    space: ContentSpace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of every non-zero entry of `features` (a sparse matrix's triplets).

    Parameters
    ----------
    categories : int array [N]
        Category codes in ``[0, space.n_categories)``.
    prices : float array [N]
    titles : sequence of str [N]
    space : ContentSpace
        Only ``vocabulary``, ``idf``, ``price_edges`` and ``n_categories`` are read.
    """
    n, c, b = len(titles), space.n_categories, space.n_bands
    r, col, vals = _tfidf(titles, space)
    items = np.arange(n)
    return (np.concatenate([items, items, r]),
            np.concatenate([np.asarray(categories, np.int64), c + price_band(prices, space.price_edges),
                            c + b + col]),
            np.concatenate([np.ones(2 * n), vals]))


def features(categories: np.ndarray, prices: np.ndarray, titles: Sequence[str],
             space: ContentSpace) -> np.ndarray:
    """float64 [N, F], dense: one-hot category, one-hot price band, L2-normalised TF-IDF of the
    title (`feature_entries` scattered; for small N, the tests and the module docstring)."""
    out = np.zeros((len(titles), space.n_features), np.float64)
    rows, cols, vals = feature_entries(categories, prices, titles, space)
    out[rows, cols] = vals
    return out
