"""`OpenedRecords`: a process's decoded copies of one table's records, by key and stored bytes.

A hot read (the contact policy reads each user's profile meta record on every ChooseVariant)
opens the same sealed record (AES-GCM under the user's data key, `sealed`) and decodes it
(JSON) call after call while it does not change. This keeps what the decoding gave, under the
record's key and its bytes as stored, so a read that finds the same bytes under the same key
takes it without opening anything. Any write of the record stores other bytes (a fresh
nonce when sealed; new content when not), so a changed record (a consent withdrawn, a new
address) is never served from here.

A sealed record is readable only while its user's data key exists (`datakeys`: an erasure
destroys it, crypto-shredding, and a record whose key is gone reads as absent). Each destroyed
key adds one to the store's shred count, which every snapshot shows; a key can be destroyed
only that way. The copies are kept under the shred count of the snapshot they were opened in
and taken only by a snapshot that shows the same count: in such a snapshot every key that
opened them still exists (no key of that count's snapshots is destroyed), so the record would
open to the same value. A snapshot showing a newer count (an erasure anywhere, by any process)
drops every copy, the erased user's decoded personal data with them; one showing an older count
(a transaction opened before the erasure) reads as without this cache. Without encryption the
count stays 0 and the stored bytes are the value itself.

Decoded values are shared between callers: they must be read, never changed.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .table import Table

__all__ = ["OpenedRecords"]


class OpenedRecords:
    """Decoded values of `table`'s records (`decode` of the opened bytes), at most `records` of
    them and `max_bytes` of their keys and stored bytes (the decoded form takes a few times
    that: a parsed JSON object several), oldest dropped first. `records` 0: nothing kept."""

    def __init__(self, table: Table, decode: Callable[[bytes], object], records: int,
                 max_bytes: int):
        self.table, self.decode = table, decode
        self.records, self.max_bytes = records, max_bytes
        datakeys = getattr(table, "datakeys", None)
        self._count = datakeys.shred_count if datakeys is not None else _no_shreds
        self._lock = threading.Lock()
        self._held: tuple[int, OrderedDict[bytes, tuple[bytes, object]], list[int]] = (
            -1, OrderedDict(), [0])
        """(shred count, {stored bytes: (key, decoded)}, [their bytes]) replaced as one tuple
        under the lock and read once, as `DataKeys._kept` (a thread never pairs one count
        with another count's copies)."""

    def __len__(self) -> int:
        return len(self._held[1])

    def opened(self, txn, keys: Sequence[bytes], stored: Sequence[bytes | None]) -> list:
        """`decode` of each record `stored` holds for `keys` (read in `txn`: `Table.stored`),
        None where there is none or it does not open (a shredded user's), as `open_many` then
        `decode` would give; only the records not kept are opened (together)."""
        held = self._held_for(txn) if self.records else None
        if held is None:
            return [self.decode(v) if v else None
                    for v in self.table.open_many(txn, list(keys), list(stored))]
        out, missed = [], []
        for i, (key, raw) in enumerate(zip(keys, stored)):
            found = held.get(raw) if raw else None
            if found is not None and found[0] == key:
                out.append(found[1])
            else:
                out.append(None)
                if raw:
                    missed.append(i)
        if missed:
            opened = self.table.open_many(txn, [keys[i] for i in missed],
                                          [stored[i] for i in missed])
            fresh = []
            for i, value in zip(missed, opened):
                if value:  # one that does not open is not kept: read again next time
                    out[i] = self.decode(value)
                    fresh.append((stored[i], keys[i], out[i]))
            self._keep(held, fresh)
        return out

    def _held_for(self, txn) -> OrderedDict | None:
        """The copies valid in `txn` (renewed, empty, on a newer shred count; None on an older)."""
        count = self._count(txn)
        held_count, held, _ = self._held
        if count > held_count:
            with self._lock:
                if count > self._held[0]:
                    self._held = (count, OrderedDict(), [0])
                held_count, held, _ = self._held
        return held if count == held_count else None

    def _keep(self, held: OrderedDict, fresh: list[tuple[bytes, bytes, object]]) -> None:
        """Keep (stored, key, decoded) triples in `held`, if it is still the current one,
        dropping the oldest past the bounds."""
        with self._lock:
            if self._held[1] is not held:
                return
            size = self._held[2]
            for raw, key, value in fresh:
                cost = len(raw) + len(key)
                if cost > self.max_bytes:
                    continue
                old = held.pop(raw, None)
                if old is not None:
                    size[0] -= len(raw) + len(old[0])
                held[raw] = (key, value)
                size[0] += cost
            while held and (len(held) > self.records or size[0] > self.max_bytes):
                raw, (key, _) = held.popitem(last=False)
                size[0] -= len(raw) + len(key)


def _no_shreds(txn) -> int:
    """The shred count of a table without data keys: always 0."""
    return 0
