"""A user's live seen-set: every item they had an event on, uncapped, one LMDB record.

Record `profiles  <user>␟seen` (erased with the user's other `<user>␟...` records)::

    byte 0      layout version (1)
    bytes 1-3   reserved (0)
    bytes 4-7   n, uint32 little-endian
    then        codes  int64[n]    item codes (`schema.item_code`), ascending
                mask   uint32[n]   bit i set: an event of type `EVENT_TYPES[i]` on that item;
                                   bit 31 (`UNKNOWN_BIT`): seen before this record existed
                ts     float64[n]  unix seconds of the latest event on that item

It is updated in the same write transaction as the feature state (`merge_updates`), so the
two never disagree. Unlike the state's recent-items window it keeps every item: a record
costs 16 bytes per distinct item the user touched.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..store import join_key
from .schema import EVENT_TYPES

__all__ = ["SeenSet", "LAYOUT_VERSION", "UNKNOWN_BIT", "seen_key", "encode", "decode",
           "merge", "merge_updates", "from_recent"]

LAYOUT_VERSION = 1
UNKNOWN_BIT = np.uint32(1 << 31)
"""Type bit of items whose event type is not known (profiles older than their seen record)."""
_HEADER = 8
assert len(EVENT_TYPES) < 31, "event type bits must leave bit 31 free"


@dataclass(frozen=True, slots=True)
class SeenSet:
    """Items one user has seen: codes ascending, a type bit mask and the latest ts of each."""

    codes: np.ndarray  # int64
    mask: np.ndarray   # uint32
    ts: np.ndarray     # float64

    def __len__(self) -> int:
        return len(self.codes)


EMPTY = SeenSet(np.zeros(0, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float64))


def seen_key(user_id: str) -> bytes:
    return join_key(user_id, "seen")


def encode(seen: SeenSet) -> bytes:
    n = len(seen.codes)
    head = bytes([LAYOUT_VERSION, 0, 0, 0]) + np.uint32(n).astype("<u4").tobytes()
    return b"".join((head, seen.codes.astype("<i8").tobytes(), seen.mask.astype("<u4").tobytes(),
                     seen.ts.astype("<f8").tobytes()))


def decode(raw: bytes) -> SeenSet:
    if not raw or raw[0] != LAYOUT_VERSION:
        raise ValueError(f"seen record: layout version {raw[0] if raw else None}, "
                         f"this server reads {LAYOUT_VERSION}")
    n = int(np.frombuffer(raw, "<u4", 1, 4)[0])
    if len(raw) != _HEADER + 20 * n:
        raise ValueError(f"seen record: {len(raw)} bytes for {n} items")
    codes = np.frombuffer(raw, "<i8", n, _HEADER)
    mask = np.frombuffer(raw, "<u4", n, _HEADER + 8 * n)
    ts = np.frombuffer(raw, "<f8", n, _HEADER + 12 * n)
    return SeenSet(codes, mask, ts)


def merge(old: SeenSet, codes: np.ndarray, mask: np.ndarray, ts: np.ndarray) -> SeenSet:
    """`old` plus events (code, type bits, ts): one entry per code, bits OR-ed, latest ts."""
    all_codes = np.concatenate([old.codes, codes.astype(np.int64)])
    uniq, inv = np.unique(all_codes, return_inverse=True)
    out_mask = np.zeros(len(uniq), np.uint32)
    np.bitwise_or.at(out_mask, inv, np.concatenate([old.mask, mask.astype(np.uint32)]))
    out_ts = np.full(len(uniq), -np.inf)
    np.maximum.at(out_ts, inv, np.concatenate([old.ts, ts.astype(np.float64)]))
    return SeenSet(uniq, out_mask, out_ts)


def merge_updates(get: Callable[[bytes], bytes | None], user_ids: Sequence[str],
                  items: Sequence[int], types: Sequence[int], ts: Sequence[float]
                  ) -> list[tuple[bytes, bytes]]:
    """(key, record) to put for every user with item events among the given event columns
    (`items[i] < 0`: event i has no item; `types[i]` indexes EVENT_TYPES); `get` reads the
    current record within the caller's write transaction."""
    item = np.asarray(items, np.int64)
    has = np.flatnonzero(item >= 0)
    if not len(has):
        return []
    bits = np.left_shift(np.uint32(1), np.asarray(types, np.uint32)[has])
    when = np.asarray(ts, np.float64)[has]
    by_user: dict[str, list[int]] = {}
    for j, i in enumerate(has.tolist()):
        by_user.setdefault(user_ids[i], []).append(j)
    out = []
    for user, idx in by_user.items():
        key = seen_key(user)
        raw = get(key)
        merged = merge(decode(raw) if raw else EMPTY, item[has][idx], bits[idx], when[idx])
        out.append((key, encode(merged)))
    return out


def from_recent(codes: np.ndarray, ts: np.ndarray) -> SeenSet:
    """A seen-set of unknown type from a profile's recent items (profiles written before
    seen records existed)."""
    order = np.argsort(codes, kind="stable")
    return SeenSet(codes[order].astype(np.int64), np.full(len(codes), UNKNOWN_BIT, np.uint32),
                   ts[order].astype(np.float64))
