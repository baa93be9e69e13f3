"""Replay tokens: the events an erasure deleted that were stamped after it (a client whose
clock runs ahead), kept by their dedupe tokens so a replay of one is refused and a new event
stamped in that window is not (`Tombstones.judged`).

Each token is a `meta` key of its own, `tombstone-late␟<ms>␟<kid>␟<hmac>␟<token>`
(`keys.tombstone_late_key`), empty, written in the erasure's last transaction; the tombstone
names `late_ms`, the time its window has passed by `future_tolerance_s`, after which the
retention sweep drops them (`sweep`) and the tombstone refuses every event of its user up to
the window's end (`late` None, as when they were more than `LATE_KEPT`). Tombstones written
before token keys hold their tokens in the record (`late`, a list): moved to keys, or dropped,
by one walk (`sweep_legacy`).
"""
from __future__ import annotations

import json
import math

from ..store import keys

__all__ = ["LATE_KEPT", "keep", "replayed", "kept_tokens", "sweep", "sweep_legacy"]

LATE_KEPT = 10_000
"""Most event tokens a tombstone keeps of the events it erased stamped after it (a client's
clock ahead), each a `meta` key (`keys.tombstone_late_key`, ~1.2 MB for 10,000) written in the
erasure's last transaction (10,000: 12-250 ms on a loaded 2-core machine; 100,000 took
1.5-3 s of write lock); past it, every event of the user up to the latest of them is refused."""


def keep(meta, txn, key: bytes, record: dict, late: set[bytes] | None, until: float,
         tolerance: float) -> None:
    """Keep the tokens `late` of the tombstone `record` (under `key`, written by the caller)
    in `txn`, until the window (`until`) has passed by `tolerance`; None, or more than
    `LATE_KEPT`: none kept, every event of the user up to `until` counts."""
    if late is None or len(late) > LATE_KEPT:
        record["late"] = None
        return
    record["late_ms"] = ms = math.ceil((until + tolerance) * 1000)
    prefix = keys.tombstone_late_key(ms, *keys.tombstone_parts(key))
    meta.put_many(txn, [(prefix + token, b"") for token in sorted(late)])


def replayed(meta, txn, key: bytes, record: dict, token: bytes) -> bool:
    """Whether the event `token` (stamped in the window after the erasure of `record`, the
    tombstone under `key`) is one the erasure deleted: kept under `late_ms`, or in `late`
    (written before it); neither (none kept: too many, or swept): every event."""
    if "late_ms" in record:
        return meta.get(txn, keys.tombstone_late_key(
            record["late_ms"], *keys.tombstone_parts(key), token)) is not None
    kept = record.get("late")
    return kept is None or token in kept


def kept_tokens(meta, txn, key: bytes, record: dict) -> set[bytes] | None:
    """The tokens the tombstone `record` (under `key`) keeps; None: every event counts."""
    if "late_ms" in record:
        prefix = keys.tombstone_late_key(record["late_ms"], *keys.tombstone_parts(key))
        return {k[len(prefix):] for k, _ in meta.scan_prefix(txn, prefix)}
    kept = record.get("late")
    return None if kept is None else {t.encode() for t in kept}


def sweep(store, meta, horizon: int, chunk: int) -> int:
    """Drop the token keys whose window passed before `horizon` (ms), `chunk` a write
    transaction, their tombstones then keeping none (`late` None); how many went."""
    def fn(txn) -> int:
        doomed = []
        for k in meta.keys_from(txn, keys.TOMBSTONE_LATE_PREFIX):
            if not k.startswith(keys.TOMBSTONE_LATE_PREFIX) or len(doomed) == chunk:
                break
            if keys.tombstone_late_parts(k)[0] >= horizon:
                break
            doomed.append(k)
        for k in doomed:
            meta.delete(txn, k)
        for ms, kid, dig in {keys.tombstone_late_parts(k)[:3] for k in doomed}:
            raw = meta.get(txn, tkey := keys.tombstone_key(kid, dig))
            record = json.loads(raw) if raw is not None else {}
            if record.get("late_ms") == ms:  # (moved on by a later erasure: not these)
                del record["late_ms"]
                record["late"] = None
                meta.put(txn, tkey, json.dumps(record).encode())
        return len(doomed)
    swept = 0
    while n := store.write(fn, erasure=True):
        swept += n
    return swept


def sweep_legacy(store, meta, horizon: int, chunk: int, tolerance: float) -> int:
    """Tombstones written before token keys hold their tokens in their record (`late`, a
    list, up to ~34 KB of JSON, read whole by every late-event lookup of the user), which
    `sweep` never reaches: drop the list of a record whose window has passed by `tolerance`
    (`horizon`, ms), move one still running into token keys (swept in their turn). One walk
    of the records, `chunk` a write transaction, once for good (`keys.TOMBSTONE_LATE_LEGACY`:
    where it is); how many tokens were dropped."""
    def fn(txn) -> int | None:
        mark = meta.get(txn, keys.TOMBSTONE_LATE_LEGACY)
        if mark == keys.TOMBSTONE_LATE_LEGACY_DONE:
            return None
        batch = []
        for k, raw in meta.items(txn, keys.TOMBSTONE_PREFIX if mark is None else mark + b"\0"):
            if not k.startswith(keys.TOMBSTONE_PREFIX) or len(batch) == chunk:
                break
            batch.append((k, raw))
        dropped = sum(_unlist(meta, txn, k, json.loads(raw), horizon, tolerance)
                      for k, raw in batch)
        meta.put(txn, keys.TOMBSTONE_LATE_LEGACY,
                 batch[-1][0] if len(batch) == chunk else keys.TOMBSTONE_LATE_LEGACY_DONE)
        return dropped
    swept = 0
    while (n := store.write(fn, erasure=True)) is not None:
        swept += n
    return swept


def _unlist(meta, txn, key: bytes, record: dict, horizon: int, tolerance: float) -> int:
    """`sweep_legacy` for the tombstone `record` under `key`: how many tokens went."""
    kept = record.get("late")
    if not isinstance(kept, list):
        return 0
    del record["late"]
    ms = math.ceil((record.get("events_until", record["at"]) + tolerance) * 1000)
    if ms < horizon:  # (the key sweep's test: `late_ms` below the horizon)
        record["late"] = None
    else:
        record["late_ms"] = ms
        prefix = keys.tombstone_late_key(ms, *keys.tombstone_parts(key))
        meta.put_many(txn, [(prefix + t.encode(), b"") for t in kept])
    meta.put(txn, key, json.dumps(record).encode())
    return len(kept) if record.get("late", ()) is None else 0
