"""Storage encoding of feature states: sparse records (`kernels.sparse`).

A state has ~800 float64 slots but a typical user touches a few dozen, and every byte written
under fsync costs; records keep only the nonzero slots, exactly (values copied bit for bit),
which shrinks a fresh user's 6.5 KB state ~15x.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernels import feature_layout as fl
from kernels import features as kf
from kernels import sparse

__all__ = ["encode_states", "decode_states", "update_records", "migrate_record"]

CHUNK_USERS = 256
"""Users decoded at a time by `update_records`: their dense states (~1.6 MB) stay in cache and
are reused, where a whole transaction's (thousands of users) would fault in fresh pages."""


def encode_states(states: np.ndarray) -> list[bytes]:
    """One record per row of `states` ([n, size] float64)."""
    return sparse.encode_rows(states)


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


def migrate_record(old: fl.FeatureLayout, new: fl.FeatureLayout, record: bytes) -> bytes:
    """A stored state of layout `old` as a record of layout `new` (`fl.migrate`: slots matched
    by name, new event types start at 0)."""
    state = decode_states(old, [record])[0]
    return encode_states(fl.migrate(old, new, state)[None, :])[0]
