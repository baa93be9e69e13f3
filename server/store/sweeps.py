"""Scanning a whole table in short read snapshots (`scan`: exports), and deleting what such a
scan picks (`sweep`: retention) without holding the writer lock for the scan.

A read transaction open for long keeps LMDB from reusing the pages written meanwhile (the map
grows), and must stay on the thread that opened it; `scan` opens one per `chunk` keys and
closes it before handing the chunk's picks on, so its caller may take each chunk in another
thread (off the event loop) and send them at any pace.

LMDB has one writer at a time across processes: a write transaction that walks a table of
millions of records (a retention pass over every raw event, decision or impression) stops
every other write (ingestion, decisions, impressions) for seconds. `sweep` walks the table in
read snapshots instead, `chunk` keys each, and deletes what a chunk picked in one short write
transaction before it reads the next, resuming after the last key it read. A record picked in
a snapshot and written or deleted before its delete commits is handled by `drop`, which must be
idempotent (deleting a missing key is a no-op) and may check again what it deletes; retention's
picks never become wrong with time (an expired record stays expired).

A chunk's picks are deleted `per_write` (`WRITE_PICKS`) at a time, and after each write the
sweep rests as long as that write took (`REST`), so it holds the writer lock at most about
half the time and a waiting writer gets it at the next release: one write of 10,000 events and
their dedupe keys held the lock 220-500 ms, and back to back they raised ChooseVariant's p50
from ~30 to 250-540 ms, its p99 to ~1 s, for the whole sweep (measured: 300,000 expired events
on the shared 2-core box; docs/privacy.md, "Retention").

Those three (`chunk`, `per_write`, `rest`) are the sweep's pace, which an operator may tune (a
larger store, a busier writer): a sweep called without them takes the store's `sweep_pace`
(`SweepPace`, from the Settings `retention_sweep_*` that `server.app` gives the store; this
module's defaults otherwise).

Once `store.stopping` is set (the server stops), a sweep writes nothing more and returns what it
deleted: each write is whole on its own, and the next pass (one runs at each start) takes the
rest. Ran to its end, a pass held the stop ~2 times as long as it took without rests (its rests
then serve no writer), past a service manager's grace on a large store.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from .table import Table

__all__ = ["DEFAULT_PACE", "SweepPace", "scan", "sweep"]

P = TypeVar("P")

WRITE_PICKS = 1_000
"""Records one write transaction of `sweep` deletes at most."""
REST = 1.0
"""How long `sweep` rests after each write, in multiples of the time the write took."""
CHUNK_KEYS = 10_000
"""Keys `sweep` reads per read snapshot."""


@dataclass(frozen=True)
class SweepPace:
    """How hard a `sweep` presses on the store's other writers (a store's `sweep_pace`; the
    server's from Settings `retention_sweep_chunk_keys`, `retention_sweep_write_records` and
    `retention_sweep_rest`)."""

    chunk: int = CHUNK_KEYS
    """Keys read per read snapshot."""
    per_write: int = WRITE_PICKS
    """Records deleted per write transaction at most."""
    rest: float = REST
    """Rest after each write, in multiples of its duration."""


DEFAULT_PACE = SweepPace()
"""A store's `sweep_pace` unless it is given one (the server gives its Settings')."""


def sweep(store, table: Table, pick: Callable[[object, bytes], P | None],
          drop: Callable[[object, list[P]], int], start: bytes = b"",
          chunk: int | None = None, per_write: int | None = None, rest: float | None = None
          ) -> int:
    """Delete every record of `table` from key `start` on that `pick(txn, key)` names.

    Parameters
    ----------
    store : Store
        Whose `read()` snapshots the keys are read in and whose `write(..., erasure=True)`
        deletes (retention frees space, so it may use the erasure reserve); its `sweep_pace`
        gives `chunk`, `per_write` and `rest` where they are None.
    pick : callable
        (read txn, key) -> what `drop` needs to delete that record (the key, or the key and an
        index entry), or None to keep it. It may read the record's value through `txn`.
    drop : callable
        (write txn, picks of one chunk) -> how many records it deleted.
    start : bytes
        The first key to look at (tables whose first keys are indexes start past them).
    chunk : int
        Keys read per snapshot.
    per_write : int
        Records deleted per write transaction at most.
    rest : float
        Sleep after each write, in multiples of its duration (the sweep runs in a thread of
        its own, never the event loop's), so other writers get the lock between two.

    Once `store.stopping` is set, it returns before its next write or snapshot, with what
    it deleted so far.

    Returns
    -------
    int
        Records deleted, as `drop` counted them.
    """
    pace = store.sweep_pace
    chunk = pace.chunk if chunk is None else chunk
    per_write = pace.per_write if per_write is None else per_write
    rest = pace.rest if rest is None else rest
    total = 0
    for picked in scan(store, table, pick, start, chunk):
        for i in range(0, len(picked), per_write):
            if store.stopping.is_set():
                break
            total += _write(store, drop, picked[i:i + per_write], rest)
        if store.stopping.is_set():  # between two writes, or two snapshots
            return total
    return total


def _write(store, drop: Callable[[object, list[P]], int], part: list[P], rest: float) -> int:
    """`drop(txn, part)` in one write transaction (it may use the erasure reserve: retention
    frees space), then a rest of `rest` times its duration."""
    began = time.monotonic()
    dropped = store.write(lambda txn: drop(txn, part), erasure=True)
    store.stopping.wait(rest * (time.monotonic() - began))  # a stop ends the rest too
    return dropped


def scan(store, table: Table, pick: Callable[[object, bytes], P | None], start: bytes = b"",
         chunk: int = CHUNK_KEYS, finish: Callable[[object, list[P]], list] | None = None
         ) -> Iterator[list]:
    """The picks of every record of `table` from key `start` on, one list per read snapshot of
    `chunk` keys (empty lists included: the caller gets a turn every chunk), in key order.

    `pick(txn, key)` names a record (None: skip it); `finish(txn, picks)`, when given, turns a
    chunk's picks into what is yielded in the same snapshot (read their values together). A
    record written after its chunk's snapshot shows as that snapshot had it, or not at all.
    """
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
            if finish is not None and picked:
                picked = finish(txn, picked)
        yield picked
        if seen < chunk:
            return
        start = last + b"\x00"  # the smallest key after `last`
