"""Accepted events in storage form: keys, raw event bytes and feature-kernel columns.

Everything that follows from the events alone is computed here, before the write transaction:
LMDB has one writer at a time across every server worker, so only what needs stored data
(dedupe, feature states, category codes) runs under its lock. Key conventions (every record
keyed by a user starts with `join_key(user_id, ...)`, so erasure finds them all by prefix):

    profiles   <user>␟features                 feature state (kernels.sparse record)
    profiles   <user>␟meta                     JSON: attributes, consent, created/updated
    events     <user>␟<ts ms, 16 digits>␟<id>  raw event (tailor.v1.Event bytes)
    dedupe     e␟<event id>                    -> events key (idempotency); it lives exactly as
                                               long as its raw event, so erasure and retention
                                               find it through the events table
    meta       category␟<name>                 stable category code for feature affinities
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from protos.tailor.v1 import profile_pb2 as pb

from .events import TrackedEvent
from .schema import CHANNELS, EVENT_TYPES, item_code

__all__ = ["EventRecords", "event_key", "feature_key", "dedupe_key", "DEDUPE_PREFIX"]

DEDUPE_PREFIX = b"e\x1f"
_EVENT_KEY = b"%s\x1f%016d\x1f%s"  # user, ts in ms, event id
_FEATURES = b"\x1ffeatures"
_TYPE = {t: i for i, t in enumerate(EVENT_TYPES)}
_CHANNEL = {c: i for i, c in enumerate(CHANNELS)}
# Hashing an id costs ~10x a cache hit, and popular items recur; codes never change. 2**17
# entries take ~22 MB with ids of ~10 characters.
_item_code = functools.lru_cache(maxsize=1 << 17)(item_code)


def event_key(user_id: str, ts: float, event_id: str) -> bytes:
    return _EVENT_KEY % (user_id.encode(), max(int(ts * 1000), 0), event_id.encode())


def feature_key(user_id: str) -> bytes:
    return user_id.encode() + _FEATURES


def dedupe_key(event_id: str) -> bytes:
    return DEDUPE_PREFIX + event_id.encode()


def raw_event(ev: TrackedEvent) -> bytes:
    """The stored tailor.v1.Event: the wire message it came from, as validation left it."""
    if ev.source is not None:
        ev.source.channel = ev.channel  # the only field validation may fill in
        return ev.source.SerializeToString()
    return pb.Event(event_id=ev.event_id, user_id=ev.user_id, type=ev.type, channel=ev.channel,
                    campaign_id=ev.campaign_id, item_id=ev.item_id, value=ev.value,
                    timestamp=ev.timestamp, attributes=ev.attributes).SerializeToString()


@dataclass(slots=True)
class EventRecords:
    """Column i of every field belongs to event i (in arrival order)."""

    dedupe_keys: list[bytes]
    event_keys: list[bytes]
    payloads: list[bytes]
    user_ids: list[str]
    type: list[int]
    channel: list[int]
    ts: list[float]
    item: list[int]
    value: list[float]
    categories: list[str | None]
    _users: tuple[list[bytes], list[int]] | None = field(default=None, init=False, repr=False,
                                                          compare=False)

    @classmethod
    def build(cls, events: Sequence[TrackedEvent], categories: Sequence[str | None]) -> EventRecords:
        """Records of valid events (`check_event` passed), with each item's category name.

        Keys are built column by column, as `event_key` / `dedupe_key` build one.
        """
        ts = [ev.timestamp for ev in events]
        # max(int(ts * 1000), 0) for every event at once (both truncate toward zero)
        ms = np.maximum(np.array(ts, np.float64) * 1000, 0).astype(np.int64).tolist()
        user_ids, ids = [ev.user_id for ev in events], [ev.event_id.encode() for ev in events]
        return cls(
            dedupe_keys=[DEDUPE_PREFIX + i for i in ids],
            event_keys=[_EVENT_KEY % (u.encode(), m, i) for u, m, i in zip(user_ids, ms, ids)],
            payloads=[raw_event(ev) for ev in events], user_ids=user_ids,
            type=[_TYPE[ev.type] for ev in events], channel=[_CHANNEL[ev.channel] for ev in events],
            ts=ts, item=[_item_code(ev.item_id) if ev.item_id else -1 for ev in events],
            value=[ev.value for ev in events], categories=list(categories))

    @classmethod
    def concat(cls, parts: Sequence[EventRecords]) -> EventRecords:
        if len(parts) == 1:
            return parts[0]
        return cls(*([x for p in parts for x in getattr(p, name)] for name in _COLUMNS))

    def take(self, index: Sequence[int]) -> EventRecords:
        return EventRecords(*([getattr(self, name)[i] for i in index] for name in _COLUMNS))

    def __len__(self) -> int:
        return len(self.dedupe_keys)

    def users(self) -> tuple[list[bytes], list[int]]:
        """(feature keys of the distinct users, the row of each event's user among them)."""
        if self._users is None:
            distinct = list(dict.fromkeys(self.user_ids))
            row_of = {u: j for j, u in enumerate(distinct)}
            self._users = [u.encode() + _FEATURES for u in distinct], [row_of[u] for u in self.user_ids]
        return self._users


_COLUMNS = [f.name for f in fields(EventRecords) if f.init]
