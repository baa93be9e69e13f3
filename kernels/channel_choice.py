"""Channel choice: Thompson sampling on per-user Beta posteriors of engagement per send.

User u's engagement rate on channel c (opens per send; clicks per send where the channel has no
open event, see `contact_population.engagement`) has the posterior

    Beta(a_c + s_uc, b_c + n_uc - s_uc)

from the population prior Beta(a_c, b_c) (`contact_population.fit_population`, method of
moments) and the user's decayed sends n_uc and engagements s_uc read as of `now`, as effective
counts (`contact_population` docs). One draw per allowed channel; the largest wins.

Propensity: the probability that the channel wins a fresh draw,

    P(c wins) = int f_c(x) prod_{j allowed, j != c} F_j(x) dx

computed by 64-point Gauss-Legendre quadrature from the chosen arm's mean - 10 standard
deviations to the highest allowed arm's mean + 10 (`win_probabilities`), checked against a
40-point rule on the same range, and, for a row where the two differ by more than 1e-3 of an
arm's probability or whose probabilities do not sum to 1 within 1e-3 of its rarest arm's (an
arm far wider than another, whose CDF rises between the nodes: a channel at p = 0.0104 came
out 0.0094; or a rare arm winning in its own far tail), again on panels over [0, 1] cut around
every arm's mean: relative error <= 1e-3 for every arm at p >= 1e-6 (a, b >= 1), and
deterministic, so IPS weights carry no Monte Carlo noise. The sum alone missed errors that
offset each other across arms (0.00924 logged for 0.00729 among three arms) or fell under its
old 1e-7 floor (7.6e-7 for 1.0e-6).

Rows with a posterior of a or b < 1 (a pdf singular at 0 or 1) take a Monte Carlo estimate
instead, `n_mc` draws plus one pseudo-draw spread evenly over
the allowed channels (so none is at 0), and their channel is *drawn from that estimate*: the
logged propensity is then exactly the probability of the draw made (unbiased IPS weights, as
`server.campaigns.policy` does for the Thompson bandits); the Monte Carlo error (standard error
<= 0.5 / sqrt(n_mc + 1)) only makes the served choice differ slightly from ideal Thompson
sampling. Estimating the probability of a fresh draw's winner instead gave a channel at
p = 0.0034 an IPS weight 45% low on average (n_mc = 256).
Quadrature costs ~k^2 x (64 + 40) incomplete-beta evaluations per row (a panelled row ~k^3 x 240)
against 2 x (n_mc + 1) x k beta
draws. `win_probability_2` is the scalar two-arm integral (scipy.integrate.quad) the tests
check both against.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernels.feature_layout import FeatureLayout

from .contact_population import Population, user_channels

__all__ = ["posteriors", "thompson", "win_probabilities", "mc_probabilities", "choose_channels",
           "choose_channel", "win_probability_2"]

DEFAULT_N_MC = 256
_RULE = np.polynomial.legendre.leggauss(64)
_CHECK_RULE = np.polynomial.legendre.leggauss(40)


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
    """(chosen [n] column index, probs [n, C]) for Beta(a, b) arms, `allowed` [n, C] bool:
    one draw per allowed arm decides, and probs are by quadrature; rows quadrature cannot
    serve draw their channel from their Monte Carlo estimate (`mc_probabilities`).

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
    chosen = np.argmax(np.where(allowed, rng.beta(a, b), -1.0), axis=1)
    single = allowed.sum(axis=1) == 1
    smooth = np.where(allowed, (a >= 1.0) & (b >= 1.0), True).all(axis=1) & ~single
    probs = allowed * 1.0  # a single allowed arm: probability 1
    if smooth.any():
        probs[smooth] = win_probabilities(a[smooth], b[smooth], allowed[smooth])
    rough = ~smooth & ~single
    if rough.any():
        probs[rough] = mc_probabilities(a[rough], b[rough], allowed[rough], rng, n_mc)
        cum = np.cumsum(probs[rough], axis=1)
        pick = (cum <= rng.random(cum.shape[0])[:, None] * cum[:, -1:]).sum(axis=1)
        chosen[rough] = np.minimum(pick, cum.shape[1] - 1)
    return chosen, probs


def win_probabilities(a, b, allowed) -> np.ndarray:
    """[n, C] probability that each allowed arm's draw is the largest (quadrature; needs
    a, b >= 1 on allowed arms). 64 nodes from each arm's mean - 10 sd to the highest mean +
    10 sd (a rare arm wins in its own far tail), then, for the rows where a 40-node rule on the
    same range differs from it by more than `SUM_TOLERANCE` of an arm's probability or whose
    probabilities do not sum to 1 within `SUM_TOLERANCE` of their rarest arm's (an arm far
    wider than another: 64 nodes step over the narrow one), `PANEL_NODES` nodes on each panel
    between the arms' `PANEL_CUTS` (their rise resolved)."""
    out = _quadrature(a, b, allowed, 0)
    check = _quadrature(a, b, allowed, 0, _CHECK_RULE)
    rarest = np.where(allowed, out, 1.0).min(axis=1)
    off = np.abs(out.sum(axis=1) - 1.0)
    apart = np.abs(out - check) > SUM_TOLERANCE * np.maximum(out, RAREST_FLOOR)
    redo = np.flatnonzero((off > SUM_TOLERANCE * np.clip(rarest, RAREST_FLOOR, 1.0))
                          | (apart & allowed).any(axis=1))
    if redo.size:
        out[redo] = _quadrature(a[redo], b[redo], allowed[redo], len(PANEL_CUTS))
    return out


SUM_TOLERANCE = 1e-3
"""How far from 1 a row's quadrature probabilities may sum, relative to its rarest arm's
probability, and how far an arm's may lie from the 40-node rule's, relative to its own (an IPS
weight's relative error), before the row is redone on panels."""
RAREST_FLOOR = 1e-6
"""Probability below which the tolerance stops shrinking (1e-9 absolute): the promise is for
arms at p >= 1e-6 (at 1e-4, 1e-7 absolute, a 1e-6 arm went out 25% low)."""
PANEL_CUTS = (-10.0, -5.0, -2.5, -1.0, 0.0, 1.0, 2.5, 5.0, 10.0)
"""Panel edges of the refined quadrature: each other allowed arm's mean + t sd."""
PANEL_NODES = 24
_PANEL_X, _PANEL_W = np.polynomial.legendre.leggauss(PANEL_NODES)


def _quadrature(a, b, allowed, cuts: int, rule=_RULE) -> np.ndarray:
    """`win_probabilities` with one 64-node panel over each arm's mean +- 10 sd (`cuts` 0),
    or panels between the other arms' `PANEL_CUTS` in it."""
    from scipy import special

    n, c = a.shape
    mean, total = a / (a + b), a + b
    sd = np.sqrt(mean * (1.0 - mean) / (total + 1.0))
    out = np.zeros((n, c))
    for k in range(c):
        rows = np.flatnonzero(allowed[:, k])
        if rows.size == 0:
            continue
        ak, bk = a[rows, k], b[rows, k]
        lo = np.maximum(mean[rows, k] - 10.0 * sd[rows, k], 0.0)
        # up to where every arm's draw lies: a rare arm wins in its own far tail
        top = np.where(allowed[rows], mean[rows] + 10.0 * sd[rows], 0.0).max(axis=1)
        hi = np.minimum(np.maximum(mean[rows, k] + 10.0 * sd[rows, k], top), 1.0)
        x, w = (_panels(mean[rows], sd[rows], allowed[rows]) if cuts
                else _one_panel(lo, hi, rule))
        x = np.clip(x, 1e-300, 1.0 - 1e-16)
        log_pdf = ((ak - 1.0)[:, None] * np.log(x) + (bk - 1.0)[:, None] * np.log1p(-x)
                   - special.betaln(ak, bk)[:, None])
        terms = w * np.exp(log_pdf)
        for j in range(c):
            if j != k:
                cdf = special.betainc(a[rows, j, None], b[rows, j, None], x)
                terms *= np.where(allowed[rows, j, None], cdf, 1.0)
        out[rows, k] = terms.sum(axis=1)
    return out


def _one_panel(lo, hi, rule) -> tuple[np.ndarray, np.ndarray]:
    """(nodes [r, len(rule)], weights) of the Gauss-Legendre `rule` on [lo, hi] per row."""
    nodes, weights = rule
    half = (hi - lo)[:, None] / 2.0
    return lo[:, None] + half * (nodes + 1.0), half * weights


def _panels(mean, sd, allowed) -> tuple[np.ndarray, np.ndarray]:
    """(nodes [r, panels * PANEL_NODES], weights) of Gauss-Legendre on each panel of [0, 1]
    cut at every allowed arm's mean + t sd (t in `PANEL_CUTS`): the whole support, a
    skewed arm's far tail included (its mass past mean + 10 sd was 1% of a rare arm's
    probability)."""
    r = mean.shape[0]
    cuts = mean[:, :, None] + sd[:, :, None] * np.array(PANEL_CUTS)  # [r, C, T]
    cuts = np.where(allowed[:, :, None], cuts, 0.0).reshape(r, -1)
    edges = np.sort(np.clip(np.column_stack([np.zeros(r), cuts, np.ones(r)]), 0.0, 1.0), axis=1)
    half = (edges[:, 1:] - edges[:, :-1])[:, :, None] / 2.0  # [r, panels, 1]
    x = edges[:, :-1, None] + half * (_PANEL_X + 1.0)
    return x.reshape(r, -1), (half * _PANEL_W).reshape(r, -1)


def mc_probabilities(a, b, allowed, rng: np.random.Generator, n_mc: int) -> np.ndarray:
    """[n, C] Monte Carlo win frequencies over `n_mc` draws plus one pseudo-draw spread evenly
    over each row's allowed channels (every allowed channel > 0; a row sums to 1)."""
    n, c = a.shape
    cols = np.flatnonzero(allowed.any(axis=0))  # draw only channels somebody may get
    draws = rng.beta(a[:, None, cols], b[:, None, cols], size=(n, n_mc, cols.size))
    winners = cols[np.argmax(np.where(allowed[:, None, cols], draws, -1.0), axis=2)]
    flat = winners + c * np.arange(n)[:, None]
    wins = np.bincount(flat.ravel(), minlength=n * c).reshape(n, c).astype(np.float64)
    wins += allowed / allowed.sum(axis=1, keepdims=True)
    return wins / (n_mc + 1.0)


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
