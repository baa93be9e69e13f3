"""Where the decision path gets its population prior: a fit on a sample of stored profiles.

Why not a bundle member: the prior must be in the serving states' units (local-time hours from
the events' UTC offsets, decayed, per channel of the live vocabulary); training data has no time
zones, and a bundle ages with the recommendation model. The profile store holds exactly those
states, so `PriorSource` fits `kernels.contact_population.fit_population` on up to
`sample_size` of them (read in one snapshot by `ProfileRepository.sample_states`, successive
samples walking the store round-robin) and refits when the fit is older than `max_age_s`. The
decision path only reads `current` (no I/O); `refresh` is the one call that reads the store:
run it off the event loop (e.g. ``await asyncio.to_thread(source.refresh, time.time())``) at
start and on a timer. Until the first refresh, and for an empty store, the prior is
`Population.uninformed`.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from kernels.contact_population import Population, fit_population
from kernels.feature_layout import FeatureLayout

__all__ = ["PriorSource"]

logger = logging.getLogger("tailor.contact.prior")

Sampler = Callable[[int, bytes], tuple[np.ndarray, bytes]]


class PriorSource:
    """The current population prior of one server process.

    Parameters
    ----------
    layout : FeatureLayout of the stored states
    sample : callable (limit, start key) -> (states [n, size], next start key), e.g.
        `ProfileRepository.sample_states`
    sample_size : int, profiles per fit (cost: one read of that many records, O(n) fit)
    max_age_s : float, `stale` after this long
    """

    def __init__(self, layout: FeatureLayout, sample: Sampler, sample_size: int = 20_000,
                 max_age_s: float = 3600.0):
        if sample_size < 1 or not max_age_s > 0:
            raise ValueError("sample_size must be >= 1 and max_age_s > 0")
        self._layout, self._sample = layout, sample
        self._size, self._max_age = int(sample_size), float(max_age_s)
        self._current = Population.uninformed(layout)
        self._fitted_at = -np.inf
        self._next = b""
        self._lock = threading.Lock()  # one refresh at a time; readers never wait

    @property
    def current(self) -> Population:
        return self._current

    def stale(self, now: float) -> bool:
        return now - self._fitted_at >= self._max_age

    def refresh(self, now: float) -> Population:
        """Refit on the next sample of stored profiles (keeps the old prior if it is empty)."""
        with self._lock:
            states, self._next = self._sample(self._size, self._next)
            if states.shape[0]:
                self._current = fit_population(self._layout, states, now)
                logger.info("contact prior refitted on %d profiles (hour alpha %.3g)",
                            states.shape[0], self._current.hour_alpha)
            self._fitted_at = now
            return self._current
