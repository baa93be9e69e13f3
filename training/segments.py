"""User segments of the offline evaluation: new vs returning users, and activity buckets.

Both are read from the evaluation fit's training rows, so they say what the model knew of the
user when it recommended: a user is ``new`` when their first training row is less than
``NEW_USER_DAYS`` before the training cutoff (``returning`` otherwise), and falls in the
activity bucket of their number of training rows.
"""
from __future__ import annotations

import numpy as np

from training.events import Interactions

__all__ = ["ACTIVITY_BUCKETS", "NEW_USER_DAYS", "user_segments"]

NEW_USER_DAYS = 7.0
ACTIVITY_BUCKETS = ((1, 4), (5, 19), (20, 49), (50, None))
"""Training rows per user, both ends included (None: no upper end)."""


def _bucket_name(lo: int, hi: int | None) -> str:
    return f"activity {lo}+" if hi is None else f"activity {lo}-{hi}"


def user_segments(train_rows: Interactions, cutoff: float) -> dict[str, np.ndarray]:
    """{segment name: bool [n_users] over user codes}: ``new``, ``returning`` and one
    ``activity lo-hi`` per bucket (users without training rows are in none)."""
    n = train_rows.n_users
    counts = np.bincount(train_rows.user, minlength=n)
    first = np.full(n, np.inf)
    np.minimum.at(first, train_rows.user, train_rows.ts.astype(np.float64))
    known = counts > 0
    new = known & (first >= cutoff - NEW_USER_DAYS * 86400.0)
    out = {"new": new, "returning": known & ~new}
    for lo, hi in ACTIVITY_BUCKETS:
        out[_bucket_name(lo, hi)] = (counts >= lo) & (counts <= (np.inf if hi is None else hi))
    return out
