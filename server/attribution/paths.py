"""Paths of a request (or of a stream of requests), checked and encoded for the kernels."""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from kernels.attribution import Paths, parse_channelattribution

from ..errors import InvalidArgument

__all__ = ["PathSet", "MAX_TOUCHES", "concat_paths"]

MAX_TOUCHES = 50_000_000
"""Most touches one request (or stream) may hold: about 1 GB of encoded paths."""
MAX_COUNT = 1e15
"""Largest conversions, value or nulls of one path (`Limits.attribution_count_max`)."""
_LINE = re.compile(r"^line (\d+): (.*)$", re.S)


class PathSet:
    """Accumulates paths in arrival order; `build` returns one `Paths` for the kernels.

    Attributes
    ----------
    n_paths, n_touches : int
    untimed : int or None
        Index of the first path without timestamps (TIME_DECAY needs them on every path).
    """

    def __init__(self, max_touches: int = MAX_TOUCHES, max_count: float = MAX_COUNT):
        self.max_touches, self.max_count = max_touches, max_count
        self.n_paths = self.n_touches = self._rows = 0
        self.untimed: int | None = None
        self._chunks: list[Paths] = []

    def add_sequences(self, seqs: Sequence[Sequence[str]], conversions: Sequence[float],
                      value: Sequence[float], nulls: Sequence[float],
                      timestamps: Sequence[Sequence[float]]) -> None:
        """Channel sequences with their counts; `timestamps[i]` is empty or one per touch."""
        for i, seq in enumerate(seqs):
            if not seq:
                raise InvalidArgument(f"paths[{self.n_paths + i}]", "empty path: give channels "
                                      "or path (\"a > b > c\")")
            if "" in seq:
                raise InvalidArgument(f"paths[{self.n_paths + i}]", "empty channel name")
            if timestamps[i] and len(timestamps[i]) != len(seq):
                raise InvalidArgument(f"paths[{self.n_paths + i}].timestamps", f"{len(seq)} "
                                      f"touches but {len(timestamps[i])} timestamps")
            if timestamps[i] and not np.isfinite(timestamps[i]).all():
                raise InvalidArgument(f"paths[{self.n_paths + i}].timestamps", "must be finite")
        if not seqs:
            return
        for name, column in (("conversions", conversions), ("value", value), ("nulls", nulls)):
            self._check_counts(name, np.asarray(column, dtype=np.float64),
                               lambda i: f"paths[{self.n_paths + i}]")
        untimed = [i for i, ts in enumerate(timestamps) if not ts]
        paths = Paths.from_sequences(seqs, conversions, value, nulls,
                                     timestamps=None if untimed else timestamps)
        self._add(paths, untimed[0] if untimed else None)

    def _check_counts(self, name: str, column: np.ndarray, where) -> None:
        """Each path's count is in 0..max_count (the error names the first bad path, `where(i)`
        for the i-th path of the message)."""
        bad = np.flatnonzero(~((column >= 0) & (column <= self.max_count)))  # NaN too
        if bad.size:
            i = int(bad[0])
            raise InvalidArgument(f"{where(i)}.{name}", f"must be finite and in "
                                  f"0..{self.max_count:g}, got {float(column[i])}")

    def add_rows(self, rows: Sequence[str]) -> None:
        """ChannelAttribution rows, ``a > b > c;conversions;value;nulls`` (no timestamps)."""
        if not rows:
            return
        try:
            paths = parse_channelattribution(rows)
        except ValueError as err:
            m = _LINE.match(str(err))
            if not m:
                raise InvalidArgument("channelattribution_rows", str(err)) from None
            row = self._rows + int(m.group(1)) - 1
            raise InvalidArgument(f"channelattribution_rows[{row}]", m.group(2)) from None
        if "" in paths.channels:
            raise InvalidArgument("channelattribution_rows", "empty channel name in a path")
        lines = [j for j, line in enumerate(rows) if line.strip()]
        lines = lines[len(lines) - paths.n_paths:]  # without the header, if one was skipped
        for name in ("conversions", "value", "nulls"):
            self._check_counts(name, getattr(paths, name),
                               lambda i: f"channelattribution_rows[{self._rows + lines[i]}]")
        self._rows += len(rows)
        self._add(paths, 0)

    def _add(self, paths: Paths, untimed: int | None) -> None:
        if self.n_touches + len(paths.indices) > self.max_touches:
            raise InvalidArgument("paths", f"more than {self.max_touches} touches in one request")
        if untimed is not None and self.untimed is None:
            self.untimed = self.n_paths + untimed
        self._chunks.append(paths)
        self.n_paths += paths.n_paths
        self.n_touches += len(paths.indices)

    def build(self) -> Paths:
        """All paths as one `Paths` (timestamps only if every path has them)."""
        if not self._chunks:
            return Paths.from_sequences([])
        return concat_paths(self._chunks, timed=self.untimed is None)


def concat_paths(chunks: Sequence[Paths], timed: bool = True) -> Paths:
    """One `Paths` holding every chunk's paths in order, over the union of their vocabularies."""
    if len(chunks) == 1 and (timed or chunks[0].timestamps is None):
        return chunks[0]
    vocab: dict[str, int] = {}
    for chunk in chunks:
        for name in chunk.channels:
            vocab.setdefault(name, len(vocab))
    indices = [np.fromiter((vocab[c] for c in ch.channels), dtype=np.int32,
                           count=ch.n_channels)[ch.indices] for ch in chunks]
    lengths = np.concatenate([ch.lengths for ch in chunks])
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    stamps = None
    if timed and all(ch.timestamps is not None for ch in chunks):
        stamps = np.concatenate([ch.timestamps for ch in chunks])
    return Paths(tuple(vocab), indptr, np.concatenate(indices),
                 *(np.concatenate([getattr(ch, f) for ch in chunks])
                   for f in ("conversions", "value", "nulls")), stamps)
