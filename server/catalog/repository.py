"""The catalog updates in the store: one record per item (its latest update), one sequence number.

Transactions (the store's rules, `server.store.lmdb_store`): `write` stores a whole
UpsertItems or RemoveItems call in one write transaction, which also moves `catalog-seq` to
the last sequence number it handed out, so a worker that reads the new number reads every
record of the call. `read_all` takes one read snapshot: the records and the number agree.
`sequence` is one read of one key (what the workers poll).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from ..store import Store
from ..store.keys import CATALOG_SEQ, catalog_item_key
from .errors import CatalogFull
from .records import CatalogItem, decode_item, encode_item

__all__ = ["CatalogRecords"]


class CatalogRecords:
    def __init__(self, store: Store, max_items: int):
        self.store = store
        self.max_items = max_items
        self._table = store.table("catalog")
        self._meta = store.table("meta")

    def sequence(self) -> int:
        """The latest update's sequence number (0: none yet)."""
        raw = self.store.get("meta", CATALOG_SEQ)
        return int(raw) if raw else 0

    def write(self, items: Sequence[CatalogItem]) -> int:
        """Store `items` (a later one of the same id wins); returns the new sequence number.
        CatalogFull when the table would hold more than `max_items` items."""
        keys = [catalog_item_key(i.item_id) for i in items]
        now = time.time()

        def txn_fn(txn) -> int:
            held = self._table.count(txn)
            adding = len(set(keys) - {k for k, _ in self._table.present(txn, keys)})
            if held + adding > self.max_items:
                raise CatalogFull(held, adding, self.max_items)
            raw = self._meta.get(txn, CATALOG_SEQ)
            seq = int(raw) if raw else 0
            for key, item in zip(keys, items):
                seq += 1
                self._table.put(txn, key, encode_item(dataclasses.replace(item, seq=seq, at=now)))
            self._meta.put(txn, CATALOG_SEQ, b"%d" % seq)
            return seq
        return self.store.write(txn_fn)

    def drop(self, absorbed: Callable[[CatalogItem], bool]) -> int:
        """Delete the records for which `absorbed(item)` holds, in one write transaction (so a
        record replaced meanwhile is judged as it now is); how many went."""
        def txn_fn(txn) -> int:
            gone = [k for k, v in self._table.items(txn) if absorbed(decode_item(k.decode(), v))]
            for key in gone:
                self._table.delete(txn, key)
            return len(gone)
        return self.store.write(txn_fn)

    def read_all(self) -> tuple[int, list[CatalogItem]]:
        """(sequence number, every item's latest update in sequence order), one snapshot."""
        with self.store.read() as txn:
            raw = self._meta.get(txn, CATALOG_SEQ)
            items = [decode_item(k.decode(), v) for k, v in self._table.items(txn)]
        items.sort(key=lambda i: i.seq)
        return (int(raw) if raw else 0), items
