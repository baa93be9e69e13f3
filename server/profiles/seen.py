"""A user's live seen-set: every item they interacted with, up to a bound.

Interactions are the events of `SEEN_TYPES` (by default the types whose default weight is > 0;
the server adds those its exclusion policy names): a message sent to the user (`email_sent`,
`sms_sent`, `push_sent`), an unsubscribe or a bounce is the shop's or the network's doing, has
weight 0, and training drops it before it builds the bundle's seen-set, so it neither enters
the live one nor moves an item's latest time (an item viewed 40 days ago and emailed today is
not excluded again for another 30 days).

Stored as the seen part of the user's profile state record (`codec.join_state`, under
`<user>␟features`, erased with the user's other `<user>␟...` records; until layout 3 of
`profile_state` it was a record of its own, `<user>␟seen`)::

    byte 0      layout version (1)
    bytes 1-3   reserved (0)
    bytes 4-7   n, uint32 little-endian
    then        codes  int64[n]    item codes (`contract.items.item_code`), ascending
                mask   uint32[n]   bit i set: an event of type `EVENT_TYPES[i]` on that item;
                                   bit 31 (`UNKNOWN_BIT`): seen before this record existed
                ts     float64[n]  unix seconds of the latest event on that item

It is updated with the feature state, in the same record (`merge_updates`), so the two never
disagree. Unlike the state's recent-items window it keeps every item, up to
`Limits.seen_items` (then the latest): a record costs 20 bytes per distinct item the user
touched.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from contract.events import DEFAULT_EVENT_WEIGHTS

from .schema import EVENT_TYPES

__all__ = ["SeenSet", "LAYOUT_VERSION", "SEEN_TYPES", "UNKNOWN_BIT", "encode", "decode", "check",
           "merge", "merge_updates", "from_recent", "type_bits", "type_mask"]

LAYOUT_VERSION = 1
UNKNOWN_BIT = np.uint32(1 << 31)
"""Type bit of items whose event type is not known (profiles older than their seen record)."""
_HEADER = 8
SEEN_TYPES = frozenset(t for t in EVENT_TYPES if DEFAULT_EVENT_WEIGHTS[t] > 0)
"""The event types that enter a live seen-set by default: the user's interactions."""
assert len(EVENT_TYPES) < 31, "event type bits must leave bit 31 free"


@dataclass(slots=True)  # not frozen: a frozen init costs ~5 us, and records are decoded in bulk
class SeenSet:
    """Items one user has seen: codes ascending, a type bit mask and the latest ts of each."""

    codes: np.ndarray  # int64
    mask: np.ndarray   # uint32
    ts: np.ndarray     # float64

    def __len__(self) -> int:
        return len(self.codes)


EMPTY = SeenSet(np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float64))


def encode(seen: SeenSet) -> bytes:
    head = bytes([LAYOUT_VERSION, 0, 0, 0]) + len(seen.codes).to_bytes(4, "little")
    return b"".join((head, seen.codes.astype("<i8", copy=False).tobytes(),
                     seen.mask.astype("<u4", copy=False).tobytes(),
                     seen.ts.astype("<f8", copy=False).tobytes()))


def check(raw: bytes) -> None:
    """Raise ValueError unless `raw` is a seen record of this layout, whole (a record that
    changed on disk, plain, is found here before a batch merges or decodes it)."""
    _check(raw)


def decode(raw: bytes) -> SeenSet:
    if not raw:
        raise ValueError("seen record: empty")
    n = _check(raw)
    codes = np.frombuffer(raw, "<i8", n, _HEADER)
    mask = np.frombuffer(raw, "<u4", n, _HEADER + 8 * n)
    ts = np.frombuffer(raw, "<f8", n, _HEADER + 12 * n)
    return SeenSet(codes, mask, ts)


def merge(old: SeenSet, codes: np.ndarray, mask: np.ndarray, ts: np.ndarray) -> SeenSet:
    """`old` plus events (code, type bits, ts): one entry per code, bits OR-ed, latest ts."""
    return decode(_merge_many([encode(old)], np.zeros(len(codes), np.int64),
                              np.asarray(codes, np.int64), np.asarray(mask, np.uint32),
                              np.asarray(ts, np.float64))[0])


def _merge_many(raws: Sequence[bytes | None], owner: np.ndarray, codes: np.ndarray,
                mask: np.ndarray, ts: np.ndarray, most: int = 0, forever: int = 0) -> list[bytes]:
    """Records raws[j] (None: empty) plus the events with owner j, for every j at once: one
    sort for the whole batch, byte slices per record (no per-record numpy work). `most` > 0:
    a record keeps at most that many items: those with a type bit of `forever` (the types that
    exclude for good), then the latest (`_newest`)."""
    lens, parts = [], ([], [], [])
    for raw in raws:
        n = _check(raw) if raw else 0
        lens.append(n)
        if n:
            parts[0].append(raw[_HEADER:_HEADER + 8 * n])
            parts[1].append(raw[_HEADER + 8 * n:_HEADER + 12 * n])
            parts[2].append(raw[_HEADER + 12 * n:])
    owner = np.concatenate([np.repeat(np.arange(len(raws), dtype=np.int64), lens), owner])
    codes = np.concatenate([np.frombuffer(b"".join(parts[0]), "<i8"), codes])
    mask = np.concatenate([np.frombuffer(b"".join(parts[1]), "<u4"), mask])
    ts = np.concatenate([np.frombuffer(b"".join(parts[2]), "<f8"), ts])
    if len(raws) < 1 << 10:  # one int64 key (codes have 53 bits): timsort runs over the old records
        order = np.argsort((owner << 53) | codes, kind="stable")
    else:
        order = np.lexsort((codes, owner))
    owner, codes, mask, ts = owner[order], codes[order], mask[order], ts[order]
    first = np.flatnonzero(np.concatenate([[True], (codes[1:] != codes[:-1]) | (owner[1:] != owner[:-1])]))
    codes, owner = codes[first], owner[first]
    mask, ts = np.bitwise_or.reduceat(mask, first), np.maximum.reduceat(ts, first)
    bounds = np.searchsorted(owner, np.arange(len(raws) + 1))
    if most and len(codes) > most and np.diff(bounds).max() > most:
        marked = (mask & np.uint32(forever)) != 0 if forever else None
        keep = _newest(bounds, ts, most, marked)
        codes, mask, ts, bounds = codes[keep], mask[keep], ts[keep], np.searchsorted(
            owner[keep], np.arange(len(raws) + 1))
    bounds = bounds.tolist()
    c, m, t = codes.astype("<i8").tobytes(), mask.astype("<u4").tobytes(), ts.astype("<f8").tobytes()
    return [b"".join((bytes([LAYOUT_VERSION, 0, 0, 0]), (b - a).to_bytes(4, "little"),
                      c[8 * a:8 * b], m[4 * a:4 * b], t[8 * a:8 * b]))
            for a, b in zip(bounds[:-1], bounds[1:])]


def _newest(bounds: np.ndarray, ts: np.ndarray, most: int, marked: np.ndarray | None = None
            ) -> np.ndarray:
    """Indices to keep, ascending: every entry of a record of at most `most` entries, the
    `most` latest (by ts) of a longer one (an item id stream that never repeats must not grow a
    record rewritten by every later batch of its user), the `marked` ones (excluded for good: a
    purchase must not come back because many other items were viewed since) before the others."""
    rank = ts if marked is None else np.where(marked, ts + _MARKED, ts)
    keep = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if b - a <= most:
            keep.append(np.arange(a, b))
        else:
            keep.append(a + np.sort(np.argpartition(-rank[a:b], most - 1)[:most]))
    return np.concatenate(keep)


_MARKED = 1e12
"""Added to the time of an entry kept first: after every unmarked time (unix seconds)."""


def _check(raw: bytes) -> int:
    """Items in a record, after checking its version and size."""
    if raw[0] != LAYOUT_VERSION:
        raise ValueError(f"seen record: layout version {raw[0]}, this server reads {LAYOUT_VERSION}")
    n = int.from_bytes(raw[4:8], "little")
    if len(raw) != _HEADER + 20 * n:
        raise ValueError(f"seen record: {len(raw)} bytes for {n} items")
    return n


def type_bits(types) -> int:
    """The seen-set mask bits of `types` (`merge_updates`' `forever`)."""
    return sum(1 << i for i, t in enumerate(EVENT_TYPES) if t in types)


def type_mask(types=SEEN_TYPES) -> np.ndarray:
    """bool[len(EVENT_TYPES)]: which type codes enter a seen-set (`merge_updates`' `kept`)."""
    return np.asarray([t in types for t in EVENT_TYPES], bool)


def merge_updates(current: Mapping[str, bytes | None], user_ids: Sequence[str],
                  items: Sequence[int], types: Sequence[int], ts: Sequence[float],
                  most: int = 0, kept: np.ndarray | None = None, forever: int = 0
                  ) -> dict[str, bytes]:
    """{user: record} for every user with item events among the given event columns
    (`items[i] < 0`: event i has no item; `types[i]` indexes EVENT_TYPES), each merged into
    `current[user]` (their record as stored in the caller's write transaction; None or absent:
    none yet); `most` > 0: at most that many items a record, those with a type bit of
    `forever` (`type_bits`: the types excluded for good) and then the latest kept; `kept`: which type
    codes enter (`type_mask`; None: every type)."""
    item = np.asarray(items, np.int64)
    if kept is not None:
        item = np.where(kept[np.asarray(types, np.int64)], item, -1)
    has = np.flatnonzero(item >= 0)
    if not len(has):
        return {}
    users = [user_ids[i] for i in has.tolist()]
    row = {u: j for j, u in enumerate(dict.fromkeys(users))}
    merged = _merge_many([current.get(u) for u in row],
                         np.fromiter((row[u] for u in users), np.int64, len(users)), item[has],
                         np.left_shift(np.uint32(1), np.asarray(types, np.uint32)[has]),
                         np.asarray(ts, np.float64)[has], most, forever)
    return dict(zip(row, merged))


def from_recent(codes: np.ndarray, ts: np.ndarray) -> SeenSet:
    """A seen-set of unknown type from a profile's recent items (profiles written before
    seen records existed)."""
    order = np.argsort(codes, kind="stable")
    return SeenSet(codes[order].astype(np.int64), np.full(len(codes), UNKNOWN_BIT, np.uint32),
                   ts[order].astype(np.float64))
