"""Channel- and time-of-week-dependent tastes for the demo world (``context_tastes > 0``).

Off by default: the default world's bytes do not change. When on, every shop session has a channel
(``web`` or ``app``, a fixed hash of the user and the UTC day, so each row of a session can be
given its channel after the fact) and the category a view picks from the user's mix is reweighted
by ``exp(strength * (A[channel, c] + D[daypart, c]))``: the same user leans to different ones of
their categories on the app in the evening than on the web on a weekday morning. Email rows
(sent, open, click) have channel ``email``. A and D are standard normal draws of their own stream
(``[seed, 7]``), so the rest of the world is drawn exactly as without them.

Rows that cross midnight UTC inside a session may get the next day's channel (about 2% of them).
"""
from __future__ import annotations

import numpy as np

from kernels.context import CHANNELS, N_DAYPARTS, daypart

__all__ = ["ContextTastes", "session_channel"]

_EMAIL_EVENTS = (4, 5, 6)   # email_sent, email_open, email_click (training.events.EVENTS codes)


def session_channel(user: np.ndarray, ts: np.ndarray, seed: int) -> np.ndarray:
    """``web`` (0) or ``app`` (1) for a shop row: a hash of the global user id and UTC day."""
    x = (np.asarray(user, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         ^ (np.asarray(ts, np.uint64) // np.uint64(86_400)) * np.uint64(0xBF58476D1CE4E5B9)
         ^ np.uint64(seed * 0x94D049BB133111EB % 2**64))
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xD6E8FEB86659FD93)
    return ((x >> np.uint64(40)) & np.uint64(1)).astype(np.int64)


class ContextTastes:
    """Tilt tables of one world."""

    def __init__(self, seed: int, n_categories: int, strength: float):
        rng = np.random.default_rng([seed, 7])
        self.seed, self.strength = seed, float(strength)
        self.channel = rng.standard_normal((2, n_categories))
        self.part = rng.standard_normal((N_DAYPARTS, n_categories))

    def tilt(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Category weights [n, C] for shop views of global ``user`` at unix ``ts`` (UTC)."""
        ch = session_channel(user, ts, self.seed)
        return np.exp(self.strength * (self.channel[ch] + self.part[daypart(ts)]))

    def channels(self, user: np.ndarray, ts: np.ndarray, event: np.ndarray) -> np.ndarray:
        """Channel code (`kernels.context.CHANNELS`) of each event row."""
        email = np.isin(event, _EMAIL_EVENTS)
        return np.where(email, CHANNELS.index("email"), session_channel(user, ts, self.seed))
