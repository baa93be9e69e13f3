"""Send-time choice: the user's best local hour inside the campaign's send window.

A window [start, end) (unix seconds) is cut into slots at the user's local hour boundaries:
slot 0 sends at `start`, slot j >= 1 at the j-th local hour start after it, while < `end`
(at most `MAX_SLOTS`). Each slot has a local hour of week b (Monday 00:00 = 0, the feature
state's `TZ_OFFSET_MIN` giving local time). Its score is the posterior mean of the user's share
of engagement in bin b (`contact_population` docs), whose argmax is that of

    score_b = x_ub + alpha p_b

x_u the user's hour-of-week histogram decayed to `now` in effective counts
(`contact_population.user_hours`), (p, alpha) the population's fitted
Dirichlet prior: a user without history gets the population's best hour, a heavy user their
own. Exploration is epsilon-greedy: with probability `epsilon` a uniform slot, so the logged
propensity of slot j is (1 - epsilon) [j = best] + epsilon / m, exact (ties go to the earliest
slot). Everything is vectorised over users; `choose_send_at` is the one-user form.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.feature_layout import HOURS_PER_WEEK, FeatureLayout

from .contact_population import Population, user_hours

__all__ = ["MAX_SLOTS", "SendTimes", "slots", "slot_probs", "choose_slots", "choose_send_at"]

MAX_SLOTS = HOURS_PER_WEEK
_EPOCH_HOUR_OF_WEEK = 72  # 1970-01-01 00:00 was a Thursday: hour 72 of a Monday-based week


@dataclass(frozen=True)
class SendTimes:
    """Candidate slots of a batch: `at` [n, m] unix seconds, `bin` [n, m] local hour of week,
    `valid` [n, m] (user i has `valid[i].sum()` slots: the first ones as `slots` makes them;
    `slot_probs` and `choose_slots` take any mask with one valid slot a row, e.g. without the
    slots a caller may not send at)."""

    at: np.ndarray
    bin: np.ndarray
    valid: np.ndarray


def slots(starts, ends, tz_offset_min) -> SendTimes:
    """The slots of each user's window; ValueError unless 0 < end - start <= MAX_SLOTS hours."""
    starts = np.asarray(starts, np.float64).reshape(-1)
    ends = np.asarray(ends, np.float64).reshape(-1)
    tz = 60.0 * np.asarray(tz_offset_min, np.float64).reshape(-1)
    if not (starts.shape == ends.shape == tz.shape):
        raise ValueError("window: starts, ends and tz offsets differ in length")
    span = ends - starts
    if not np.all(np.isfinite(span) & (span > 0) & (span <= MAX_SLOTS * 3600.0)):
        raise ValueError(f"window: must end after it starts, at most {MAX_SLOTS} hours later")
    first = (np.floor((starts + tz) / 3600.0) + 1.0) * 3600.0 - tz  # next local hour start
    m = 1 + int(np.ceil((ends - first).max() / 3600.0)) if starts.size else 1
    m = max(min(m, MAX_SLOTS + 1), 1)
    at = first[:, None] + 3600.0 * np.arange(-1, m - 1)[None, :]
    at[:, 0] = starts
    valid = at < ends[:, None]
    local_hour = np.floor((at + tz[:, None]) / 3600.0).astype(np.int64)
    return SendTimes(at, (local_hour + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK, valid)


def slot_probs(hist, cand: SendTimes, population: Population, epsilon: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(best slot [n], probs [n, m]): the greedy slot and the policy's distribution."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon: must be in [0, 1], got {epsilon}")
    hist = np.asarray(hist, np.float64).reshape(-1, HOURS_PER_WEEK)
    prior = population.hour_alpha * population.hour_p
    score = np.take_along_axis(hist, cand.bin, axis=1) + prior[cand.bin]
    score = np.where(cand.valid, score, -np.inf)
    best = np.argmax(score, axis=1)
    m = cand.valid.sum(axis=1)
    probs = np.where(cand.valid, epsilon / m[:, None], 0.0)
    probs[np.arange(best.shape[0]), best] += 1.0 - epsilon
    return best, probs


def choose_slots(hist, cand: SendTimes, population: Population, rng: np.random.Generator,
                 epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(send_at [n], propensity [n], slot [n]) for a batch; one uniform draw per user for the
    exploration coin and one for the explored slot."""
    best, probs = slot_probs(hist, cand, population, epsilon)
    n = best.shape[0]
    m = cand.valid.sum(axis=1)
    explore = rng.random(n) < epsilon
    k = np.floor(rng.random(n) * m).astype(np.int64)  # the k-th valid slot (the k-th slot
    explored = np.argmax(np.cumsum(cand.valid, axis=1) > k[:, None], axis=1)  # for `slots`')
    slot = np.where(explore, explored, best)
    rows = np.arange(n)
    return cand.at[rows, slot], probs[rows, slot], slot


def choose_send_at(state, window: tuple[float, float], now: float, rng: np.random.Generator,
                   population: Population, *, layout: FeatureLayout, epsilon: float = 0.1
                   ) -> tuple[float, float]:
    """One user: (send_at unix seconds, propensity) inside `window` = (start, end).

    `state` is the user's feature record (None = no profile: the population's best hour, at
    the window start's offset from UTC, 0). A window starting before `now` starts at `now`.
    """
    if state is None:
        hist, tz = np.zeros((1, HOURS_PER_WEEK)), np.zeros(1, np.int64)
    else:
        hist, tz = user_hours(layout, state, now)
    start, end = max(float(window[0]), float(now)), float(window[1])
    at, prop, _ = choose_slots(hist, slots([start], [end], tz), population, rng, epsilon)
    return float(at[0]), float(prop[0])

