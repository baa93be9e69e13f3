"""The content map: item content (category, price band, title TF-IDF) -> item embedding.

Fitted on the warm items of a fit (those with interactions): scikit-learn's ``TfidfVectorizer``
learns the vocabulary and idf with the shared tokenizer (`kernels.content.tokenize`), the price
bands are quantiles of the warm prices, and a ``Ridge`` regression maps the shared features
(`kernels.content.feature_entries`, as a sparse matrix) to the items' ALS factors. The bundle
carries the fitted arrays as ``content.npz`` (docs/bundle.md), so the server embeds items that
arrive between trainings without scikit-learn.

`embed_cold` gives the catalog items a fit saw no interaction with (ALS leaves their factor rows
at zero: never retrieved) their content vector, the same computation UpsertItems runs for an
item that arrives after training (`content_vectors`: `kernels.content.ContentSpace.embed`, the
raw ridge output, no rescaling), so an item in the catalog at training time is served as one
added a minute later would be. An item whose content tells the map nothing (no title token of
its vocabulary, and a category and price band that every warm item shares or none has) keeps
its zero vector: the map would give it the intercept alone, the warm items' mean vector.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.content import ContentSpace, feature_entries, price_band, tokenize

__all__ = ["ContentParams", "content_manifest", "content_vectors", "embed_cold", "fit_content",
           "write_content"]

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


def content_vectors(space: ContentSpace, catalog, rows: np.ndarray) -> np.ndarray:
    """float32 [len(rows), dim]: the map's vectors of catalog ``rows`` from their category,
    price and title, as the server's UpsertItems embeds an item (`server.catalog.overlay`)."""
    return space.embed(catalog.category[rows], catalog.price.astype(np.float64)[rows],
                       catalog.titles.astype(str)[rows].tolist())


def _telling(codes: np.ndarray, n: int) -> np.ndarray:
    """[n] True for the codes some but not all of ``codes`` take (a column the fit saw vary)."""
    counts = np.bincount(codes, minlength=n)[:n]
    return (counts > 0) & (counts < len(codes))


def _described(space: ContentSpace, catalog, warm: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(rows)] True where the item's content tells the map something: a title token of its
    vocabulary, or a category or price band that tells warm items apart (`_telling`)."""
    category = _telling(catalog.category[warm], space.n_categories)[catalog.category[rows]]
    edges = space.price_edges
    band = _telling(price_band(catalog.price[warm], edges), space.n_bands)[
        price_band(catalog.price[rows], edges)]
    column = space.column
    token = np.array([any(t in column for t in tokenize(title))
                      for title in catalog.titles.astype(str)[rows].tolist()], bool)
    return category | band | token


def embed_cold(catalog, item_factors: np.ndarray, popularity: np.ndarray,
               params: ContentParams = ContentParams()):
    """Fit the content map on a fit's warm items and embed its cold ones.

    Parameters
    ----------
    catalog : training.events.Catalog
    item_factors, popularity : ndarray
        The fit's ALS item factors [n_items, dim] and interaction counts [n_items].

    Returns
    -------
    factors : ndarray of float32
        ``item_factors`` with the rows of cold items (popularity 0) that `_described` keeps
        replaced by `content_vectors` (a copy; unchanged when nothing is embedded).
    content : (ContentSpace, dict) or None
        `fit_content`'s result (None: disabled, or fewer than two warm items).
    cold : dict
        ``items`` (cold catalog items), ``content_embedded`` (how many got a content vector)
        and, when nothing could be embedded, ``content_map`` ("disabled" or "unfitted").
    """
    cold = np.flatnonzero(np.asarray(popularity) == 0)
    fitted = fit_content(catalog, item_factors, popularity, params) if params.enabled else None
    info = {"items": int(len(cold)), "content_embedded": 0}
    if fitted is None:
        info["content_map"] = "disabled" if not params.enabled else "unfitted"
        return item_factors, None, info
    rows = cold[_described(fitted[0], catalog, np.flatnonzero(popularity > 0), cold)]
    if len(rows):
        item_factors = np.array(item_factors, np.float32)
        item_factors[rows] = content_vectors(fitted[0], catalog, rows)
    info["content_embedded"] = int(len(rows))
    return item_factors, fitted, info


def write_content(path: Path, space: ContentSpace) -> None:
    """``content.npz`` (allow_pickle=False arrays, `kernels.content.ARRAYS`)."""
    np.savez(path, vocabulary=space.vocabulary.astype(str), idf=space.idf.astype(np.float32),
             price_edges=space.price_edges.astype(np.float32),
             ridge=space.ridge.astype(np.float32), bias=space.bias.astype(np.float32))


def content_manifest(result) -> dict | None:
    """The manifest's ``content`` entry of a TrainResult (None: no content map)."""
    content = getattr(result, "content", None)
    return None if content is None else content[1]
