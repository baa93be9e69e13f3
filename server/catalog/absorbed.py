"""Which stored updates every stored bundle already includes: they change nothing any bundle
serves (`overlay.amend` skips them), so a full catalog drops them to make room.

An upsert is absorbed by a bundle that holds the item and was created no earlier than the
update (its trained vector and metadata win over the update). Only the bundles on disk can
serve (a push, rollback or canary takes a stored version; `bundles_kept` bounds them), so an
upsert absorbed by each of them is dropped. A removal never is: training does not read the
catalog's removals, so a bundle trained later from interactions that still name the item would
serve it again (a recall, a takedown undone).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import FailedPrecondition
from ..models.bundle import read_manifest
from ..store.lock import locked_dir
from .overlay import stamp
from .records import CatalogItem

__all__ = ["StoredCatalog", "absorbed", "stored_catalogs"]

StoredCatalog = tuple[frozenset, float]
"""(item ids, created_at as Unix seconds) of one stored bundle."""


def stored_catalogs(bundles_dir: Path, versions: Sequence[str]) -> list[StoredCatalog]:
    """The catalog of each stored bundle version (blocking); [] when one cannot be read, so
    that nothing counts as absorbed."""
    out = []
    with locked_dir(bundles_dir, shared=True):  # no scrub rewrites them meanwhile
        for version in versions:
            path = bundles_dir / version
            try:
                created = stamp(read_manifest(path).raw.get("created_at"))
                with np.load(path / "items.npz", allow_pickle=False) as npz:
                    ids = frozenset(npz["item_ids"].astype(str).tolist())
            except (FailedPrecondition, OSError, ValueError, KeyError):
                return []
            out.append((ids, created))
    return out


def absorbed(item: CatalogItem, catalogs: Sequence[StoredCatalog]) -> bool:
    """Whether every one of `catalogs` (at least one) makes `item`'s update a no-op, and no
    bundle trained later can undo it (a removal never is absorbed)."""
    if item.removed:
        return False
    return bool(catalogs) and all(item.item_id in ids and item.at <= created
                                  for ids, created in catalogs)
