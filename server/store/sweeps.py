"""Deleting what a scan of a whole table picks (retention) without holding the writer lock for
the scan.

LMDB has one writer at a time across processes: a write transaction that walks a table of
millions of records (a retention pass over every raw event, decision or impression) stops
every other write (ingestion, decisions, impressions) for seconds. `sweep` walks the table in
read snapshots instead, `chunk` keys each, and deletes what a chunk picked in one short write
transaction before it reads the next, resuming after the last key it read. A record picked in
a snapshot and written or deleted before its delete commits is handled by `drop`, which must be
idempotent (deleting a missing key is a no-op) and may check again what it deletes; retention's
picks never become wrong with time (an expired record stays expired).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .table import Table

__all__ = ["sweep"]

P = TypeVar("P")


def sweep(store, table: Table, pick: Callable[[object, bytes], P | None],
          drop: Callable[[object, list[P]], int], start: bytes = b"",
          chunk: int = 10_000) -> int:
    """Delete every record of `table` from key `start` on that `pick(txn, key)` names.

    Parameters
    ----------
    store : Store
        Whose `read()` snapshots the keys are read in and whose `write(..., erasure=True)`
        deletes (retention frees space, so it may use the erasure reserve).
    pick : callable
        (read txn, key) -> what `drop` needs to delete that record (the key, or the key and an
        index entry), or None to keep it. It may read the record's value through `txn`.
    drop : callable
        (write txn, picks of one chunk) -> how many records it deleted.
    start : bytes
        The first key to look at (tables whose first keys are indexes start past them).
    chunk : int
        Keys read per snapshot, so at most `chunk` records deleted per write transaction.

    Returns
    -------
    int
        Records deleted, as `drop` counted them.
    """
    total = 0
    while True:
        picked, seen, last = [], 0, b""
        with store.read() as txn:
            for key in table.keys_from(txn, start):
                seen, last = seen + 1, key
                found = pick(txn, key)
                if found is not None:
                    picked.append(found)
                if seen >= chunk:
                    break
        if picked:
            total += store.write(lambda txn, picked=picked: drop(txn, picked), erasure=True)
        if seen < chunk:
            return total
        start = last + b"\x00"  # the smallest key after `last`
