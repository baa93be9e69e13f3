"""Channel choice: Thompson sampling on per-user Beta posteriors of engagement per send.

User u's engagement rate on channel c (opens per send; clicks per send where the channel has no
open event, see `population.engagement`) has the posterior

    Beta(a_c + s_uc, b_c + n_uc - s_uc)

from the population prior Beta(a_c, b_c) (`population.fit_population`, method of moments) and
the user's decayed sends n_uc and engagements s_uc read as of `now`, as effective counts
(`population` docs). One draw per allowed
channel; the largest wins.

Propensity: the probability that channel wins a fresh draw, estimated by Monte Carlo with
`n_mc` further draws, the chosen draw counted among them, so it is never 0:

    propensity_c = (1[c chosen] + #{draws c wins}) / (n_mc + 1)

(the convention of `kernels.bandits` Thompson choices; standard error <= 0.5 / sqrt(n_mc + 1),
0.031 at the default 256 draws). `win_probability_2` gives the exact value for two channels by
numerical integration, P(X1 > X2) = int f1(x) F2(x) dx, which the tests check the estimate
against.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernels.feature_layout import FeatureLayout

from .population import Population, user_channels

__all__ = ["posteriors", "thompson", "choose_channels", "choose_channel", "win_probability_2"]

DEFAULT_N_MC = 256


def posteriors(layout: FeatureLayout, states, now: float, population: Population,
               half_life: int | None = -1) -> tuple[np.ndarray, np.ndarray]:
    """Beta posterior (a, b), each [n, C] over `population.channels`, of a batch of states.

    `half_life` must be the one the population was fitted with (default: the longest)."""
    sends, engaged = user_channels(layout, states, now, half_life)
    cols = [layout.channel_code(c) for c in population.channels]
    sends, engaged = sends[:, cols], engaged[:, cols]
    return population.channel_a + engaged, population.channel_b + sends - engaged


def thompson(a, b, allowed, rng: np.random.Generator, n_mc: int = DEFAULT_N_MC
             ) -> tuple[np.ndarray, np.ndarray]:
    """(chosen [n] column index, probs [n, C]) for Beta(a, b) arms, `allowed` [n, C] bool.

    Every row needs one allowed column; disallowed columns never win and have probability 0.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    allowed = np.asarray(allowed, bool)
    if not (a.shape == b.shape == allowed.shape and a.ndim == 2):
        raise ValueError("a, b, allowed: must be [n, C] arrays of one shape")
    if not allowed.any(axis=1).all():
        raise ValueError("channels: every user needs at least one allowed channel")
    if n_mc < 0:
        raise ValueError(f"n_mc: must be >= 0, got {n_mc}")
    n, c = a.shape
    cols = np.flatnonzero(allowed.any(axis=0))  # draw only channels somebody may get
    draws = rng.beta(a[:, None, cols], b[:, None, cols], size=(n, n_mc + 1, cols.size))
    draws = np.where(allowed[:, None, cols], draws, -1.0)
    winners = cols[np.argmax(draws, axis=2)]  # [n, n_mc + 1]; column 0 is the decision
    probs = np.zeros((n, c))
    np.add.at(probs, (np.repeat(np.arange(n), n_mc + 1), winners.reshape(-1)), 1.0)
    return winners[:, 0], probs / (n_mc + 1)


def choose_channels(layout: FeatureLayout, states, allowed, now: float, rng,
                    population: Population, n_mc: int = DEFAULT_N_MC
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch: (chosen column [n] of `population.channels`, propensity [n], probs [n, C])."""
    a, b = posteriors(layout, states, now, population)
    chosen, probs = thompson(a, b, allowed, rng, n_mc)
    return chosen, probs[np.arange(chosen.shape[0]), chosen], probs


def choose_channel(state, channels: Sequence[str], rng: np.random.Generator,
                   population: Population, *, layout: FeatureLayout, now: float,
                   n_mc: int = DEFAULT_N_MC) -> tuple[str, float]:
    """One user: (channel, propensity) among `channels` (the ones the user may be contacted
    on, each one of `population.channels`). `state` None: the population prior alone."""
    unknown = [c for c in channels if c not in population.channels]
    if not channels or unknown:
        raise ValueError(f"channels: need at least one of {list(population.channels)}, "
                         f"got unknown {unknown}")
    allowed = np.isin(np.array(population.channels), list(channels))[None, :]
    if state is None:
        a, b = population.channel_a[None, :], population.channel_b[None, :]
    else:
        a, b = posteriors(layout, state, now, population)
    chosen, probs = thompson(a, b, allowed, rng, n_mc)
    return population.channels[int(chosen[0])], float(probs[0, chosen[0]])


def win_probability_2(a1: float, b1: float, a2: float, b2: float) -> float:
    """Exact P(X1 > X2) for independent X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2)."""
    from scipy import integrate, stats

    value, _ = integrate.quad(lambda x: stats.beta.pdf(x, a1, b1) * stats.beta.cdf(x, a2, b2),
                              0.0, 1.0, limit=200)
    return float(value)
