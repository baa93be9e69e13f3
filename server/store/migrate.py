"""Bring a store's records to the layouts of `layouts.KINDS` when it is opened.

Run by `Store.__init__`: one read transaction when every stamp is current and no migration is
under way (every open after the first). Else write transactions of `CHUNK` records each, so a
store of any size migrates in bounded memory and a start killed midway goes on where it
stopped: the first one re-checks the stamps under the writer lock, stamps every kind with its
new version and records what is left to rewrite (`meta layout-progress`: the versions migrated
from, the kinds still to rewrite and the last key rewritten), together with the first chunk of
records; each later one rewrites the next chunk and moves the progress on; the last deletes
it. A kind whose steps are all `same` is only stamped (no record read). A store stamped with a
newer layout than this code knows is refused, so an old binary never misreads (or
half-migrates) new records, and so is a half-migrated one by the binary that was migrating it
before it is done: its stamps are already the new versions. An open that finds a progress
record finishes the migration before anything else (a read-only open refuses the store).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence

from ..errors import FailedPrecondition
from .keys import layout_key
from .layouts import Fold, RecordKind, same

__all__ = ["open_layouts", "stored_versions", "refuse_newer_layouts", "refuse_unknown_progress",
           "PROGRESS_KEY"]

logger = logging.getLogger("tailor.store")

CHUNK = 10_000
"""Records read and rewritten a write transaction."""

PROGRESS_SECONDS = 10.0
"""A kind still being rewritten logs how far it got at most this often: a kind of 10 million
records took ~14 minutes (17 s for 200,000) with no line until it was done."""

PROGRESS_KEY = b"layout-progress"
"""meta: JSON {from: {kind: version}, todo: [kind, ...], at: hex of the last key rewritten of
todo[0] or null, n: its records rewritten so far} of a migration under way; absent before
and after."""


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
        progress = _progress(store, txn)
    under_way = progress is not None
    if not under_way and all(stamps[k.name] == k.version for k in kinds):
        return {}
    refuse_newer_layouts(kinds, stamps)
    if under_way:
        refuse_unknown_progress(kinds, progress)
    if readonly:
        outdated = [k.name for k in kinds if (stamps[k.name] or k.first) < k.version]
        if under_way or (outdated and not fresh):
            what = "a layout migration under way" if under_way else \
                f"a layout migration of {', '.join(outdated)}"
            raise FailedPrecondition(f"store at {store.path} needs {what}; open it writable once")
        return {}
    said = time.monotonic()
    while True:
        done, migrated, lines, so_far = store.write(lambda txn: _migrate_chunk(store, txn, kinds))
        for line in lines:
            logger.info(*line)
        if done:
            return migrated
        if time.monotonic() - said >= PROGRESS_SECONDS:
            logger.info(*so_far)
            said = time.monotonic()


def refuse_newer_layouts(kinds: Sequence[RecordKind], stamps: dict[str, int | None]) -> None:
    newer = [f"{k.name} (stored {stamps[k.name]}, known {k.version})" for k in kinds
             if stamps[k.name] is not None and stamps[k.name] > k.version]
    if newer:
        raise FailedPrecondition("the store was written by a newer Tailor; record layouts "
                                 f"unknown here: {', '.join(newer)}")


def refuse_unknown_progress(kinds: Sequence[RecordKind], progress: dict) -> None:
    """A migration under way of a kind unknown here was begun by a newer Tailor (one that added
    the kind, killed midway and rolled back): only it can finish it, as for a newer stamp."""
    known = {k.name for k in kinds}
    unknown = sorted(set(progress["from"]).union(progress["todo"]) - known)
    if unknown:
        raise FailedPrecondition("the store was written by a newer Tailor; its layout migration "
                                 f"under way rewrites kinds unknown here: {', '.join(unknown)}")


def _progress(store, txn) -> dict | None:
    raw = store.table("meta").get(txn, PROGRESS_KEY)
    return None if raw is None else json.loads(raw)


def _migrate_chunk(store, txn, kinds: Sequence[RecordKind]):
    """One write transaction of the migration: (done, {kind: version migrated from}, log lines
    to write once it is committed, the line of how far it got when not done). The first plans
    and stamps; each rewrites up to CHUNK records."""
    progress = _progress(store, txn)  # again, under the writer lock
    lines = []
    if progress is None:
        progress, lines = _plan(store, txn, kinds)
        if progress is None:
            return True, {}, lines, None
    by_name = {k.name: k for k in kinds}
    while progress["todo"]:
        kind = by_name[progress["todo"][0]]
        old = progress["from"][kind.name]
        start = bytes.fromhex(progress["at"]) + b"\x00" if progress["at"] is not None else b""
        last, n = _rewrite_chunk(store.table(kind.table), txn, kind, old, start)
        progress["n"] += n
        if last is not None:  # more of this kind next time
            progress["at"] = last.hex()
            store.table("meta").put(txn, PROGRESS_KEY, json.dumps(progress).encode())
            return False, {}, lines, ("migrating %s records from layout %d to %d: %d so far",
                                      kind.name, old, kind.version, progress["n"])
        lines.append(("migrated %d %s records from layout %d to %d", progress["n"], kind.name,
                      old, kind.version))
        progress.update(todo=progress["todo"][1:], at=None, n=0)
    store.table("meta").delete(txn, PROGRESS_KEY)
    return True, progress["from"], lines, None


def _plan(store, txn, kinds: Sequence[RecordKind]):
    """Stamp every kind with its version and the progress of the rewrites to do (None: none);
    with the log lines of the kinds only stamped."""
    stamps = stored_versions(store, txn, kinds)
    refuse_newer_layouts(kinds, stamps)
    fresh = _fresh(store, txn, kinds, stamps)
    olds, todo, lines = {}, [], []
    for kind in kinds:
        old = kind.version if fresh else stamps[kind.name] or kind.first
        if old >= kind.version:
            continue
        olds[kind.name] = old
        if all(kind.steps[v] is same for v in range(old, kind.version)):
            lines.append(("%s records: layout %d is layout %d as it is (only stamped)",
                          kind.name, old, kind.version))
        else:
            todo.append(kind.name)
    meta = store.table("meta")
    meta.put_many(txn, [(layout_key(k.name), str(k.version).encode()) for k in kinds])
    if not olds:
        return None, lines
    progress = {"from": olds, "todo": todo, "at": None, "n": 0}
    meta.put(txn, PROGRESS_KEY, json.dumps(progress).encode())
    return progress, lines


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


def _rewrite_chunk(table, txn, kind: RecordKind, old: int, start: bytes):
    """Apply `kind.steps[old:]` to the records of `kind` among the CHUNK keys of `table` from
    `start`: (the last key read, None at the table's end; records rewritten)."""
    steps = [kind.steps[v] for v in range(old, kind.version)]
    chunk = []
    for key, value in table.items(txn, start):
        if len(chunk) == CHUNK:
            break
        chunk.append((key, value))
    n = 0
    for key, value in chunk:
        if kind.owns(key):
            for step in steps:
                value = step.apply(table, txn, key, value) if isinstance(step, Fold) \
                    else step(value)
            table.put(txn, key, value)
            n += 1
    return (chunk[-1][0] if len(chunk) == CHUNK else None), n
