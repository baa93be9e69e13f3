"""Contact ground truth of the demo world: time zones, preferred hours and channels per user.

Drawn from its own generator (``[seed, 3]``), so the default demo outputs do not change; written
as ``contact_truth.npz`` by `training.demo.write_demo` when ``DemoConfig.contact_truth`` is set,
and used by ``python -m training evaluate-timing`` to simulate opens of sends.

Model: user u lives at UTC offset ``tz_offset_min`` (a few whole-hour zones and +05:30) and is
available around a preferred local hour h_u (drawn from the demo's two-peak daily profile) with
concentration kappa_u. A send at local hour t (fractional) is engaged with probability

    rate[u, c] * (FLOOR + (1 - FLOOR) exp(kappa_u (cos(2 pi (t - h_u) / 24) - 1)))

rate[u, c] the user's peak rate on channel c (email, sms, push): a per-channel base times a
lognormal user factor, times `PREFERRED_BOOST` on the user's preferred channel. The user's own
engagement events (their history) fall at local times of the same density (a uniform share and a
von Mises share, exactly), `activity` events a week on average.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHANNELS", "ContactTruth", "contact_truth", "time_factor", "open_probability",
           "engagement_times"]

CHANNELS = ("email", "sms", "push")
CHANNEL_BASE = np.array([0.14, 0.12, 0.12])
CHANNEL_SHARE = np.array([0.45, 0.25, 0.3])  # preferred channel shares
PREFERRED_BOOST = 3.0
FLOOR = 0.15
TZ_OFFSETS = np.array([-480, -300, 0, 60, 120, 330, 540])  # LA, NY, London, Paris, Athens, ...
TZ_SHARE = np.array([0.12, 0.2, 0.18, 0.2, 0.1, 0.1, 0.1])
_HOURS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 9, 11, 10, 8, 7, 7, 8, 10, 12, 13, 11, 7, 3],
                  dtype=np.float64)  # the demo's daily session profile (training.demo)


@dataclass(frozen=True)
class ContactTruth:
    """Per user (row = demo user id): everything that decides whether a send is engaged."""

    tz_offset_min: np.ndarray     # int64 [n]
    preferred_hour: np.ndarray    # float64 [n], local, in [0, 24)
    hour_kappa: np.ndarray        # float64 [n]
    channel_rate: np.ndarray      # float64 [n, 3] peak engagement rate per channel of CHANNELS
    preferred_channel: np.ndarray  # int64 [n] index into CHANNELS
    activity: np.ndarray          # float64 [n] engagement events per week

    def __len__(self) -> int:
        return self.tz_offset_min.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz members (``contact_truth.npz``)."""
        return {"tz_offset_min": self.tz_offset_min, "preferred_hour": self.preferred_hour,
                "hour_kappa": self.hour_kappa, "channel_rate": self.channel_rate,
                "preferred_channel": self.preferred_channel, "activity": self.activity,
                "channels": np.array(CHANNELS)}


def contact_truth(n_users: int, seed: int) -> ContactTruth:
    """The ground truth of users 0..n_users-1 of the world of `seed` (deterministic)."""
    rng = np.random.default_rng([seed, 3])
    tz = TZ_OFFSETS[rng.choice(TZ_OFFSETS.shape[0], size=n_users, p=TZ_SHARE)]
    hour = rng.choice(24, size=n_users, p=_HOURS / _HOURS.sum()) + rng.random(n_users)
    kappa = rng.uniform(1.0, 4.0, n_users)
    pref = rng.choice(len(CHANNELS), size=n_users, p=CHANNEL_SHARE)
    rate = CHANNEL_BASE[None, :] * np.exp(rng.normal(0.0, 0.3, (n_users, len(CHANNELS))))
    rate[np.arange(n_users), pref] *= PREFERRED_BOOST
    activity = np.exp(rng.normal(np.log(2.0), 0.8, n_users))
    return ContactTruth(tz.astype(np.int64), hour, kappa, np.minimum(rate, 0.95),
                        pref.astype(np.int64), activity)


def time_factor(truth: ContactTruth, users, ts) -> np.ndarray:
    """The hour-of-day factor in [FLOOR, 1] of sends at unix seconds `ts` to `users`."""
    users = np.asarray(users)
    local = ((np.asarray(ts, np.float64) + 60.0 * truth.tz_offset_min[users]) / 3600.0) % 24.0
    angle = 2.0 * np.pi * (local - truth.preferred_hour[users]) / 24.0
    return FLOOR + (1.0 - FLOOR) * np.exp(truth.hour_kappa[users] * (np.cos(angle) - 1.0))


def open_probability(truth: ContactTruth, users, channel, ts) -> np.ndarray:
    """P(engaged) of sends to `users` on `channel` (index into CHANNELS) at `ts`."""
    users = np.asarray(users)
    return truth.channel_rate[users, np.asarray(channel)] * time_factor(truth, users, ts)


def engagement_times(truth: ContactTruth, rng: np.random.Generator, start: float, end: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(user, ts) of every user's own engagement events in [start, end), sorted by (user, ts).

    Local time of day has the density of `time_factor`: uniform with probability
    FLOOR / (FLOOR + (1 - FLOOR) e^-kappa I0(kappa)), else von Mises around the preferred hour.
    """
    weeks = (end - start) / (7 * 86400.0)
    n = rng.poisson(truth.activity * weeks)
    users = np.repeat(np.arange(len(truth)), n)
    kappa = truth.hour_kappa[users]
    peaked = (1.0 - FLOOR) * np.exp(-kappa) * np.i0(kappa)
    uniform = rng.random(users.shape[0]) < FLOOR / (FLOOR + peaked)
    mu = 2.0 * np.pi * truth.preferred_hour[users] / 24.0
    local = np.where(uniform, rng.random(users.shape[0]) * 24.0,
                     (rng.vonmises(mu, kappa) % (2.0 * np.pi)) * 24.0 / (2.0 * np.pi))
    days = np.floor(start / 86400.0) + rng.integers(0, max(int(weeks * 7), 1), users.shape[0])
    ts = days * 86400.0 + local * 3600.0 - 60.0 * truth.tz_offset_min[users]
    keep = (ts >= start) & (ts < end)
    order = np.lexsort((ts[keep], users[keep]))
    return users[keep][order], ts[keep][order]
