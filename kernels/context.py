"""Request-context ranker features: how the request's channel and time of week tilt categories.

Imports nothing of Tailor's. Two small tables, fitted from training rows that carry a channel and
a timestamp, hold per category the log lift of its share in one context over its overall share:

- ``channel_lift[ch, c] = log(share[ch, c] / base[c])`` with ``base[c] = (n[c] + a) / (n + a C)``
  and ``share[ch, c] = (n[ch, c] + a C base[c]) / (n[ch] + a C)`` (shrunk towards the base: a
  context without rows has lift 0)
- ``daypart_lift[d, c]``: the same over the 8 dayparts of `daypart` (weekday/weekend x 6-hour
  block of the local hour of week).

`request_codes` turns requests (channel names, unix times) into the codes both take: the server
calls it per Recommend batch, training and `training.context_eval` per hold-out request, so what
is evaluated is what is served. Dayparts are of the UTC hour of week, as the tables are fitted.

`context_features` looks up the candidates' categories in both tables: one gather per candidate,
O(B * K) time, no [B, C] temporaries. An unknown channel (code < 0) gives lift 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ARRAYS", "CHANNELS", "CONTEXT_FEATURES", "N_DAYPARTS", "ContextTable",
           "channel_code", "daypart", "request_codes", "context_features"]

CHANNELS = ("web", "app", "email")
CONTEXT_FEATURES = (
    "channel_lift",   # log lift of the candidate's category on the request's channel
    "daypart_lift",   # log lift of the candidate's category in the request's daypart
)
N_DAYPARTS = 8
ARRAYS = ("channel_lift", "daypart_lift")
"""The arrays of a bundle's ``context.npz`` (`ContextTable` fields)."""


def channel_code(channel: str) -> int:
    """Index of ``channel`` in `CHANNELS`, -1 when unknown (or empty)."""
    try:
        return CHANNELS.index(channel)
    except ValueError:
        return -1


def daypart(ts, utc_offset_s=0) -> np.ndarray:
    """Daypart of unix seconds ``ts`` at local offset ``utc_offset_s``: ``4 * weekend + hour // 6``.

    1970-01-01 was a Thursday, so day ``d`` is weekday ``(d + 3) % 7`` (Monday = 0).
    """
    local = np.asarray(ts, np.int64) + np.asarray(utc_offset_s, np.int64)
    day, hour = local // 86_400, (local % 86_400) // 3_600
    return (4 * ((day + 3) % 7 >= 5) + hour // 6).astype(np.int64)


def request_codes(channels, ts) -> tuple[np.ndarray, np.ndarray]:
    """Channel codes and UTC dayparts (int64 [B] each) of requests on ``channels`` (names;
    unknown or empty: -1) at unix seconds ``ts`` (one time or one per request)."""
    codes = np.fromiter((channel_code(c) for c in channels), np.int64)
    part = np.broadcast_to(daypart(ts), codes.shape)
    return codes, np.ascontiguousarray(part)


def _lift(keys: np.ndarray, category: np.ndarray, n_keys: int, n_cat: int,
          smoothing: float) -> np.ndarray:
    counts = np.bincount(keys * n_cat + category, minlength=n_keys * n_cat).reshape(n_keys, n_cat)
    base = (counts.sum(axis=0) + smoothing) / (counts.sum() + smoothing * n_cat)
    prior = smoothing * n_cat
    share = (counts + prior * base) / (counts.sum(axis=1, keepdims=True) + prior)
    return (np.log(share) - np.log(base)[None, :]).astype(np.float32)


@dataclass(frozen=True)
class ContextTable:
    """Per-context category lifts (stored in a bundle as two plain arrays)."""

    channel_lift: np.ndarray  # float32 [len(CHANNELS), C]
    daypart_lift: np.ndarray  # float32 [N_DAYPARTS, C]

    @classmethod
    def fit(cls, category, channel, ts, n_categories: int, smoothing: float = 5.0,
            utc_offset_s=0) -> ContextTable:
        """Lifts from rows: their item's category, channel code (< 0 rows are skipped for the
        channel table) and unix time."""
        category = np.asarray(category, np.int64)
        channel = np.asarray(channel, np.int64)
        if category.shape != channel.shape or category.shape != np.shape(ts):
            raise ValueError(f"category {category.shape}, channel {channel.shape} and ts "
                             f"{np.shape(ts)} must match")
        known = channel >= 0
        return cls(_lift(channel[known], category[known], len(CHANNELS), n_categories, smoothing),
                   _lift(daypart(ts, utc_offset_s), category, N_DAYPARTS, n_categories,
                         smoothing))


    def check(self, n_categories: int) -> None:
        """ValueError unless both tables are finite float arrays of [contexts, n_categories]."""
        for name, rows in zip(ARRAYS, (len(CHANNELS), N_DAYPARTS)):
            arr = getattr(self, name)
            if arr.shape != (rows, n_categories) or arr.dtype.kind != "f":
                raise ValueError(f"{name} is {arr.dtype}{list(arr.shape)}, expected float "
                                 f"[{rows}, {n_categories}] (contexts x categories)")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} has non-finite values")


def context_features(table: ContextTable, cand_category, channel, part) -> np.ndarray:
    """Context columns for candidates, in `CONTEXT_FEATURES` order.

    Parameters
    ----------
    table : ContextTable
    cand_category : array of int, shape (B, K)
        Category of each candidate (any value in range for padding rows).
    channel : array of int, shape (B,)
        Channel code per request (`channel_code`; < 0 = unknown, lift 0).
    part : array of int, shape (B,)
        Daypart per request (`daypart`).

    Returns
    -------
    ndarray of float32, shape (B, K, 2)
    """
    cat = np.asarray(cand_category, np.int64)
    channel = np.asarray(channel, np.int64)
    part = np.asarray(part, np.int64)
    if cat.ndim != 2 or channel.shape != (cat.shape[0],) or part.shape != (cat.shape[0],):
        raise ValueError(f"cand_category {cat.shape} must be [B, K] with channel {channel.shape} "
                         f"and part {part.shape} of shape (B,)")
    n_cat = table.channel_lift.shape[1]
    out = np.empty(cat.shape + (2,), np.float32)
    known = channel >= 0
    rows = (np.where(known, channel, 0) * n_cat)[:, None] + cat
    np.take(table.channel_lift.ravel(), rows, out=out[..., 0])
    if not known.all():
        out[~known, :, 0] = 0.0
    np.take(table.daypart_lift.ravel(), (part * n_cat)[:, None] + cat, out=out[..., 1])
    return out
