"""ExportImpressions: the log with its joined outcomes, as training reads it back.

Stored impressions hold item codes and keyed hashes of users. The export names items by the
active bundle's catalog (items it no longer holds as "code:<n>") and users by id when a profile
with that id still exists: the profiles' ids are hashed once per export under every key of the
`user-id` ring (an erased user has no profile, so the hash stays a hash).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..interfaces import BundleSource
from .log import ImpressionLog, user_hash
from .records import Impression, item_codes_of

__all__ = ["ExportedImpression", "ImpressionExport"]


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
        """{`kid:hex`: user id} of every profile, under every key of the ring."""
        ring = self.log.ring.keys
        return {f"{kid}:{user_hash(key, u)}": u for u in self.user_ids() for kid, key in ring}

    def _catalog(self) -> dict[int, str]:
        bundle = self.bundles.active
        if bundle is None:
            return {}
        ids = bundle.items["item_ids"].tolist()
        return dict(zip(item_codes_of(ids).tolist(), map(str, ids)))

    def rows(self, start: float = 0.0, end: float = 0.0) -> Iterator[ExportedImpression]:
        """Every impression shown in [start, end] (0: unbounded), one read snapshot."""
        self.log.flush()
        users, catalog = self._users(), self._catalog()
        for ref, rid, imp in self.log.export(start, end):
            ids = [catalog.get(c) or f"code:{c}" for c in np.asarray(imp.items).tolist()]
            yield ExportedImpression(rid, ref, users.get(ref, ""), ids, imp)
