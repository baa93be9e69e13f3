"""Bring a store's records to the layouts of `layouts.KINDS` when it is opened.

Run by `Store.__init__`: one read transaction when every stamp is current (every open after
the first), else one write transaction that re-checks the stamps, rewrites the records of each
outdated kind step by step, and stamps every kind (a new, empty store is stamped as it is). A
store stamped with a newer layout than this code knows is refused, so an old binary never
misreads (or half-migrates) new records.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from ..errors import FailedPrecondition
from .keys import layout_key
from .layouts import Fold, RecordKind, same

__all__ = ["open_layouts", "stored_versions", "refuse_newer_layouts"]

logger = logging.getLogger("tailor.store")

CHUNK = 10_000
"""Records read at a time while rewriting (all in the one write transaction)."""


def stored_versions(store, txn, kinds: Sequence[RecordKind]) -> dict[str, int | None]:
    """The stamped layout version of each kind (None: never stamped)."""
    meta = store.table("meta")
    raw = meta.get_many(txn, [layout_key(k.name) for k in kinds])
    return {k.name: None if r is None else int(r) for k, r in zip(kinds, raw)}


def open_layouts(store, kinds: Sequence[RecordKind], readonly: bool = False) -> dict[str, int]:
    """Migrate outdated kinds; returns {kind: version it was migrated from} (empty: none)."""
    with store.read() as txn:
        stamps = stored_versions(store, txn, kinds)
        fresh = _fresh(store, txn, kinds, stamps)
    if all(stamps[k.name] == k.version for k in kinds):
        return {}
    refuse_newer_layouts(kinds, stamps)
    if readonly:
        if fresh:
            return {}
        outdated = [k.name for k in kinds if (stamps[k.name] or k.first) < k.version]
        if outdated:
            raise FailedPrecondition(f"store at {store.path} needs a layout migration of "
                                     f"{', '.join(outdated)}; open it writable once")
        return {}
    return store.write(lambda txn: _migrate(store, txn, kinds))


def refuse_newer_layouts(kinds: Sequence[RecordKind], stamps: dict[str, int | None]) -> None:
    newer = [f"{k.name} (stored {stamps[k.name]}, known {k.version})" for k in kinds
             if stamps[k.name] is not None and stamps[k.name] > k.version]
    if newer:
        raise FailedPrecondition("the store was written by a newer Tailor; record layouts "
                                 f"unknown here: {', '.join(newer)}")


def _migrate(store, txn, kinds: Sequence[RecordKind]) -> dict[str, int]:
    stamps = stored_versions(store, txn, kinds)  # again, under the writer lock
    refuse_newer_layouts(kinds, stamps)
    fresh = _fresh(store, txn, kinds, stamps)
    migrated = {}
    for kind in kinds:
        old = kind.version if fresh else stamps[kind.name] or kind.first
        if old < kind.version and all(kind.steps[v] is same for v in range(old, kind.version)):
            logger.info("%s records: layout %d is layout %d as it is (only stamped)", kind.name,
                        old, kind.version)
            migrated[kind.name] = old
        elif old < kind.version:
            n = _rewrite(store.table(kind.table), txn, kind, old)
            logger.info("migrated %d %s records from layout %d to %d", n, kind.name, old,
                        kind.version)
            migrated[kind.name] = old
    meta = store.table("meta")
    meta.put_many(txn, [(layout_key(k.name), str(k.version).encode()) for k in kinds])
    return migrated


def _fresh(store, txn, kinds: Sequence[RecordKind], stamps: dict[str, int | None]) -> bool:
    """No stamp and no record in any table of `kinds`: a new store, in today's layouts as is."""
    if any(v is not None for v in stamps.values()):
        return False
    return not holds_records(store, txn, {k.table for k in kinds})


def holds_records(store, txn, names: Iterable[str]) -> bool:
    """Whether any of the tables `names` holds a record (one not created yet, in a read-only
    open of an older data dir, holds none)."""
    for name in names:
        try:
            table = store.raw_table(name)
        except KeyError:
            continue
        if table.first_key(txn, b"") is not None:
            return True
    return False


def _rewrite(table, txn, kind: RecordKind, old: int) -> int:
    """Apply `kind.steps[old:]` to every record of `kind`, CHUNK records at a time."""
    steps = [kind.steps[v] for v in range(old, kind.version)]
    start, n = b"", 0
    while True:
        chunk = []
        for key, value in table.items(txn, start):
            if len(chunk) == CHUNK:
                break
            chunk.append((key, value))
        for key, value in chunk:
            if kind.owns(key):
                for step in steps:
                    value = step.apply(table, txn, key, value) if isinstance(step, Fold) \
                        else step(value)
                table.put(txn, key, value)
                n += 1
        if len(chunk) < CHUNK:
            return n
        start = chunk[-1][0] + b"\x00"
