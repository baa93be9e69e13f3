"""Shared types of the attribution kernels: encoded `Paths` and their parsers, the `Attribution`
result, and the lazy handle on the `_attribution` Cython extension.

`kernels.attribution` re-exports the public names; `kernels.markov` and `kernels.shapley` import
them from here, so no module imports `kernels.attribution` back.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Paths", "Attribution", "parse_channelattribution"]


def _native():
    from . import _attribution
    return _attribution


# ------------------------------------------------------------------------------------------------
# Encoded paths and parsing


@dataclass(frozen=True)
class Paths:
    """Aggregated paths: channel vocabulary + CSR of channel ids + per-path counts.

    Attributes
    ----------
    channels : tuple of str
        Channel names; ``indices`` refer to positions in it.
    indptr : int64 array, n_paths + 1
    indices : int32 array, nnz
    conversions, value, nulls : float64 arrays, n_paths
    timestamps : float64 array, nnz, or None
        Touch times in seconds (time-decay only).
    """

    channels: tuple
    indptr: np.ndarray
    indices: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    nulls: np.ndarray
    timestamps: np.ndarray | None = None

    @property
    def n_paths(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def path(self, i: int) -> list[str]:
        return [self.channels[c] for c in self.indices[self.indptr[i]:self.indptr[i + 1]]]

    @classmethod
    def from_sequences(cls, paths: Sequence[Sequence[str] | str], conversions=None, value=None,
                       nulls=None, timestamps=None, channels: Sequence[str] | None = None,
                       sep: str = ">") -> Paths:
        """Encode channel sequences (lists of names or ``"a > b > c"`` strings).

        ``conversions`` defaults to 1 per path, ``value`` and ``nulls`` to 0. ``timestamps`` is
        one sequence of numbers per path, aligned with its touches.
        """
        n = len(paths)
        if all(isinstance(p, str) for p in paths):  # one split over all paths: fast parsing
            lengths = np.fromiter((p.count(sep) + 1 for p in paths), dtype=np.int64, count=n)
            tokens = list(map(str.strip, sep.join(paths).split(sep))) if n else []
        else:
            seqs = [p.split(sep) if isinstance(p, str) else list(p) for p in paths]
            lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=n)
            tokens = [str(t).strip() for s in seqs for t in s]
        names = dict.fromkeys(channels or ())
        names.update(dict.fromkeys(tokens))  # first-seen order, at C speed
        vocab = {c: i for i, c in enumerate(names)}
        ids = np.fromiter(map(vocab.__getitem__, tokens), dtype=np.int32, count=len(tokens))
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        ts = None
        if timestamps is not None:
            ts = np.asarray([float(t) for s in timestamps for t in s], dtype=np.float64)
            if len(timestamps) != n or len(ts) != len(tokens):
                raise ValueError("timestamps: need one timestamp per touch of every path")
        return cls(tuple(vocab), indptr, ids, _per_path(conversions, n, 1.0, "conversions"),
                   _per_path(value, n, 0.0, "value"), _per_path(nulls, n, 0.0, "nulls"), ts)

    def subset(self, rows: np.ndarray) -> Paths:
        """The paths at ``rows`` (same vocabulary)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        touch = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        ts = None if self.timestamps is None else self.timestamps[touch]
        return Paths(self.channels, indptr, self.indices[touch], self.conversions[rows],
                     self.value[rows], self.nulls[rows], ts)


def _per_path(x, n: int, default: float, name: str) -> np.ndarray:
    if x is None:
        return np.full(n, default, dtype=np.float64)
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected {n} values (one per path), got shape {arr.shape}")
    return arr


def parse_channelattribution(lines: Iterable[str], sep: str = ";") -> Paths:
    """Parse ChannelAttribution's aggregated format.

    Each line is ``path;total_conversions;total_conversion_value;total_null`` with ``" > "``
    between channels; value and null columns may be absent, a fifth is refused (ValueError
    naming the line: it was ignored, whatever it held). A first line none of whose counts is a
    number is a header, and skipped.
    """
    rows = [line.strip().split(sep) for line in lines]
    numbered = [(i, r) for i, r in enumerate(rows, 1) if r != [""]]
    if numbered and numbered[0][0] == 1 and _header(numbered[0][1]):
        numbered = numbered[1:]
    for lineno, parts in numbered:
        if len(parts) > 4:
            raise ValueError(f"line {lineno}: {len(parts)} columns, at most 4 "
                             f"(path{sep}conversions{sep}value{sep}nulls)")
    try:  # fast path: every row has the same numeric columns
        arr = np.array([r[1:4] for _, r in numbered], dtype=np.float64).reshape(len(numbered), -1)
    except ValueError:
        arr = None
    if arr is None or not 1 <= arr.shape[1] <= 3:
        arr = _parse_rows_slowly(numbered, sep)
    arr = np.hstack([arr, np.zeros((len(arr), 3 - arr.shape[1]))])
    paths = [r[0] for _, r in numbered]
    return Paths.from_sequences(paths, arr[:, 0], arr[:, 1], arr[:, 2])


_NAME = re.compile(r"[A-Za-z_].*")


def _header(fields: list[str]) -> bool:
    """Whether a first row is a header: its second field is a name (it starts with a letter or
    "_" and is not a number such as "nan") and none of its counts is a number; a data row with
    a mistyped ("1O", "l0" beside numeric counts), missing or NaN count is reported, not skipped."""
    if len(fields) < 2 or not _NAME.fullmatch(fields[1].strip()):
        return False
    return not any(_is_number(f) for f in fields[1:])


def _is_number(field: str) -> bool:
    """"nan", "inf", "Infinity" are numbers here, not names."""
    try:
        float(field)
    except ValueError:
        return False
    return True


def _parse_rows_slowly(numbered, sep) -> np.ndarray:
    """Row by row, so that a bad line is reported with its number."""
    out = np.zeros((len(numbered), 3))
    for k, (lineno, parts) in enumerate(numbered):
        if len(parts) < 2:
            raise ValueError(f"line {lineno}: expected path{sep}conversions[{sep}value{sep}nulls]")
        try:
            nums = [float(x) for x in parts[1:4]]
        except ValueError:
            line = sep.join(parts)
            raise ValueError(f"line {lineno}: counts must be numbers: {line!r}") from None
        out[k, :len(nums)] = nums
    return out


# ------------------------------------------------------------------------------------------------
# Results


@dataclass
class Attribution:
    """Per-channel credits.

    Attributes
    ----------
    model : str
    channels : tuple of str
    conversions, value : float64 arrays, n_channels
        Credited conversions and conversion value per channel.
    touch_share : float64 array, nnz, or None
        On request: the fraction of its path's conversions credited to each touch.
    details : dict
        Model extras (removal effects, transition matrix, ranks, standard errors...).
    """

    model: str
    channels: tuple
    conversions: np.ndarray
    value: np.ndarray
    touch_share: np.ndarray | None = None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {c: {"conversions": float(self.conversions[i]), "value": float(self.value[i])}
                for i, c in enumerate(self.channels)}
