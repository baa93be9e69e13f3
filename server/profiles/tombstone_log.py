"""What a process reads of the tombstones: the whole list once (`scan`), then the tombstones
written since, through the sequence log (`logged`: the n-th tombstone written logs its key
under `tombstone-seq␟n`, `keys.tombstone_seq_key`), into one `TombstoneRead` grown in place.
`tombstones.Tombstones` holds the read and its lock; these read `txn` only.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

from contract.erasure import keys_in_use

from ..store import keys

__all__ = ["TombstoneRead", "late_until", "logged", "scan"]


class TombstoneRead:
    """What this process knows of the tombstones, as of `count`: one object, grown in place
    (under `Tombstones._lock`) by the tombstones logged since it was read (`logged`), or
    replaced whole by a read of the list. Lock-free readers only look values up in its dicts
    (`count` moves last); whoever iterates them copies them under the lock (`listing`)."""

    __slots__ = ("count", "by_digest", "keys", "latest", "erased", "kids")

    def __init__(self, count: int, by_digest: dict[tuple[str, str], float],
                 keys: list[tuple[str, bytes]], latest: float,
                 erased: dict[tuple[str, str], float]):
        self.count = count
        """`tombstone-count` as read (-1: never read)."""
        self.by_digest = by_digest
        """{(kid, digest): erasure time}."""
        self.keys = keys
        """The ring's keys some tombstone names (one HMAC per key per lookup)."""
        self.latest = latest
        """The latest time up to which an erased user's events are late (`late_until`): no
        event after it can be from before an erasure."""
        self.erased = erased
        """{(kid, digest): the user's erasure time}: when their data was erased (a repeat that
        found nothing left moves `by_digest`, the cut-off, not this: `erase_user`)."""
        self.kids = {kid for kid, _ in keys}

    def grow(self, added: list[tuple[int, tuple[str, str], dict]], count: int,
             ring: Sequence[tuple[str, bytes]], untold: dict | None) -> None:
        """Add the tombstones `added` (`logged`) to this read, as of `count` (under the
        lock), `ring` the keyring's keys; those new or moved go to `untold` too, if given."""
        for _, k, record in added:
            at = record["at"]
            if untold is not None and self.by_digest.get(k) != at:
                untold[k] = at
            self.by_digest[k] = at
            self.erased[k] = record.get("erased", at)
            self.latest = max(self.latest, late_until(record))
            if k[0] not in self.kids:
                self.kids = self.kids | {k[0]}
                self.keys = [(kid, key) for kid, key in ring if kid in self.kids]
        self.count = count


def late_until(record: dict) -> float:
    """The time up to which a tombstone's user's events are late: the later of the erasure
    time and the latest event it erased."""
    return max(record["at"], record.get("events_until", 0.0))


def logged(meta, txn, since: int, count: int) -> list[tuple[int, tuple[str, str], dict]] | None:
    """(n, (kid, digest), record) of the tombstones written `since` + 1 .. `count`, in
    order, from the log (`keys.tombstone_seq_key`); None when it lacks one of them."""
    entries = []
    for key, value in meta.items(txn, keys.tombstone_seq_key(since + 1)):
        if not key.startswith(keys.TOMBSTONE_SEQ_PREFIX) or \
                (n := keys.tombstone_seq(key)) > count:
            break
        entries.append((n, value))
    if [n for n, _ in entries] != list(range(since + 1, count + 1)):
        return None
    records: dict[bytes, dict | None] = {}  # (one read of a tombstone written twice)
    out = []
    for n, suffix in entries:
        key = keys.TOMBSTONE_PREFIX + suffix
        if key not in records:
            raw = meta.get(txn, key)
            records[key] = json.loads(raw) if raw is not None else None
        if records[key] is None:
            return None
        out.append((n, keys.tombstone_parts(key), records[key]))
    return out


def scan(meta, txn, count: int, ring: Sequence[tuple[str, bytes]]) -> TombstoneRead:
    """The whole list as `txn` sees it (`count` tombstones written), `ring` the keyring's keys."""
    found = [(keys.tombstone_parts(k), json.loads(v))
             for k, v in meta.scan_prefix(txn, keys.TOMBSTONE_PREFIX)]
    by_digest = {k: t["at"] for k, t in found}
    return TombstoneRead(count, by_digest, keys_in_use(by_digest, ring),
                         max((late_until(t) for _, t in found), default=0.0),
                         {k: t.get("erased", t["at"]) for k, t in found})
