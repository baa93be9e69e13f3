"""Decisions with propensities, kept cheap on the ChooseVariant path.

* ucb1, egreedy, linucb, fixed: `kernels.bandits.choose`; propensities are exact.
* lints (contextual Thompson): the arm is the argmax of one draw from the exact posterior, and
  its propensity depends on the request's context (nothing can be cached): it is estimated by
  inverse sampling (`kernels._bandits.ts_choose_inverse`): more draws until the chosen arm has
  won `CONTEXTUAL_WINS` of them, N in all, log wins / N. N / wins is an exactly unbiased
  inverse propensity (the IPS weight; 256 fixed draws undervalued rare arms: an arm at
  p = 0.003 was weighted 46% low), with relative standard error sqrt((1 - p) / wins) <= 0.125.
  N averages wins / p, so a decision costs about wins * K draws on average; the draws stop at
  `Limits.lints_propensity_samples` / K, past which (arms rarer than about
  wins * K / samples) the weight is biased low again (docs/operations.md, "Campaign
  decisions").
* bernoulli_ts, gaussian_ts: the Thompson probabilities depend only on the posterior, so they are
  estimated once per (campaign, posterior bytes) with `n_mc = clip(20000 / K, 256, 4096)` draws
  (about 1 ms; standard error <= 0.5 / sqrt(n_mc), e.g. 0.011 at K = 10) plus one pseudo-draw
  spread evenly over the arms (every arm keeps propensity >= 1 / (K (n_mc + 1))). The arm is
  then *sampled from that vector*, so the logged propensity is exactly the probability with which
  the served policy chose the arm (IPS/DR stay unbiased); the Monte Carlo error only makes the
  served policy differ slightly from ideal Thompson sampling. While rewards keep changing the
  posterior, the vector is re-estimated at most every `refresh_s` seconds per campaign and
  process (the served policy lags the posterior by at most that long).
"""
from __future__ import annotations

import bisect
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernels import bandits as B

from .context import ContextBuilder
from .spec import CampaignSpec

__all__ = ["DecisionMaker", "thompson_probs", "PROPENSITY_DRAWS"]

PROPENSITY_DRAWS = 20000
"""Arm-draws per cached Thompson estimate (n_mc * K)."""
CONTEXTUAL_DRAWS = 256
CONTEXTUAL_WINS = 64
"""Wins of the chosen arm behind a lints propensity (inverse sampling; see the module doc)."""
_CACHED = ("bernoulli_ts", "gaussian_ts")


def thompson_probs(state: B.BanditState, rng, n_mc: int) -> np.ndarray:
    """P(arm is Thompson's choice) from `n_mc` posterior draws plus one even pseudo-draw."""
    if state.params.holdout:  # the holdout is decided before, by hash; these are the rest
        state = dataclasses.replace(state, params=dataclasses.replace(state.params, holdout=0.0))
    d = B.choose(state, rng, n_mc=n_mc)
    wins = d.probs * (n_mc + 1.0)
    wins[d.arm] -= 1.0  # `choose` counts its own decision draw in; keep only the n_mc draws
    return (np.maximum(wins, 0.0) + 1.0 / state.n_arms) / (n_mc + 1.0)


@dataclass
class _Probs:
    blob: bytes
    at: float
    probs: np.ndarray
    cum: list[float]
    """Cumulative probabilities, a list: bisect keeps the GIL, np.searchsorted releases it."""


class DecisionMaker:
    def __init__(self, rng, refresh_s: float = 0.25, lints_samples: int = 65_536):
        self.rng = rng
        self.refresh_s = refresh_s
        self.lints_samples = lints_samples
        self._cache: dict[str, _Probs] = {}

    def decide(self, spec: CampaignSpec, blob: bytes, user_id: str,
               context: Sequence[float]) -> B.Decision:
        if spec.policy in _CACHED:
            holdout = spec.params.get("holdout", 0.0)
            if holdout > 0 and B.hash_unit(spec.salt, user_id, "holdout") < holdout:
                return B.Decision(B.HOLDOUT, holdout, None)  # as `kernels.bandits.choose` does
            entry = self._thompson(spec.campaign_id, blob)
            arm = min(bisect.bisect_right(entry.cum, self.rng.uniform()), entry.probs.size - 1)
            return B.Decision(arm, float(entry.probs[arm]), entry.probs)
        state = B.BanditState.from_bytes(blob)
        return B.choose(state, self.rng, ContextBuilder.policy_x(context, spec.dim),
                        user_id=user_id, salt=spec.salt, n_mc=CONTEXTUAL_DRAWS,
                        wins=CONTEXTUAL_WINS, max_samples=self.lints_samples)

    def decide_batch(self, spec: CampaignSpec, blob: bytes, user_ids: Sequence[str],
                     contexts: Sequence[Sequence[float]]) -> B.BatchDecision:
        """`decide` for every user of a batch with one `kernels.bandits.choose_batch` call:
        the Thompson policies draw every arm from the same cached probability vector."""
        state = B.BanditState.from_bytes(blob)
        probs = self._thompson(spec.campaign_id, blob).probs if spec.policy in _CACHED else None
        x = None
        if spec.dim:  # the linear policies' input: a bias then the context, per user
            x = np.ones((len(user_ids), spec.dim))
            if spec.dim > 1 and user_ids:  # none: every user of the slice was suppressed
                x[:, 1:] = contexts
        return B.choose_batch(state, self.rng, user_ids, x, salt=spec.salt,
                              n_mc=CONTEXTUAL_DRAWS, wins=CONTEXTUAL_WINS,
                              max_samples=self.lints_samples, probs=probs)

    def _thompson(self, campaign_id: str, blob: bytes) -> _Probs:
        entry = self._cache.get(campaign_id)
        now = time.monotonic()
        if entry is not None and (entry.blob == blob or now - entry.at < self.refresh_s):
            return entry
        state = B.BanditState.from_bytes(blob)
        n_mc = int(np.clip(PROPENSITY_DRAWS // state.n_arms, 256, 4096))
        probs = thompson_probs(state, self.rng, n_mc)
        entry = self._cache[campaign_id] = _Probs(blob, now, probs, np.cumsum(probs).tolist())
        return entry
