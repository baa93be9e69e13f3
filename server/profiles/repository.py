"""Profile records in the store. Key conventions (every record keyed by a user starts with
`join_key(user_id, ...)`, so erasure finds them all by prefix in every table):

    profiles   <user>␟features                 feature state (kernels.features bytes)
    profiles   <user>␟meta                     JSON: attributes, consent, created/updated
    events     <user>␟<ts ms, 16 digits>␟<id>  raw event (tailor.v1.Event bytes)
    dedupe     e␟<event id>                    -> events key (idempotency); it lives exactly as
                                               long as its raw event, so erasure and retention
                                               find it through the events table
    meta       category␟<name>                 stable category code for feature affinities
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernels import features as kf
from protos.tailor.v1 import profile_pb2 as pb

from ..store import TABLES, Store, delete_prefix, join_key, scan_prefix
from .codec import decode_states, encode_states
from .events import TrackedEvent
from .schema import CHANNELS, EVENT_TYPES, item_code

__all__ = ["ProfileRepository", "IngestResult", "event_key"]

_TYPE = {t: i for i, t in enumerate(EVENT_TYPES)}
_CHANNEL = {c: i for i, c in enumerate(CHANNELS)}


def event_key(user_id: str, ts: float, event_id: str) -> bytes:
    return join_key(user_id, f"{max(int(ts * 1000), 0):016d}", event_id)


def feature_key(user_id: str) -> bytes:
    return user_id.encode() + b"\x1ffeatures"


@dataclass
class IngestResult:
    accepted: list[int]
    duplicates: list[int]


def _to_pb(ev: TrackedEvent) -> bytes:
    if ev.source is not None:
        ev.source.channel = ev.channel  # the only field validation may fill in
        return ev.source.SerializeToString()
    return pb.Event(event_id=ev.event_id, user_id=ev.user_id, type=ev.type, channel=ev.channel,
                    campaign_id=ev.campaign_id, item_id=ev.item_id, value=ev.value,
                    timestamp=ev.timestamp, attributes=ev.attributes).SerializeToString()


class ProfileRepository:
    def __init__(self, store: Store, layout: kf.FeatureLayout):
        self.store = store
        self.layout = layout
        self._dbs = {t: store.db(t) for t in TABLES}
        self.erasers: list = []
        """Extra `fn(txn, user_id) -> records removed` run inside the erasure transaction, for
        records that mention a user outside a `<user>␟...` key (secondary indexes)."""

    # -- writes ----------------------------------------------------------------------------
    def ingest(self, events: Sequence[TrackedEvent], categories: Sequence[str | None]) -> IngestResult:
        """Store valid events in one transaction: dedupe, raw events, feature updates."""
        return self.store.write(lambda txn: self._ingest(txn, events, categories))

    def _ingest(self, txn, events, categories) -> IngestResult:
        d = self._dbs
        ids = [ev.event_id.encode() for ev in events]
        known = {k for k, _ in txn.cursor(db=d["dedupe"]).getmulti([b"e\x1f" + i for i in ids])}
        fresh, dups, seen = [], [], set()
        for i, eid in enumerate(ids):
            if eid in seen or b"e\x1f" + eid in known:
                dups.append(i)
            else:
                seen.add(eid)
                fresh.append(i)
        if not fresh:
            return IngestResult([], dups)
        evs = [events[i] for i in fresh]
        users = list(dict.fromkeys(e.user_id for e in evs))
        row_of = {u: j for j, u in enumerate(users)}
        fkeys = [feature_key(u) for u in users]
        stored = dict(txn.cursor(db=d["profiles"]).getmulti(fkeys))
        states = decode_states(self.layout, [stored.get(k) for k in fkeys])
        batch = kf.Events(
            type=[_TYPE[e.type] for e in evs], channel=[_CHANNEL[e.channel] for e in evs],
            ts=[e.timestamp for e in evs], item=[item_code(e.item_id) if e.item_id else -1 for e in evs],
            category=self._category_codes(txn, [categories[i] for i in fresh]), value=[e.value for e in evs])
        kf.update_many(self.layout, states, [row_of[e.user_id] for e in evs], batch)
        txn.cursor(db=d["profiles"]).putmulti(list(zip(fkeys, encode_states(states))))
        raw_rows, dedupe_rows = [], []
        for ev, i in zip(evs, fresh):
            key = b"%s\x1f%016d\x1f%s" % (ev.user_id.encode(), max(int(ev.timestamp * 1000), 0), ids[i])
            raw_rows.append((key, _to_pb(ev)))
            dedupe_rows.append((b"e\x1f" + ids[i], key))
        txn.cursor(db=d["events"]).putmulti(raw_rows)
        txn.cursor(db=d["dedupe"]).putmulti(dedupe_rows)
        return IngestResult(fresh, dups)

    def _category_codes(self, txn, names: Sequence[str | None]) -> list[int]:
        """Stable codes per category name, assigned on first sight (-1 past the layout's K)."""
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
                removed += txn.delete(b"e\x1f" + key.rsplit(b"\x1f", 1)[1], db=dedupe)
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
            txn.delete(b"e\x1f" + event_id, db=d["dedupe"])
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
