"""The encoder's history of one user: short- and long-term interest blended at request time.

Every known item of the user (the bundle's training history and the profile's recent items)
is an entry (row, event weight, latest ts). Its weight at request time `now` is

    w * 2^(-(now - t)/half_life)        recent interest (30 days by default)
  + w * 2^(-(now - t)/long_half_life)   long-term interest (a year by default)

so both decay against the clock, not against the user's latest event: a click after a pause
does not age the rest of the profile. Entries older than the current session (`session_s`)
are then scaled down together, when needed, to carry at most `background_mass` in total: a
heavy history cannot drown a session's new interest, and a light or old one keeps its long-term
part (a click weighs 2 and counts twice in a session, as recent and as long-term interest).
The `length` heaviest items are kept, ordered by latest ts (the encoder's fold-in is a sum, so
keeping the heaviest rather than the latest loses the least of the profile).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.events import DEFAULT_HALF_LIFE_DAYS
from kernels.history import blend as kernel_blend

__all__ = ["DEFAULT_BLEND", "HistoryBlend", "unique_histories"]

DAY = 86400.0


@dataclass(frozen=True)
class HistoryBlend:
    half_life_s: float = DEFAULT_HALF_LIFE_DAYS * DAY
    """The recent part's half-life: each bundle's `history.half_life_days` replaces it
    (`Profiles.history_of`)."""
    long_half_life_s: float = 365 * DAY
    session_s: float = 1800.0
    background_mass: float = 16.0
    """0: no cap."""

    @classmethod
    def from_settings(cls, s) -> HistoryBlend:
        return cls(DEFAULT_HALF_LIFE_DAYS * DAY, s.history_long_half_life_days * DAY,
                   s.history_session_minutes * 60.0, s.history_background_mass)

    def blend(self, rows: np.ndarray, weights: np.ndarray, ts: np.ndarray, now: float,
              length: int, session_now: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows oldest first, float32 weights), one entry per row, at most `length`
        (`kernels.history.blend`). `session_now`: the time the session is counted back from,
        when not `now` (Recommend decays to a clock in steps, `recommend.handler.decay_clock`,
        but its session is the last `session_s` before the request itself)."""
        session_s = self.session_s if session_now is None else self.session_s - (session_now - now)
        return kernel_blend(rows, weights, ts, now, length, half_life_s=self.half_life_s,
                            long_half_life_s=self.long_half_life_s, session_s=session_s,
                            background_mass=self.background_mass)

    def blend_trained(self, rows: np.ndarray, weights: np.ndarray, ts: float, now: float,
                      length: int, session_now: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """`blend` of a history whose rows are unique and ascending and all seen at `ts` (a
        bundle user without live events: `unique_histories`), with a handful of array
        operations instead of `blend`'s grouping; the result is the same."""
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        age = max(now - ts, 0.0)
        w = weights * (2.0 ** (-age / self.half_life_s) + 2.0 ** (-age / self.long_half_life_s))
        session_start = (now if session_now is None else session_now) - self.session_s
        if self.background_mass > 0 and ts < session_start:
            mass = float(w.sum())
            if mass > self.background_mass:
                w *= self.background_mass / mass
        keep = w > 0
        if not keep.all():
            rows, w = rows[keep], w[keep]
        if len(rows) > length:  # the heaviest, heaviest first (`blend`'s order at equal ts)
            top = np.argsort(-w, kind="stable")[:length]
            rows, w = rows[top], w[top]
        return rows, w.astype(np.float32)


def unique_histories(indptr: np.ndarray, items: np.ndarray, weights: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's training history (CSR `indptr`, `items`, `weights`) with rows ascending and
    repeated rows merged (weights summed): the input `HistoryBlend.blend_trained` expects."""
    n_users = len(indptr) - 1
    owner = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    n_items = int(items.max(initial=-1)) + 1
    keys, inv = np.unique(owner * n_items + items.astype(np.int64), return_inverse=True)
    summed = np.bincount(inv, weights=weights.astype(np.float64), minlength=len(keys))
    new_indptr = np.searchsorted(keys, np.arange(n_users + 1, dtype=np.int64) * n_items)
    return new_indptr, keys - np.repeat(np.arange(n_users, dtype=np.int64) * n_items,
                                        np.diff(new_indptr)), summed


DEFAULT_BLEND = HistoryBlend()
"""The blend of a server with default Settings (bundles replace its recent half-life)."""
