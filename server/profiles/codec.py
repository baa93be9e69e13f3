"""Storage encoding of feature states: sparse records (`kernels.sparse`), and the profile state
record that holds one with the user's seen-set.

A state has ~800 float64 slots but a typical user touches a few dozen, and every byte written
under fsync costs; records keep only the nonzero slots, exactly (values copied bit for bit),
which shrinks a fresh user's 6.5 KB state ~15x.

The record under `keys.feature_key(user)` (layout 3 of `profile_state`) is
``n (uint32 little-endian) | feature state (n bytes, sparse) | seen-set (`seen` record, or
nothing)``: ingestion updates both in the same transaction and Recommend reads both, so one
record means one read, one write (and, encrypted at rest, one seal and one open) where two
were. A state without a seen part belongs to a profile written before seen-sets existed.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

from kernels import feature_layout as fl
from kernels import features as kf
from kernels import sparse

from . import seen

__all__ = ["encode_states", "decode_states", "update_records", "AppendedTypes", "join_state",
           "split_state", "checked_parts", "decode_meta"]

CHUNK_USERS = 256
"""Users decoded at a time by `update_records`: their dense states (~1.6 MB) stay in cache and
are reused, where a whole transaction's (thousands of users) would fault in fresh pages."""


def encode_states(states: np.ndarray) -> list[bytes]:
    """One record per row of `states` ([n, size] float64)."""
    return sparse.encode_rows(states)


def join_state(state: bytes, seen: bytes | None) -> bytes:
    """The profile state record of a feature state record and a seen record (None: none)."""
    return b"".join((len(state).to_bytes(4, "little"), state, seen or b""))


def split_state(raw: bytes) -> tuple[bytes, bytes | None]:
    """(feature state record, seen record or None) of a profile state record."""
    n = int.from_bytes(raw[:4], "little")
    if len(raw) < 4 + n:
        raise ValueError(f"profile state record: {len(raw)} bytes, its state part says {n}")
    return raw[4:4 + n], (raw[4 + n:] if len(raw) > 4 + n else None)


def checked_parts(raw: bytes | None) -> tuple[bytes, bytes | None] | None:
    """`split_state` of a stored record (None: none), its seen part checked (`seen.check`):
    ValueError for a record whose parts are cut or grown (its feature state is checked as it
    is decoded, `decode_states`)."""
    if not raw:
        return None
    parts = split_state(raw)
    if parts[1] is not None:
        seen.check(parts[1])
    return parts


def decode_meta(raw: bytes | None) -> dict | None:
    """The dict of a profile meta record as opened (attributes, consent; None: none)."""
    return json.loads(raw) if raw else None


def decode_states(layout: fl.FeatureLayout, records: Sequence[bytes | None],
                  out: np.ndarray | None = None) -> np.ndarray:
    """A writable [len(records), size] batch (`out` if given); None starts empty (as
    `fl.new_states`). Records of the layout's version 1 are read as version 2 (`fl.upgrade`)."""
    states = np.empty((len(records), layout.size), np.float64) if out is None else out
    missing = [i for i, rec in enumerate(records) if not rec]
    if missing:
        states[missing] = fl.new_states(layout, 1)
    states = fl.upgrade(layout, sparse.decode_rows(records, states))
    if len(records) and not np.all(states[:, fl.FINGERPRINT] == layout.fingerprint):
        raise ValueError("stored feature state was written with another layout")
    return states


def update_records(layout: fl.FeatureLayout, records: Sequence[bytes | None], rows: Sequence[int],
                   events: kf.Events) -> list[bytes]:
    """`records` after event i is applied to the state in records[rows[i]] (None: a new user).

    Events are applied in order per user, `CHUNK_USERS` users at a time. On ValueError nothing
    was returned, so nothing is stored.
    """
    rows = np.asarray(rows, np.int64)
    buf = np.empty((min(len(records), CHUNK_USERS), layout.size), np.float64)
    if len(records) <= CHUNK_USERS:
        return _update_chunk(layout, records, rows, events, buf)
    chunk_of = rows // CHUNK_USERS
    order = np.argsort(chunk_of, kind="stable")  # each user's events keep their order
    bounds = np.searchsorted(chunk_of[order], np.arange(-(-len(records) // CHUNK_USERS) + 1)).tolist()
    out: list[bytes] = []
    for c, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        idx, first = order[lo:hi], c * CHUNK_USERS
        part = records[first:first + CHUNK_USERS]
        out += _update_chunk(layout, part, rows[idx] - first, events.take(idx), buf[:len(part)])
    return out


def _update_chunk(layout, records, rows, events, buf) -> list[bytes]:
    states = decode_states(layout, records, buf)
    kf.update_many(layout, states, rows, events)
    return encode_states(states)


class AppendedTypes:
    """Moves stored states of layout `old` to layout `new`, which is `old` with event types
    appended (nothing else changed): every old slot has one new slot, in the same order, and
    the new ones start at 0. A sparse record (`kernels.sparse`) moves without being decoded:
    its slot indices are renumbered and the fingerprint replaced (~10 us; a store migrates
    every record at open). Records of format 1 go the dense way (`decode_states` upgrades
    them first). Values are kept bit for bit; `fl.migrate` gives the same state up to the
    order of the recent items (it sorts them by time)."""

    def __init__(self, old: fl.FeatureLayout, new: fl.FeatureLayout):
        t = len(old.event_types)
        if new.event_types[:t] != old.event_types or fl.FeatureLayout(
                **{**_fields(new), "event_types": old.event_types,
                   "event_weights": new.event_weights[:t]}) != old:
            raise ValueError("AppendedTypes: `new` must be `old` with event types appended")
        self.old, self.new = old, new
        src = np.full(new.size, -1, np.int64)
        dst, idx = new.views(src), old.views(np.arange(old.size))
        for name in ("header", "money", "category", "hour", "rc_item", "rc_ts", "rc_w"):
            dst[name][...] = idx[name]
        dst["counts"][:t] = idx["counts"]
        dst["decayed"][:, :t] = idx["decayed"]
        dst["rc_amt"][:, :t] = idx["rc_amt"]
        self._src = src
        to_new = np.full(old.size, -1, np.int64)
        to_new[src[src >= 0]] = np.flatnonzero(src >= 0)
        self._to_new = to_new.astype("<u2")
        self._head = (float(fl.FORMAT_VERSION), float(old.fingerprint))

    def record(self, raw: bytes) -> bytes:
        n = int.from_bytes(raw[2:4], "little")
        idx = np.frombuffer(raw, "<u2", n, 4)
        values = np.frombuffer(raw, "<f8", n, 4 + 2 * n).copy()
        if raw[:2] != sparse.MAGIC or len(raw) != 4 + 10 * n or n < 2 or idx[0] != fl.FORMAT \
                or idx[1] != fl.FINGERPRINT or (values[0], values[1]) != self._head:
            return self._dense(raw)
        values[1] = self.new.fingerprint
        return b"".join((raw[:4], self._to_new[idx].tobytes(), values.tobytes()))

    def _dense(self, raw: bytes) -> bytes:
        state = decode_states(self.old, [raw])[0]
        out = np.where(self._src >= 0, state[self._src], 0.0)
        out[fl.FINGERPRINT] = self.new.fingerprint
        return encode_states(out[None, :])[0]


def _fields(layout: fl.FeatureLayout) -> dict:
    return {f.name: getattr(layout, f.name) for f in dataclasses.fields(layout) if f.init}
