"""What one flush of the impression log hands its writer: the buffered answers as a few columns.

The event loop builds a `Group` from the answers `ImpressionLog.record` buffered, with no Python
call per answer in the usual case beyond taking the columns apart (`zip(*answers)`): answers
without context are stacked per (bundle, k) into one `Batch` (times, item codes, scores and
cold-start flags as arrays; request ids, user ids and channels each as one joined string); the
rare answers with context travel one by one (`Single`). The writer (`writer.ImpressionWriter`,
in the impressions writer process) does the rest: keyed hashes, record bytes, counters, the
tombstone check, the write. A `Group` pickles to a few arrays and strings (~55 kB for 300
answers of 10 items), and holds nothing of a bundle but its version and the codes shown.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from ..store.keys import SEP_CHAR

__all__ = ["Batch", "Single", "Group", "group_of", "split"]

SEP = SEP_CHAR
"""The column separator: the store's key separator, which no id may hold."""


class Batch(NamedTuple):
    """m answers of one model version with k items each and no context."""

    version: str
    ts: np.ndarray
    """float64[m], when each answer was shown."""
    request_ids: str | list[str]
    """Joined by `SEP` (`split` takes them apart); "" where the request had none (the writer
    draws one)."""
    user_ids: str | list[str]
    channels: str | list[str]
    codes: np.ndarray
    """int64[m, k] stable item codes, position order."""
    scores: np.ndarray
    """float32[m, k]."""
    cold: np.ndarray
    """bool[m] cold-start flags."""
    given: np.ndarray | None = None
    """bool[m]: the caller gave the request id (`repeats.Repeats`); None: none did."""


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
    given: bool = False


class Group(NamedTuple):
    """One flush: its answers, the key their users are hashed under, the keys of the
    `erasure` keyring (to find tombstones; empty: no tombstone check) and how long callers'
    request ids are remembered (`repeats.Repeats`; 0: not at all)."""

    kid: str
    key: bytes
    erasure_keys: tuple[tuple[str, bytes], ...]
    batches: list[Batch]
    singles: list[Single]
    repeat_seconds: float = 0.0

    @property
    def size(self) -> int:
        return sum(len(b.ts) for b in self.batches) + len(self.singles)


def group_of(answers: Sequence[tuple], bundles: dict[int, object],
             codes_of: Callable[[object], np.ndarray], kid: str, key: bytes,
             erasure_keys: tuple[tuple[str, bytes], ...] = (), repeat_seconds: float = 0.0
             ) -> Group:
    """The `Group` of buffered answers (`ImpressionLog.record`'s tuples), whose bundles
    `bundles` holds by id; `codes_of(bundle)`: the int64 codes of its items, in row order."""
    ts, rids, uids, chans, ctxs, refs, rows, scores, cold, given = cols = tuple(zip(*answers))
    batches, singles = [], []
    for (ref, n, n_scores, context), idx in _parts(cols).items():
        bundle = bundles[ref]
        if context or n != n_scores:
            codes = codes_of(bundle)
            singles += [Single(ts[i], rids[i], uids[i], chans[i], ctxs[i], bundle.version,
                               codes[rows[i]], scores[i], cold[i], given[i]) for i in idx]
            continue
        m = len(idx or ts)
        batches.append(Batch(
            bundle.version, np.array(_pick(ts, idx), np.float64), _joined(_pick(rids, idx)),
            _joined(_pick(uids, idx)), _joined(_pick(chans, idx)),
            codes_of(bundle)[np.concatenate(_pick(rows, idx)).reshape(m, n)],
            np.concatenate(_pick(scores, idx)).astype(np.float32, copy=False).reshape(m, n),
            np.array(_pick(cold, idx), bool), np.array(_pick(given, idx), bool)))
    return Group(kid, key, erasure_keys, batches, singles, repeat_seconds)


def _parts(cols: tuple) -> dict[tuple, list[int] | None]:
    """{(bundle id, rows, scores, has context): answer indexes (None: all of them)}: one look
    at each column when every answer is of one kind, the usual case."""
    _, _, _, _, ctxs, refs, rows, scores, _, _ = cols
    lengths = set(map(len, rows)) | set(map(len, scores))
    if len(lengths) == 1 and len(refs_set := set(refs)) == 1 and not any(ctxs):
        return {(refs_set.pop(), lengths.pop(), len(scores[0]), False): None}
    parts: dict[tuple, list[int]] = {}
    for i, kind in enumerate(zip(refs, map(len, rows), map(len, scores), map(bool, ctxs))):
        parts.setdefault(kind, []).append(i)
    return parts


def _pick(col: tuple, idx: list[int] | None) -> Sequence:
    return col if idx is None else [col[i] for i in idx]


def _joined(strings: Sequence[str]) -> str | list[str]:
    """The strings joined by `SEP` (one string pickles in a µs, 300 short ones in ~60 µs); a
    list if one of them holds it."""
    out = SEP.join(strings)
    return out if out.count(SEP) == len(strings) - 1 else list(strings)


def split(column: str | list[str], m: int) -> list[str]:
    """A `Batch` column of m strings as a list (what `_joined` made)."""
    return list(column) if not isinstance(column, str) else column.split(SEP) if m else []
