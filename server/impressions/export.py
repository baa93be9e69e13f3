"""ExportImpressions: the log with its joined outcomes, as training reads it back; and one
user's impressions as their access export lists them, a page at a time (`user_page`,
ExportProfile).

Stored impressions hold item codes and keyed hashes of users. The export names items by the
active bundle's catalog (items it no longer holds as "code:<n>") and users by id when a profile
with that id still holds a stored event (`ProfileRepository.user_ids`: one event read per user):
those ids are hashed once per export under each key of the `user-id` ring that some impression
is filed under (an erased user has no events, so the hash stays a hash).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..interfaces import BundleSource
from .log import ImpressionLog, user_hash
from .records import ITEM_BITS, Impression

__all__ = ["ExportedImpression", "ImpressionExport", "impression_document",
           "user_impressions_page"]


@dataclass(frozen=True)
class ExportedImpression:
    request_id: str
    user_ref: str
    """`kid:hex` keyed hash of the user."""
    user_id: str
    """"" when no profile has this hash."""
    item_ids: list[str]
    impression: Impression


class ImpressionExport:
    def __init__(self, log: ImpressionLog, bundles: BundleSource,
                 user_ids: Callable[[], Iterable[str]]):
        self.log, self.bundles, self.user_ids = log, bundles, user_ids

    def _users(self) -> dict[str, str]:
        """{`kid:hex`: user id} of every profile, under each key of the ring that some
        impression is filed under (`ImpressionLog.kids_in_use`: a key retired long enough ago
        that retention took its impressions would cost one HMAC and one entry per user for
        nothing). Hashed without the serving path's digest cache, which a million users would
        only flush."""
        ring = self.log.kids_in_use()
        if not ring:
            return {}
        return {f"{kid}:{user_hash(key, u, cached=False)}": u
                for u in self.user_ids() for kid, key in ring}

    def _catalog(self) -> dict[int, str]:
        bundle = self.bundles.active
        if bundle is None:
            return {}
        ids = bundle.items["item_ids"].tolist()
        return dict(zip(bundle.item_codes.tolist(), map(str, ids)))

    def names(self) -> tuple[dict[str, str], dict[int, str]]:
        """({`kid:hex`: user id}, {item code: item id}) for `rows`: every profile's id hashed
        under each key impressions are filed under, the catalog's codes (seconds for a
        million profiles: call it in a thread, not on the event loop)."""
        return self._users(), self._catalog()

    def rows(self, start: float = 0.0, end: float = 0.0,
             names: tuple[dict[str, str], dict[int, str]] | None = None
             ) -> Iterator[list[ExportedImpression]]:
        """Every impression shown in [start, end] (0: unbounded), a list per read snapshot
        (`ImpressionLog.export`; what is still buffered is not in it: `Impressions.export`
        writes it first); users and items named by `names` (made here if None)."""
        users, catalog = names if names is not None else self.names()
        for chunk in self.log.export(start, end):
            yield [ExportedImpression(rid, ref, users.get(ref, ""), _named(imp, catalog), imp)
                   for ref, rid, imp in chunk]

    def user_page(self, user_id: str, offset: int, max_bytes: int) -> tuple[list[dict], int | None]:
        """`user_impressions_page` with items named by the active bundle's catalog."""
        return user_impressions_page(self.log, user_id, self._catalog(), offset, max_bytes)


def _named(imp: Impression, catalog: dict[int, str]) -> list[str]:
    """The ids of the items `imp` showed (`catalog` naming codes; "code:<n>" for one it lacks)."""
    return [catalog.get(c) or f"code:{c}" for c in np.asarray(imp.items).tolist()]


def user_impressions_page(log: ImpressionLog, user_id: str, catalog: dict[int, str],
                          offset: int, max_bytes: int) -> tuple[list[dict], int | None]:
    """The impressions `log` holds about `user_id` from `offset` (`ImpressionLog.page_of_user`:
    the newest first), as `impression_document`s listed oldest first, as many as make at most
    `max_bytes` of JSON in the answer (one at least), and the next page's offset (None: none).
    The page is cut by the JSON each document will be: stored, an impression is 13 bytes per
    item shown, its JSON 80-210 (7 to 15 times)."""
    def measure(rid: str, imp: Impression) -> tuple[dict, int]:
        doc = impression_document(rid, imp, catalog)
        return doc, len(json.dumps(doc, ensure_ascii=False, default=str).encode()) + 2

    rows, after = log.page_of_user(user_id, offset, max_bytes, measure)
    return sorted(rows, key=lambda r: (r["timestamp"], r["request_id"])), after


def impression_document(request_id: str, imp: Impression, catalog: dict[int, str]) -> dict:
    """One impression as JSON-ready values: what was shown (items by id, `catalog` naming the
    codes; "code:<n>" where it does not), when, by which model on which channel, and what the
    feedback join added (outcomes per position)."""
    outcomes = imp.outcomes if imp.outcomes is not None else np.zeros(len(imp.items), np.uint8)
    items = [{"position": p, "item_id": item, "score": s,
              "outcomes": [name for name, bit in ITEM_BITS.items() if o & bit]}
             for p, (item, s, o) in enumerate(zip(_named(imp, catalog),
                                                  np.asarray(imp.scores).tolist(),
                                                  np.asarray(outcomes).tolist()))]
    return {"request_id": request_id, "timestamp": imp.timestamp,
            "model_version": imp.model_version, "channel": imp.channel, "context": imp.context,
            "cold_start": imp.cold_start, "items": items,
            "first_click_position": imp.first_click, "clicks": imp.clicks,
            "add_to_carts": imp.add_to_carts, "purchases": imp.purchases, "revenue": imp.revenue}
