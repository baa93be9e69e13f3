"""Tombstones read by key in a caller's transaction: the note of the latest erasure, and the
tombstones of given users. The write transactions that must never read the whole list use
these: the ingestion's and the decision path's (`tombstones.Tombstones`), and the impression
writer's (`server.impressions.writer`, a process of its own holding the store alone). Light:
the writer process imports it.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from ..store import keys

__all__ = ["noted_latest", "tombstones_of"]

def noted_latest(meta, txn) -> tuple[int, tuple[float, list[str]] | None]:
    """(`TOMBSTONE_COUNT`, (the latest time up to which an erased user's events are late, the
    key ids the tombstones name)) from the note every erasure keeps (`TOMBSTONE_LATEST`, one
    read); the second None when the note is not of the count (a store written before it, or a
    restore carried tombstones in, until the next erasure)."""
    count = int(meta.get(txn, keys.TOMBSTONE_COUNT) or b"0")
    if count == 0:  # no time is before an erasure
        return 0, (float("-inf"), [])
    raw = meta.get(txn, keys.TOMBSTONE_LATEST)
    noted = json.loads(raw) if raw else None
    if noted is None or noted["count"] != count:
        return count, None
    return count, (noted["until"], noted["kids"])


def tombstones_of(meta, txn, user_ids: Sequence[str], ring: Sequence[tuple[str, bytes]],
                  digest: Callable[[bytes, str], str]) -> list[tuple[bytes, dict] | None]:
    """(key, record) of each user's tombstone, read by key under each (kid, key) of `ring`
    in turn (the first found), `digest(key, user id)` the HMAC; None for a user never erased.
    One HMAC per key and one read a user, whatever the number of tombstones."""
    out: list[tuple[bytes, dict] | None] = []
    for uid in user_ids:
        found = None
        for kid, key in ring:
            tkey = keys.tombstone_key(kid, digest(key, uid))
            raw = meta.get(txn, tkey)
            if raw is not None:
                found = (tkey, json.loads(raw))
                break
        out.append(found)
    return out
