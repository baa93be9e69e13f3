"""Bytes that the parts of an AttributeResponse which grow with the paths take on the wire,
counted before those parts are built (protobuf's encoding: one tag byte a field, fields
numbered below 16; varint lengths; packed repeated doubles; a zero scalar omitted).

`per_touch_bytes` is exact for `path_credits` and `stored_paths`, `credits_bytes` for the
channels' `credits` (with ORDERED credits by rank), `matrix_bytes` for `transition_matrix`.
The caller adds them up and checks the total against the message limit.
"""
from __future__ import annotations

import numpy as np

from kernels.attribution import Attribution, Paths

__all__ = ["credits_bytes", "matrix_bytes", "per_touch_bytes", "varint_bytes"]


def varint_bytes(values) -> np.ndarray:
    """Bytes of each of `values` (>= 0) as a protobuf varint: 7 bits a byte."""
    v = np.asarray(values, np.uint64)
    return 1 + sum((v >> np.uint64(7 * k) != 0).astype(np.int64) for k in range(1, 10))


def _delimited(body) -> np.ndarray:
    """A length-delimited field (a message or packed values) of `body` bytes: tag, length, body."""
    body = np.asarray(body, np.int64)
    return 1 + varint_bytes(body) + body


def _packed_doubles(n) -> np.ndarray:
    """A packed repeated double field of `n` values; omitted when empty."""
    n = np.asarray(n, np.int64)
    return np.where(n > 0, _delimited(8 * n), 0)


def _doubles(x) -> np.ndarray:
    """A double field of each of `x`: 9 bytes, omitted when its bits are zero."""
    return 9 * (np.asarray(x, np.float64).view(np.uint64) != 0)


def _path_credits(paths: Paths) -> np.ndarray:
    """Each PathCredit (path_index, touch_conversions, touch_value) with its framing."""
    index = np.arange(paths.n_paths, dtype=np.int64)
    body = np.where(index > 0, 1 + varint_bytes(index), 0) + 2 * _packed_doubles(paths.lengths)
    return _delimited(body)


def _stored_paths(paths: Paths) -> np.ndarray:
    """Each stored Path (channels, timestamps when kept, conversions, value, nulls) with its
    framing."""
    label = np.fromiter((len(c.encode()) for c in paths.channels), np.int64, paths.n_channels)
    touch = _delimited(label)[paths.indices]
    row = np.repeat(np.arange(paths.n_paths), paths.lengths)
    body = np.bincount(row, weights=touch, minlength=paths.n_paths).astype(np.int64)
    if paths.timestamps is not None:
        body += _packed_doubles(paths.lengths)
    body += _doubles(paths.conversions) + _doubles(paths.value) + _doubles(paths.nulls)
    return _delimited(body)


def per_touch_bytes(paths: Paths, stored: bool) -> int:
    """Bytes of the answer's `path_credits`, and for `stored` journeys its `stored_paths`."""
    total = int(_path_credits(paths).sum())
    return total + (int(_stored_paths(paths).sum()) if stored else 0)


def matrix_bytes(states, matrix) -> int:
    """Bytes of the answer's `transition_matrix`: the states' labels, and each transition's
    row and column (packed varints) and probability (packed doubles), with its framing."""
    coo = matrix.tocoo()
    label = np.fromiter((len(s.encode()) for s in states), np.int64, len(states))
    body = int(_delimited(label).sum()) + int(_packed_doubles(coo.nnz))
    for ints in (coo.row, coo.col):
        body += int(_delimited(varint_bytes(ints).sum())) if coo.nnz else 0
    return int(_delimited(body))


_CHANNEL_DOUBLES = ("removal_effects", "value_removal_effects", "stderr", "value_stderr")


def credits_bytes(result: Attribution) -> int:
    """Bytes of the answer's `credits`: each channel's name, its doubles (conversions, value,
    and the details the model gives) and its ORDERED credits by rank, with its framing."""
    d = result.details
    label = np.fromiter((len(c.encode()) for c in result.channels), np.int64,
                        len(result.channels))
    body = np.where(label > 0, _delimited(label), 0)
    body += _doubles(result.conversions) + _doubles(result.value)
    body += sum(_doubles(d[key]) for key in _CHANNEL_DOUBLES if key in d)
    body += sum(_packed_doubles(d[key].shape[1]) for key in ("rank_conversions", "rank_value")
                if key in d)
    return int(_delimited(body).sum())
