"""Accepted events in storage form: keys, raw event bytes and feature-kernel columns.

Everything that follows from the events alone is computed here, before the write transaction:
LMDB has one writer at a time across every server worker, so only what needs stored data
(dedupe, feature states, category codes) runs under its lock. Key layouts are in
`server.store.keys`: the feature state under `feature_key(user)`, the raw event under
`event_key(user, ts, id)`, and its idempotency entry under `dedupe_key(id)` (-> the events
key; it lives exactly as long as its raw event, so erasure and retention find it through the
events table), and, for a batch with listener effects, one outbox entry per such listener
naming its events (`outbox`: `server.profiles.outbox`).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from contract.items import item_code
from protos.tailor.v1 import profile_pb2 as pb

from ..store import keys
from ..store.tokens import user_token
from .events import TrackedEvent
from .schema import CHANNELS, EVENT_TYPES

__all__ = ["EventRecords", "event_type", "event_user", "raw_event", "tracked_event"]

_TYPE = {t: i for i, t in enumerate(EVENT_TYPES)}
_CHANNEL = {c: i for i, c in enumerate(CHANNELS)}
# Hashing an id costs ~10x a cache hit, and popular items recur; codes never change. 2**17
# entries take ~22 MB with ids of ~10 characters.
_item_code = functools.lru_cache(maxsize=1 << 17)(item_code)


def raw_event(ev: TrackedEvent) -> bytes:
    """The stored tailor.v1.Event: the wire message it came from (its unknown fields dropped
    by the transport: `ProfileConverter.to_events`), as validation left it."""
    if ev.source is not None:
        ev.source.channel = ev.channel  # the only field validation may fill in
        return ev.source.SerializeToString()
    return pb.Event(event_id=ev.event_id, user_id=ev.user_id, type=ev.type, channel=ev.channel,
                    campaign_id=ev.campaign_id, item_id=ev.item_id, value=ev.value,
                    timestamp=ev.timestamp, attributes=ev.attributes, request_id=ev.request_id,
                    position=ev.position).SerializeToString()


def tracked_event(raw: bytes) -> TrackedEvent:
    """The event a stored raw event was (`raw_event`), as a listener sees it (an outbox
    replay reads it back)."""
    e = pb.Event.FromString(raw)
    return TrackedEvent(e.event_id, e.user_id, e.type, e.channel, e.campaign_id, e.item_id,
                        e.value, e.timestamp, dict(e.attributes), None, e.request_id, e.position)


def event_type(raw: bytes) -> str:
    """The type of a stored raw event (retention by type decodes only those it must)."""
    return pb.Event.FromString(raw).type


def event_user(raw: bytes) -> str:
    """The user id of a stored raw event (store keys hold only its keyed hash)."""
    return pb.Event.FromString(raw).user_id


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
    outbox: list[tuple[bytes, ...]]
    """Per event, the keys of the outbox entries that name it (its batch's, one per listener
    with an effect for it: `server.profiles.outbox`; mostly `()`)."""
    events: list[TrackedEvent]
    """The events themselves (what a listener joined in the write reads: `ProfileRepository`)."""
    stored_only: list[bool]
    """Per event, whether it is stored only if its user's profile is (`TrackedEvent.stored_only`)."""
    tokens: list[bytes]
    """Per event, its user's token (`tokens.user_token`: looked up once a user a batch, not
    once for each of their keys)."""
    _users: tuple[list[str], list[bytes], list[bytes], list[int]] | None = field(
        default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, events: Sequence[TrackedEvent], categories: Sequence[str | None],
              outbox: Sequence[tuple[bytes, ...]] | None = None) -> EventRecords:
        """Records of valid events (`check_event` passed), with each item's category name and
        each event's outbox entries (None: none).

        Keys are built column by column, as `keys.event_key` / `keys.dedupe_key` build one (each
        event id hashed once, each user's token looked up once: `keys.keyed_event_and_dedupe_keys`).
        """
        ts = [ev.timestamp for ev in events]
        user_ids, ids = [ev.user_id for ev in events], [ev.event_id.encode() for ev in events]
        token_of = {u: user_token(u) for u in dict.fromkeys(user_ids)}
        tokens = [token_of[u] for u in user_ids]
        event_keys, dedupe_keys = keys.keyed_event_and_dedupe_keys(tokens, ts, ids)
        return cls(
            dedupe_keys=dedupe_keys, event_keys=event_keys,
            payloads=[raw_event(ev) for ev in events], user_ids=user_ids,
            type=[_TYPE[ev.type] for ev in events], channel=[_CHANNEL[ev.channel] for ev in events],
            ts=ts, item=[_item_code(ev.item_id) if ev.item_id else -1 for ev in events],
            value=[ev.value for ev in events], categories=list(categories),
            outbox=list(outbox) if outbox is not None else [()] * len(events),
            events=list(events), stored_only=[ev.stored_only for ev in events], tokens=tokens)

    @classmethod
    def concat(cls, parts: Sequence[EventRecords]) -> EventRecords:
        if len(parts) == 1:
            return parts[0]
        return cls(*([x for p in parts for x in getattr(p, name)] for name in _COLUMNS))

    def take(self, index: Sequence[int]) -> EventRecords:
        return EventRecords(*([getattr(self, name)[i] for i in index] for name in _COLUMNS))

    def __len__(self) -> int:
        return len(self.dedupe_keys)

    def users(self) -> tuple[list[str], list[bytes], list[int]]:
        """(the distinct users in order of first event, their feature keys, the row of each
        event's user among them)."""
        distinct, _, fkeys, rows = self._distinct()
        return distinct, fkeys, rows

    def user_tokens(self) -> list[bytes]:
        """The tokens of `users()`' distinct users, in the same order."""
        return self._distinct()[1]

    def _distinct(self) -> tuple[list[str], list[bytes], list[bytes], list[int]]:
        if self._users is None:
            token_of = dict(zip(self.user_ids, self.tokens))  # in order of first event
            row_of = {u: j for j, u in enumerate(token_of)}
            tokens = list(token_of.values())
            self._users = (list(token_of), tokens, keys.feature_keys_of(tokens),
                           [row_of[u] for u in self.user_ids])
        return self._users


_COLUMNS = [f.name for f in fields(EventRecords) if f.init]
