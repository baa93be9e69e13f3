"""Counts over rolling windows: a ring of `windows` fixed-length time windows.

The window of time t is ``floor(t / window_seconds)``; its row in the ring is that number modulo
`windows`, cleared when a newer window takes it. `total` sums the windows of the last
``windows * window_seconds`` seconds (the current one included). Not thread-safe: the caller
holds a lock.
"""
from __future__ import annotations

import numpy as np

__all__ = ["RollingCounts"]


class RollingCounts:
    def __init__(self, size: int, window_seconds: float, windows: int):
        self.window_seconds = float(window_seconds)
        self.counts = np.zeros((windows, size), np.int64)
        self.epochs = np.full(windows, -1, np.int64)

    def _epoch(self, now: float) -> int:
        return int(now // self.window_seconds)

    def add(self, counts: np.ndarray, now: float) -> None:
        """Add counts to the window of `now`, or to the newest window if a newer one than
        `now`'s was started meanwhile (late counts never clear a newer window's row)."""
        epoch = max(self._epoch(now), int(self.epochs.max()))
        slot = epoch % len(self.epochs)
        if self.epochs[slot] != epoch:
            self.counts[slot] = 0
            self.epochs[slot] = epoch
        self.counts[slot] += counts

    def total(self, now: float) -> tuple[np.ndarray, float]:
        """(summed counts of the live windows, unix seconds at which the oldest one began;
        `now` when none holds data)."""
        epoch = self._epoch(now)
        live = (self.epochs >= 0) & (self.epochs > epoch - len(self.epochs))
        if not live.any():
            return np.zeros(self.counts.shape[1], np.int64), now
        return self.counts[live].sum(axis=0), float(self.epochs[live].min() * self.window_seconds)
