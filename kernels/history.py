"""The encoder's history of one user blended at request time: one entry per item row.

Each entry (row, event weight w, time t) weighs, at request time `now`,

    w * (2^(-age/half_life) + 2^(-age/long_half_life)),   age = max(now - t, 0)

summed per row, with the row's latest time. Rows whose latest time is before the session
(`now - session`) are scaled down together to carry at most `background_mass` when they carry
more (0: no cap). Rows of positive weight are kept, the `length` heaviest if there are more
(equal weights: the lower row first), and returned oldest first; rows of equal times keep the
order before (the lower row first when none was cut, else the heavier first). Returned as (int64
rows, float32 weights). The kernel equals the reference up to float64 rounding (numpy's `exp2`
and its pairwise sums against the C library's and a plain loop): rows and their order agree
unless two weights tie to the last bit. Why these terms: `server/profiles/history.py`.

`blend` runs the Cython kernel (`kernels._history`, one pass and three small sorts, no numpy
temporaries) unless ``use_native=False``, which runs the numpy reference.
"""
from __future__ import annotations

import numpy as np

from .arrays import F64, I64, contiguous

__all__ = ["blend"]

_REFUSED = {-1: "ts, weights: every value must be finite",
            -2: "rows: every value must be below 2^53 in magnitude"}

def blend(rows: np.ndarray, weights: np.ndarray, ts: np.ndarray, now: float, length: int, *,
          half_life_s: float, long_half_life_s: float, session_s: float,
          background_mass: float, use_native: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One entry per item row of a user's history, at most `length`, oldest first.

    Parameters
    ----------
    rows, weights, ts : array-like, shape (n,)
        Each event's item row, event weight and unix time (rows may repeat).
    now : float
        The request time the weights decay to.
    length : int
        Most entries returned (the heaviest; >= 0).
    half_life_s, long_half_life_s : float
        Half-lives of the recent and the long-term part, seconds (> 0).
    session_s, background_mass : float
        Rows last seen more than `session_s` before `now` carry at most `background_mass`
        together (0: no cap).
    use_native : bool
        The Cython kernel (default) or the numpy reference.

    Returns
    -------
    (rows, weights) : int64 and float32 arrays of the kept entries, oldest first.
    """
    rows, weights, ts = contiguous(rows, I64), contiguous(weights, F64), contiguous(ts, F64)
    if not (rows.ndim == weights.ndim == ts.ndim == 1 and len(rows) == len(weights) == len(ts)):
        raise ValueError(f"rows, weights, ts: must be 1-d of one length, got shapes {rows.shape}, "
                         f"{weights.shape}, {ts.shape}")
    if length < 0 or not (half_life_s > 0 and long_half_life_s > 0):
        raise ValueError(f"length must be >= 0 and the half-lives > 0, got {length}, "
                         f"{half_life_s}, {long_half_life_s}")
    if use_native:
        from . import _history
        out = _history.blend(rows, weights, ts, float(now), int(length), float(half_life_s),
                             float(long_half_life_s), float(session_s), float(background_mass))
        if isinstance(out, int):
            raise ValueError(_REFUSED[out])
        return out
    if not (np.isfinite(ts).all() and np.isfinite(weights).all()):
        raise ValueError(_REFUSED[-1])
    if len(rows) and np.abs(rows).max() >= 2 ** 53:
        raise ValueError(_REFUSED[-2])
    return _reference(rows, weights, ts, now, length, half_life_s, long_half_life_s, session_s,
                      background_mass)


def _reference(rows, weights, ts, now, length, half_life_s, long_half_life_s, session_s,
               background_mass):
    if not len(rows):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    age = np.maximum(now - ts, 0.0)
    w = weights * (np.exp2(-age / half_life_s) + np.exp2(-age / long_half_life_s))
    uniq, inv = np.unique(rows, return_inverse=True)
    summed = np.bincount(inv, weights=w, minlength=len(uniq))
    latest = np.full(len(uniq), -np.inf)
    np.maximum.at(latest, inv, ts)
    if background_mass > 0:
        old = latest < now - session_s
        mass = summed[old].sum()
        if mass > background_mass:
            summed[old] *= background_mass / mass
    keep = np.flatnonzero(summed > 0)
    if len(keep) > length:
        keep = keep[np.argsort(-summed[keep], kind="stable")[:length]]
    keep = keep[np.argsort(latest[keep], kind="stable")]
    return uniq[keep].astype(np.int64), summed[keep].astype(np.float32)
