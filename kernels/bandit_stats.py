"""Posterior statistics of a campaign's bandit state: intervals, P(best), expected loss, A/B.

Kept apart from `kernels.bandits` (the decision path) because it needs scipy: the writer
processes and the decision path import the policies without it. `server.campaigns` imports this
module in every process, writers included, so scipy is imported when the statistics are asked for.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from kernels import _bandits, abtest
from kernels.bandits import KIND_BETA, BanditState, _draw_numpy, posterior_params

__all__ = ["campaign_stats", "stats_view"]


def stats_view(state: BanditState) -> BanditState:
    """`state` as its statistics read it. The Beta-Bernoulli model (``reward_model`` 0, the
    default of every policy but gaussian_ts) describes rewards in [0, 1] (conversions); an
    arm that took rewards outside [0, 1] (revenue, a score: any policy but bernoulli_ts takes
    them) is read with the Normal-inverse-gamma model (1) instead, which describes any real
    reward. Read as rates, such rewards gave a posterior mean pinned near 1 for every arm, a
    NaN z-test interval and p = 1. Seen on the sufficient statistics (discounted or not): with
    every reward r in [0, 1], 0 <= s <= n and ss <= s (r * r <= r), equal for 0/1 rewards."""
    p = state.params
    if state.policy == "bernoulli_ts" or p.reward_model != 0.0:
        return state
    n, s, ss = state.n, state.s, state.ss
    tol = 1e-9 * np.maximum(1.0, np.abs(n))
    if np.all((s >= -tol) & (s <= n + tol) & (ss <= s + tol)):
        return state
    return dataclasses.replace(state, params=dataclasses.replace(p, reward_model=1.0))


def campaign_stats(state: BanditState, rng, *, n_mc: int = 20000, use_native: bool = True,
                   assigned=None) -> dict:
    """Per-arm pulls, rewards, posterior mean, 95% interval, P(best) and expected loss.

    The model is Beta-Bernoulli (``reward_model`` 0) or Normal-inverse-gamma (1) on (n, s, ss),
    whatever the policy (Normal for rewards outside [0, 1] under 0: `stats_view`); P(best)
    and expected loss E[max_j mu_j - mu_a] are Monte Carlo
    (standard error <= 0.5 / sqrt(n_mc) for P(best)). Linear policies report the context-free
    view of the same rewards. Fixed splits add ``ab``: `kernels.abtest.ab_analysis` rows
    (every variant against arm 0: z-test or Welch, P(beat control), mSPRT p-value, SRM on
    ``assigned``, the decisions per arm, when given).
    """
    from scipy import stats as sps
    state = stats_view(state)
    kind, post = posterior_params(state) if state.policy != "lints" else \
        posterior_params(dataclasses.replace(state, policy="ucb1"))
    if kind == KIND_BETA:
        mean = post[0] / (post[0] + post[1])
        lo, hi = sps.beta.ppf([[0.025], [0.975]], post[0], post[1])
    else:
        mean = post[0]
        scale = np.sqrt(post[3] / (post[2] * post[1]))
        lo, hi = sps.t.ppf([[0.025], [0.975]], 2.0 * post[2], post[0], scale)
    wins, loss = np.empty(state.n_arms), np.empty(state.n_arms)
    if use_native:
        _bandits.prob_best(kind, post, rng, n_mc, wins, loss)
    else:
        draws = _draw_numpy(kind, post, rng, n_mc)
        wins = np.bincount(np.argmax(draws, 1), minlength=state.n_arms) / n_mc
        loss = (draws.max(1, keepdims=True) - draws).mean(0)
    out = {"pulls": state.n.copy(), "rewards": state.s.copy(), "mean": mean,
           "ci_low": lo, "ci_high": hi, "prob_best": wins, "expected_loss": loss}
    if state.policy == "fixed":
        out["ab"] = abtest.ab_analysis(state.n, state.s, state.ss, state.weights,
                                       binary=state.params.reward_model == 0.0,
                                       assigned=assigned)
    return out
