"""Send-time and channel choice for a batch of contacts, in one vectorised pass each.

`ContactPolicy.verdicts` hands over what it knows per contact (feature state or None, the
consented channels, the send window as unix seconds or None); `choose` returns per contact
(channel, its propensity, send_at or 0 = now, its propensity) from `kernels.channel_choice`
`thompson` over the rows with several allowed channels and `kernels.send_time` `choose_slots`
over the rows with a window.
Rows without a choice get the first allowed channel / now, with propensity 1.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernels.channel_choice import posteriors, thompson
from kernels.contact_population import Population, user_hours
from kernels.feature_layout import FeatureLayout, new_states
from kernels.send_time import choose_slots, slots

__all__ = ["choose"]


def _states(layout: FeatureLayout, states: Sequence[np.ndarray | None]) -> np.ndarray:
    out = new_states(layout, len(states))  # no profile: an empty state, i.e. the prior alone
    for i, state in enumerate(states):
        if state is not None:
            out[i] = state
    return out


def choose(layout: FeatureLayout, population: Population, rng: np.random.Generator,
           states: Sequence[np.ndarray | None], allowed: Sequence[Sequence[str]],
           windows: Sequence[tuple[float, float] | None], now: float, *, epsilon: float,
           n_mc: int) -> list[tuple[str, float, float, float]]:
    """(channel, channel propensity, send_at or 0, send-time propensity) per contact; every
    contact needs one allowed channel."""
    n = len(states)
    channel = [a[0] for a in allowed]
    p_channel, send_at, p_time = np.ones(n), np.zeros(n), np.ones(n)
    several = [i for i in range(n) if len(allowed[i]) > 1]
    timed = [i for i in range(n) if windows[i] is not None]
    batch = _states(layout, [states[i] for i in sorted({*several, *timed})])
    row = {i: j for j, i in enumerate(sorted({*several, *timed}))}
    if several:
        a, b = posteriors(layout, batch[[row[i] for i in several]], now, population)
        names = np.array(population.channels)
        mask = np.array([np.isin(names, allowed[i]) for i in several])
        chosen, probs = thompson(a, b, mask, rng, n_mc)
        for k, i in enumerate(several):
            channel[i] = population.channels[chosen[k]]
            p_channel[i] = probs[k, chosen[k]]
    if timed:
        hist, tz = user_hours(layout, batch[[row[i] for i in timed]], now)
        span = np.array([windows[i] for i in timed], np.float64)
        at, prop, _ = choose_slots(hist, slots(np.maximum(span[:, 0], now), span[:, 1], tz),
                                   population, rng, epsilon)
        send_at[timed] = np.where(at > now, at, 0.0)
        p_time[timed] = prop
    return [(channel[i], float(p_channel[i]), float(send_at[i]), float(p_time[i]))
            for i in range(n)]
