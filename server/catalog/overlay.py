"""The served bundle: a trained bundle plus the catalog updates made since (copy on write).

`amend(trained, updates, seq)` returns a new `Bundle` of the same version and never changes
`trained` (batches running on it finish undisturbed; the registry swaps the new one in with
one reference assignment). For each item's latest update:

- an item the bundle lacks is appended as row ``trained.n_items + j``: its vector is the
  bundle's content map of (category, price band, title) (`kernels.content`), or the mean vector
  of its category's warm items for bundles without a content map; it is added to a copy of the
  FAISS index; its ranker inputs are popularity 0, recency 0 days, its category and price;
- an item the bundle has keeps its trained vector; its title, URL, image, category and price
  change only when the update is newer than the bundle (`created_at`): a bundle trained after
  an update already holds the item as the catalog then was;
- a removed item is listed in `removed` (never recommended, whatever the bundle) and leaves the
  popularity lists; a removed item the bundle lacks is simply not added.

The encoder, histories and seen-sets stay the trained bundle's (`Bundle.trained`): live
events on a new item do not enter encoder histories until a training includes it.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence
from datetime import UTC, datetime

import faiss
import numpy as np

from ..models import Bundle
from .logging import logger
from .records import CatalogItem

__all__ = ["amend", "created_at", "stamp"]


def created_at(trained: Bundle) -> float:
    """Unix seconds of the bundle's `created_at` (0 when missing or unreadable)."""
    return stamp(trained.manifest.raw.get("created_at"))


def stamp(raw) -> float:
    """Unix seconds of a manifest's `created_at` value (0 when missing or unreadable)."""
    try:
        return datetime.strptime(str(raw), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _known(trained: Bundle, items: Sequence[CatalogItem]) -> list[CatalogItem]:
    """The live updates whose category this bundle knows (others wait for a bundle that does)."""
    out = []
    for item in items:
        if item.removed or item.category in trained.category_code:
            out.append(item)
        else:
            logger.warning("catalog update of an item skipped: bundle %s has no category %r",
                           trained.version, item.category[:64])
    return out


def _category_means(trained: Bundle) -> np.ndarray:
    """[n_categories, dim] mean vector of each category's warm items (global mean if none)."""
    warm = trained.items["popularity"] > 0
    pool = np.flatnonzero(warm) if warm.any() else np.arange(trained.n_items)
    glob = trained.vectors[pool].mean(axis=0) if len(pool) else np.zeros(trained.dim, np.float32)
    out = np.tile(glob, (len(trained.category_code), 1))
    cats = trained.item_category[pool]
    for c in np.unique(cats):
        out[c] = trained.vectors[pool[cats == c]].mean(axis=0)
    return out.astype(np.float32)


_EMBEDDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per trained bundle: {(item id, seq): vector} of the updates it has embedded (an update is
embedded once, not at every later update)."""


def _embed(trained: Bundle, new: Sequence[CatalogItem], codes: np.ndarray) -> np.ndarray:
    prices = np.array([i.price for i in new], np.float64)
    if trained.content is not None:
        return trained.content.embed(codes, prices, [i.title for i in new])
    return _category_means(trained)[codes]


def _vectors(trained: Bundle, new: Sequence[CatalogItem], codes: np.ndarray) -> np.ndarray:
    """[len(new), dim] vectors of the new items, embedding only those not embedded before."""
    cache = _EMBEDDED.setdefault(trained, {})
    missing = [j for j, i in enumerate(new) if (i.item_id, i.seq) not in cache]
    if missing:
        fresh = _embed(trained, [new[j] for j in missing], codes[missing])
        cache.update({(new[j].item_id, new[j].seq): v for j, v in zip(missing, fresh)})
    keys = {(i.item_id, i.seq) for i in new}
    for key in [k for k in cache if k not in keys]:  # superseded or removed since
        del cache[key]
    return np.stack([cache[(i.item_id, i.seq)] for i in new]).astype(np.float32, copy=False)


def _put(arr: np.ndarray, rows: list[int], values: list) -> np.ndarray:
    """`arr` with `values` at `rows` (string arrays widened to hold them)."""
    if not rows:
        return arr
    out = arr.astype(np.result_type(arr, np.asarray(values)))
    out[rows] = values
    return out


def _columns(trained: Bundle, new, codes, updates: list[tuple[int, CatalogItem]]) -> dict:
    """The items.npz arrays with `updates` applied and one row per `new` item appended."""
    columns = {
        "item_ids": [i.item_id for i in new], "titles": [i.title for i in new],
        "urls": [i.url for i in new], "images": [i.image for i in new], "category": codes,
        "price": [i.price for i in new], "popularity": np.zeros(len(new)),
        "recency_days": np.zeros(len(new)),
    }
    rows = [r for r, _ in updates]
    changed = {
        "titles": [u.title for _, u in updates], "urls": [u.url for _, u in updates],
        "images": [u.image for _, u in updates], "price": [u.price for _, u in updates],
        "category": [trained.category_code[u.category] for _, u in updates],
    }
    out = {}
    for key, arr in trained.items.items():
        if key == "category_names" or len(arr) != trained.n_items:
            out[key] = arr
            continue
        arr = _put(arr, rows, changed[key]) if key in changed else arr
        extra = np.asarray(columns[key]) if key in columns else np.zeros(len(new), arr.dtype)
        extra = extra.astype(str if arr.dtype.kind == "U" else arr.dtype)
        out[key] = np.concatenate([arr, extra])
    return out


def amend(trained: Bundle, updates: Sequence[CatalogItem], seq: int) -> Bundle:
    """`trained` with `updates` (each item's latest, in sequence order) applied; see above."""
    updates = _known(trained, updates)
    row, newer_than = trained.item_row, created_at(trained)
    new = [i for i in updates if not i.removed and i.item_id not in row]
    changed = [(row[i.item_id], i) for i in updates
               if not i.removed and i.item_id in row and i.at > newer_than]
    removed = np.unique(np.asarray([row[i.item_id] for i in updates
                                    if i.removed and i.item_id in row], np.int64))
    codes = np.asarray([trained.category_code[i.category] for i in new], np.int32)
    index, vectors = trained.index, trained.vectors
    if new:
        added = _vectors(trained, new, codes)
        index = faiss.clone_index(trained.index)
        index.add(added)
        vectors = np.ascontiguousarray(np.concatenate([trained.vectors, added]), np.float32)
    bundle = Bundle(version=trained.version, path=trained.path, manifest=trained.manifest,
                    items=_columns(trained, new, codes, changed), users=trained.users,
                    index=index, vectors=vectors, encoder=trained.encoder, ranker=trained.ranker,
                    loaded_at=trained.loaded_at, content=trained.content, removed=removed,
                    base=trained, catalog_seq=seq)
    bundle.user_row = trained.user_row  # one dict: erasure masks a user in both
    if len(removed):
        bundle.popular = bundle.popular[~np.isin(bundle.popular, removed)]
        bundle.category_items = [c[~np.isin(c, removed)] for c in bundle.category_items]
    return bundle
