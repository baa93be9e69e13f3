"""Profile records in the store (key conventions: `records`); each write is one transaction."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernels import feature_layout as fl
from kernels import features as kf

from ..store import TABLES, Store, delete_prefix, join_key, scan_prefix
from .codec import decode_states, update_records
from .events import TrackedEvent
from .records import DEDUPE_PREFIX, EventRecords, feature_key

__all__ = ["ProfileRepository", "IngestResult"]


@dataclass
class IngestResult:
    accepted: list[int]
    duplicates: list[int]


class ProfileRepository:
    def __init__(self, store: Store, layout: fl.FeatureLayout):
        self.store = store
        self.layout = layout
        self._dbs = {t: store.db(t) for t in TABLES}
        self.erasers: list = []
        """Extra `fn(txn, user_id) -> records removed` run inside the erasure transaction, for
        records that mention a user outside a `<user>␟...` key (secondary indexes)."""

    # -- writes ----------------------------------------------------------------------------
    def ingest(self, events: Sequence[TrackedEvent], categories: Sequence[str | None]) -> IngestResult:
        """Store valid events in one transaction: dedupe, raw events, feature updates."""
        return self.write_events(EventRecords.build(events, categories))

    def write_events(self, records: EventRecords) -> IngestResult:
        """Store prepared records in one transaction; indices refer to `records`."""
        records.users()  # outside the write lock
        return self.store.write(lambda txn: self._ingest(txn, records))

    def _ingest(self, txn, records: EventRecords) -> IngestResult:
        d = self._dbs
        fresh, dups = _fresh(records.dedupe_keys, txn.cursor(db=d["dedupe"]).getmulti(records.dedupe_keys))
        if not fresh:
            return IngestResult([], dups)
        new = records if not dups else records.take(fresh)
        fkeys, rows = new.users()
        get = txn.cursor(db=d["profiles"]).get  # one lookup per key (cheaper than getmulti's tuples)
        batch = kf.Events(type=new.type, channel=new.channel, ts=new.ts, item=new.item,
                          category=self._category_codes(txn, new.categories), value=new.value)
        states = update_records(self.layout, [get(k) for k in fkeys], rows, batch)
        txn.cursor(db=d["profiles"]).putmulti(list(zip(fkeys, states)))
        txn.cursor(db=d["events"]).putmulti(list(zip(new.event_keys, new.payloads)))
        txn.cursor(db=d["dedupe"]).putmulti(list(zip(new.dedupe_keys, new.event_keys)))
        return IngestResult(fresh, dups)

    def _category_codes(self, txn, names: Sequence[str | None]) -> list[int]:
        """Stable codes per category name, assigned on first sight (-1 past the layout's K)."""
        if not any(names):
            return [-1] * len(names)
        db, codes, cache = self._dbs["meta"], [], {}
        for name in names:
            if not name:
                codes.append(-1)
                continue
            if name not in cache:
                raw = txn.get(join_key("category", name), db=db)
                if raw is None:
                    n = int(txn.get(b"category-count", db=db) or b"0")
                    code = n if n < self.layout.n_categories else -1
                    if code >= 0:
                        txn.put(join_key("category", name), str(code).encode(), db=db)
                        txn.put(b"category-count", str(n + 1).encode(), db=db)
                    cache[name] = code
                else:
                    cache[name] = int(raw)
            codes.append(cache[name])
        return codes

    def update_meta(self, user_id: str, change) -> dict:
        """Read-modify-write the user's meta record with `change(meta)` in one transaction."""
        def fn(txn):
            key, db = join_key(user_id, "meta"), self._dbs["profiles"]
            raw = txn.get(key, db=db)
            meta = json.loads(raw) if raw else {"attributes": {}, "consent": {}, "created_at": time.time()}
            change(meta)
            meta["updated_at"] = time.time()
            txn.put(key, json.dumps(meta, sort_keys=True).encode(), db=db)
            return meta
        return self.store.write(fn)

    def delete_user(self, user_id: str) -> int:
        """Erase every record keyed by the user, in every table, and its events' dedupe keys."""
        prefix = join_key(user_id, "")

        def fn(txn):
            dedupe, removed = self._dbs["dedupe"], 0
            for key, _ in scan_prefix(txn, self._dbs["events"], prefix):
                removed += txn.delete(DEDUPE_PREFIX + key.rsplit(b"\x1f", 1)[1], db=dedupe)
            for eraser in self.erasers:
                removed += eraser(txn, user_id)
            for table, db in self._dbs.items():
                if table != "dedupe":
                    removed += delete_prefix(txn, db, prefix)
            return removed
        return self.store.write(fn)

    def drop_events_before(self, cutoff: float, batch: int = 10_000) -> int:
        """Retention: delete raw events (and their dedupe keys) older than `cutoff`."""
        total = 0
        while True:
            n = self.store.write(lambda txn: self._drop_some(txn, cutoff, batch))
            total += n
            if n < batch:
                return total

    def _drop_some(self, txn, cutoff: float, batch: int) -> int:
        d, limit = self._dbs, f"{max(int(cutoff * 1000), 0):016d}".encode()
        doomed = []
        for key in txn.cursor(db=d["events"]).iternext(values=False):
            user, ts, event_id = key.split(b"\x1f")
            if ts < limit:
                doomed.append((key, user, event_id))
                if len(doomed) >= batch:
                    break
        for key, _user, event_id in doomed:
            txn.delete(key, db=d["events"])
            txn.delete(DEDUPE_PREFIX + event_id, db=d["dedupe"])
        return len(doomed)

    # -- reads -----------------------------------------------------------------------------
    def read(self, user_id: str, max_events: int = 0):
        """(state or None, meta dict or None, [raw event bytes newest first]) in one snapshot."""
        d = self._dbs
        with self.store.read() as txn:
            state = txn.get(feature_key(user_id), db=d["profiles"])
            meta = txn.get(join_key(user_id, "meta"), db=d["profiles"])
            events = [v for _, v in scan_prefix(txn, d["events"], join_key(user_id, ""))]
        events.reverse()  # newest first
        if max_events:
            events = events[:max_events]
        return (decode_states(self.layout, [state])[0] if state else None,
                json.loads(meta) if meta else None, events)

    def category_names(self) -> dict[int, str]:
        """Every assigned category code with its name (`_category_codes` assigns them)."""
        prefix = join_key("category", "")
        with self.store.read() as txn:
            found = scan_prefix(txn, self._dbs["meta"], prefix)
        return {int(code): key[len(prefix):].decode() for key, code in found}

    def states(self, user_ids: Sequence[str]) -> list[np.ndarray | None]:
        """Feature states for many users in one snapshot (None where there is none)."""
        db = self._dbs["profiles"]
        with self.store.read() as txn:
            raws = [txn.get(feature_key(u), db=db) for u in user_ids]
        found = [i for i, r in enumerate(raws) if r]
        decoded = decode_states(self.layout, [raws[i] for i in found])
        out: list[np.ndarray | None] = [None] * len(raws)
        for j, i in enumerate(found):
            out[i] = decoded[j]
        return out

    def export(self, start: float = 0.0, end: float = 0.0):
        """Yield raw event bytes with start <= ts <= end (0 = unbounded), user by user."""
        lo = f"{max(int(start * 1000), 0):016d}".encode()
        hi = f"{int(end * 1000):016d}".encode() if end else b"9" * 16
        with self.store.read() as txn:
            for key, value in txn.cursor(db=self._dbs["events"]):
                ts = key.split(b"\x1f")[1]
                if lo <= ts <= hi:
                    yield value


def _fresh(keys: list[bytes], known: list[tuple[bytes, bytes]]) -> tuple[list[int], list[int]]:
    """(indices of first sightings of unknown keys, indices of the rest), both ascending."""
    if not known and len(set(keys)) == len(keys):
        return list(range(len(keys))), []
    fresh, dups, seen = [], [], {k for k, _ in known}
    for i, key in enumerate(keys):
        if key in seen:
            dups.append(i)
        else:
            seen.add(key)
            fresh.append(i)
    return fresh, dups
