"""The content map: item content (category, price band, title TF-IDF) -> item embedding.

Fitted on the warm items of a fit (those with interactions): scikit-learn's ``TfidfVectorizer``
learns the vocabulary and idf with the shared tokenizer (`kernels.content.tokenize`), the price
bands are quantiles of the warm prices, and a ``Ridge`` regression maps the shared features
(`kernels.content.feature_entries`, as a sparse matrix) to the items' ALS factors. The bundle
carries the fitted arrays as ``content.npz`` (docs/bundle.md), so the server embeds items that
arrive between trainings without scikit-learn.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.content import ContentSpace, feature_entries, tokenize

__all__ = ["ContentParams", "content_manifest", "fit_content", "write_content"]

logger = logging.getLogger("tailor.training.content")


@dataclass(frozen=True)
class ContentParams:
    """How the content map is fitted (lands in ``manifest.params.content``)."""

    enabled: bool = True
    alpha: float = 1.0
    """Ridge regularisation."""
    min_df: int = 2
    """Title tokens in fewer warm items than this are left out of the vocabulary."""
    price_bands: int = 8
    """Price bands: quantiles of the warm items' prices."""


def _vocabulary(titles: np.ndarray, min_df: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    vec = TfidfVectorizer(tokenizer=tokenize, lowercase=False, token_pattern=None,
                          min_df=max(1, min(min_df, len(titles))))
    try:
        vec.fit(titles.tolist())
    except ValueError:  # no title has a kept token
        return np.zeros(0, str), np.zeros(0, np.float32)
    return vec.get_feature_names_out().astype(str), vec.idf_.astype(np.float32)


def fit_content(catalog, item_factors: np.ndarray, popularity: np.ndarray,
                params: ContentParams = ContentParams()) -> tuple[ContentSpace, dict] | None:
    """The content map fitted on the items with ``popularity > 0`` (None: fewer than two).

    Returns
    -------
    (ContentSpace, dict)
        The arrays and the manifest's ``content`` entry (sizes, fit R²).
    """
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import Ridge
    warm = np.flatnonzero(np.asarray(popularity) > 0)
    if len(warm) < 2:
        return None
    titles = catalog.titles.astype(str)[warm]
    prices = catalog.price.astype(np.float64)[warm]
    vocabulary, idf = _vocabulary(titles, params.min_df)
    qs = np.linspace(0.0, 1.0, params.price_bands + 1)[1:-1]
    edges = np.unique(np.quantile(prices, qs)).astype(np.float32)
    dim = item_factors.shape[1]
    space = ContentSpace(vocabulary, idf, edges, np.zeros((0, dim), np.float32),
                         np.zeros(dim, np.float32), len(catalog.category_names))
    rows, cols, vals = feature_entries(catalog.category[warm], prices, titles, space)
    x = csr_matrix((vals, (rows, cols)), shape=(len(warm), space.n_features))
    y = np.asarray(item_factors, np.float64)[warm]
    model = Ridge(alpha=params.alpha, fit_intercept=True).fit(x, y)
    space = dataclasses.replace(space, ridge=model.coef_.T.astype(np.float32),
                                bias=np.atleast_1d(model.intercept_).astype(np.float32))
    space.check()
    info = {"file": "content.npz", "n_vocabulary": int(len(vocabulary)),
            "n_price_bands": space.n_bands, "n_features": space.n_features,
            "fit_items": int(len(warm)), "fit_r2": round(float(model.score(x, y)), 6),
            "tokenizer": "kernels.content.tokenize", "features": "kernels.content.features"}
    logger.info("content map: %d warm items, %d tokens, %d price bands, R² %.3f",
                len(warm), len(vocabulary), space.n_bands, info["fit_r2"])
    return space, info


def write_content(path: Path, space: ContentSpace) -> None:
    """``content.npz`` (allow_pickle=False arrays, `kernels.content.ARRAYS`)."""
    np.savez(path, vocabulary=space.vocabulary.astype(str), idf=space.idf.astype(np.float32),
             price_edges=space.price_edges.astype(np.float32),
             ridge=space.ridge.astype(np.float32), bias=space.bias.astype(np.float32))


def content_manifest(result) -> dict | None:
    """The manifest's ``content`` entry of a TrainResult (None: no content map)."""
    content = getattr(result, "content", None)
    return None if content is None else content[1]
