"""What one flush of the impression log hands its writer: the buffered answers as a few columns.

The event loop builds a `Group` from the answers `ImpressionLog.record` buffered, in one pass
and with no Python call per answer beyond taking the columns apart (`zip(*answers)`): answers
without context are stacked per (bundle, k) into one `Batch` (times, item codes, scores and
cold-start flags as arrays; request ids, user ids and channels as lists), the rare answers with
context travel one by one (`Single`). The writer (`writer.ImpressionWriter`, in the impressions
writer process) does the rest: keyed hashes, record bytes, counters, the tombstone check, the
write. A `Group` pickles to a few arrays and short lists (~45 kB for 300 answers of 10 items),
and holds nothing of a bundle but its version and the codes of the items shown.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Batch", "Single", "Group", "group_of"]


class Batch(NamedTuple):
    """m answers of one model version with k items each and no context."""

    version: str
    ts: np.ndarray
    """float64[m], when each answer was shown."""
    request_ids: list[str]
    """"" where the request had none (the writer draws one)."""
    user_ids: list[str]
    channels: list[str]
    codes: np.ndarray
    """int64[m, k] stable item codes, position order."""
    scores: np.ndarray
    """float32[m, k]."""
    cold: np.ndarray
    """bool[m] cold-start flags."""


class Single(NamedTuple):
    """One answer with context (or rows and scores of different lengths)."""

    ts: float
    request_id: str
    user_id: str
    channel: str
    context: tuple
    """(key, value, key, value, ...)."""
    version: str
    codes: np.ndarray
    scores: np.ndarray
    cold: bool


class Group(NamedTuple):
    """One flush: its answers, the key their users are hashed under, and the keys of the
    `erasure` keyring (to find tombstones; empty: no tombstone check)."""

    kid: str
    key: bytes
    erasure_keys: tuple[tuple[str, bytes], ...]
    batches: list[Batch]
    singles: list[Single]

    @property
    def size(self) -> int:
        return sum(len(b.ts) for b in self.batches) + len(self.singles)


def group_of(answers: Sequence[tuple], bundles: dict[int, object],
             codes_of: Callable[[object], np.ndarray], kid: str, key: bytes,
             erasure_keys: tuple[tuple[str, bytes], ...] = ()) -> Group:
    """The `Group` of buffered answers (`ImpressionLog.record`'s tuples), whose bundles
    `bundles` holds by id; `codes_of(bundle)`: the int64 codes of its items, in row order."""
    ts, rids, uids, chans, ctxs, refs, rows, scores, cold = zip(*answers)
    parts: dict[tuple, list[int]] = {}
    for i, kind in enumerate(zip(refs, map(len, rows), map(len, scores), map(bool, ctxs))):
        parts.setdefault(kind, []).append(i)
    batches, singles = [], []
    for (ref, n, n_scores, context), idx in parts.items():
        bundle = bundles[ref]
        if context or n != n_scores:
            codes = codes_of(bundle)
            singles += [Single(ts[i], rids[i], uids[i], chans[i], ctxs[i], bundle.version,
                               codes[rows[i]], scores[i], cold[i]) for i in idx]
            continue
        def pick(col, idx=idx):
            return list(col) if len(idx) == len(answers) else [col[i] for i in idx]
        batches.append(Batch(bundle.version, np.array(pick(ts), np.float64), pick(rids),
                             pick(uids), pick(chans), codes_of(bundle)[np.stack(pick(rows))],
                             np.stack(pick(scores)).astype(np.float32, copy=False),
                             np.array(pick(cold), bool)))
    return Group(kid, key, erasure_keys, batches, singles)
