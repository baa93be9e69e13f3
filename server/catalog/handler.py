"""Transport-agnostic UpsertItems and RemoveItems, and every worker's served catalog.

A call is validated whole (nothing is stored when one item is bad), stored in one write
transaction (`repository`), then applied to this process's served bundle before the call
returns. Other worker processes of the data dir poll `catalog-seq` every `bundle_poll_seconds`
(as they follow the active bundle pointer) and apply what is new. Every bundle the registry
swaps in (push, rollback, restart, another worker's push) gets the stored updates first
(`amend_bundle`, the registry's `BundleAmender`), so updates survive restarts and new bundles.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..background import Background
from ..config import Settings
from ..errors import InvalidArgument
from ..models import Bundle, ModelRegistry, UnknownCategory
from ..store import Store
from ..validation import check_count, check_free_text, check_id, check_link, check_range, check_stored_id
from .absorbed import absorbed, stored_catalogs
from .errors import CatalogFull
from .logging import logger
from .overlay import amend
from .records import CatalogItem
from .repository import CatalogRecords

__all__ = ["Catalog", "CatalogChange"]

MAX_PRICE = 1e12


def _none_stored(err: InvalidArgument, n: int) -> InvalidArgument:
    """`err`, about one entry of a call of `n`, saying that nothing of the call was stored: its
    `items[i]` counts within the call, and a client sending a file in several calls otherwise
    could not tell whether the entries beside it went."""
    note = (f"; nothing of the call was stored ({n} entr{'y' if n == 1 else 'ies'}: a call is "
            "stored whole or not at all)")
    logged = None if err.logged_problem is None else err.logged_problem + note
    return InvalidArgument(err.field, str(err)[len(err.field) + 2:] + note, logged)


@dataclass(frozen=True)
class CatalogChange:
    accepted: int
    sequence: int
    """The update's sequence number (the last one it stored)."""
    model_version: str
    new_items: int
    """Items of the call the served bundle was not trained on (embedded from content)."""


class Catalog:
    def __init__(self, settings: Settings, store: Store, registry: ModelRegistry):
        self.limits = settings.limits
        self.poll_s = settings.bundle_poll_seconds
        self.records = CatalogRecords(store, self.limits.catalog_items)
        self.registry = registry
        self._lock = asyncio.Lock()
        self._background = Background()
        """The catalog updates' follower (`refresh`); `stop` waits for an amend under way."""

    # -- validation ------------------------------------------------------------------------
    def check_batch(self, field: str, n: int) -> None:
        """A call's count of items (`field`) within its bounds: checked before its entries are
        converted (10^6 of them took 4 s on the event loop)."""
        if not n:
            raise InvalidArgument(field, "must not be empty")
        check_count(field, n, self.limits.upsert_items)

    def _check_items(self, items: Sequence[CatalogItem], field: str) -> None:
        self.check_batch(field, len(items))
        for i, item in enumerate(items):
            check_id("item_id", item.item_id, self.limits.id_bytes, f"{field}[{i}].")

    def _check_content(self, bundle: Bundle, items: Sequence[CatalogItem]) -> None:
        chars = self.limits.item_text_chars
        for i, item in enumerate(items):
            where = f"items[{i}]."
            check_free_text("title", item.title, chars, where)
            check_link("url", item.url, chars, where)
            check_link("image", item.image, chars, where)
            if item.category not in bundle.category_code:
                raise UnknownCategory(where + "category", item.category, bundle.category_code)
            if not math.isfinite(item.price):
                raise InvalidArgument(where + "price", f"must be a finite number, got {item.price}")
            check_range("price", item.price, 0.0, MAX_PRICE, where)

    # -- calls -----------------------------------------------------------------------------
    async def upsert(self, items: Sequence[CatalogItem]) -> CatalogChange:
        """Add or update `items`; they serve in this process when the call returns. A bad item
        refuses the call whole, saying so (`_none_stored`)."""
        self.check_batch("items", len(items))
        try:
            self._check_items(items, "items")
            bundle = self.registry.current()  # categories are the served bundle's
            self._check_content(bundle, items)
        except InvalidArgument as err:
            raise _none_stored(err, len(items)) from None
        stored = [CatalogItem(i.item_id, i.title, i.category, float(i.price), i.url, i.image)
                  for i in items]
        return await self._store(stored, bundle)

    async def remove(self, item_ids: Sequence[str]) -> CatalogChange:
        """Never recommend `item_ids` again (until they are upserted again). An id the served
        catalog holds is taken as stored (`check_stored_id`): an item upserted before C1 and
        bidirectional controls were refused is served until it is removed."""
        items = [CatalogItem(item_id=i, removed=True) for i in item_ids]
        self.check_batch("item_ids", len(items))
        served = active.item_row if (active := self.registry.active) is not None else {}
        try:
            for i, item in enumerate(items):
                check = check_stored_id if item.item_id in served else check_id
                check("item_id", item.item_id, self.limits.id_bytes, f"item_ids[{i}].")
        except InvalidArgument as err:
            raise _none_stored(err, len(items)) from None
        return await self._store(items, self.registry.current())

    async def _store(self, items: list[CatalogItem], bundle: Bundle) -> CatalogChange:
        try:
            seq = await asyncio.to_thread(self.records.write, items)
        except CatalogFull:  # make room: the updates every stored bundle includes go
            if not await asyncio.to_thread(self._drop_absorbed):
                raise
            seq = await asyncio.to_thread(self.records.write, items)
        await self.refresh()
        trained = bundle.trained.item_row
        new = len({i.item_id for i in items if not i.removed and i.item_id not in trained})
        served = self.registry.active
        return CatalogChange(len(items), seq, served.version if served else "", new)

    def _drop_absorbed(self) -> int:
        """Delete the stored updates every stored bundle includes (`absorbed`; blocking)."""
        catalogs = stored_catalogs(self.registry.bundles_dir, self.registry.available_versions())
        dropped = self.records.drop(lambda item: absorbed(item, catalogs))
        if dropped:
            logger.info("catalog: %d updates every stored bundle includes were dropped", dropped)
        return dropped

    # -- following the store ---------------------------------------------------------------
    def amend_bundle(self, bundle: Bundle) -> Bundle:
        """`bundle`'s trained version with every stored update (blocking: an executor's)."""
        seq, items = self.records.read_all()
        return amend(bundle.trained, items, seq) if items else bundle.trained

    async def refresh(self) -> None:
        """Apply the stored updates to the served bundles (the active one and a running
        canary's) that lag behind the store."""
        async with self._lock:
            seq = self.records.sequence()
            # a bundle installed meanwhile refuses the swap: amend the one installed instead
            # (it was amended under the registry's swap lock, perhaps before `seq` was stored)
            while (active := self.registry.active) is not None and active.catalog_seq != seq:
                served = await asyncio.to_thread(self.amend_bundle, active)
                if await self.registry.swap(active, served):
                    logger.info("catalog updates up to %d serve with bundle %s (%d items)",
                                served.catalog_seq, served.version, served.n_items)
                    break
            while (canary := self.registry.canary) is not None and \
                    canary.bundle.catalog_seq != seq:
                served = await asyncio.to_thread(self.amend_bundle, canary.bundle)
                if await self.registry.swap_canary(canary.bundle, served):
                    break

    async def start(self) -> None:
        """Follow catalog updates every `bundle_poll_seconds` (`refresh`); a failed pass keeps
        serving what is served."""
        self._background.every(self.poll_s, self.refresh, "could not apply catalog updates",
                               first=False, log=logger)

    async def stop(self) -> None:
        await self._background.stop()
