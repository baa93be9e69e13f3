"""Sample sizes of A/B/n tests and time to significance of running fixed splits.

The statistics are `kernels.abtest.sample_size`; this module bounds each request field (a bad
one is `InvalidArgument` naming it) and turns a campaign's counts into a wait.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kernels import abtest
from kernels import bandits as B

from ..errors import InvalidArgument

__all__ = ["SampleSizeAnswer", "SampleSizeQuery", "sample_size", "seconds_to_significance"]

MAX_OBSERVATIONS = 10 ** 15
"""Largest total a sample size may come to (a smaller effect is refused)."""
MAX_ALLOCATION_RATIO = 1000.0
MAX_MAGNITUDE = 1e12
MAX_VARIANCE = 1e24
DEFAULT_ALPHA, DEFAULT_POWER = 0.05, 0.8
_EDGE = 1e-9
"""How far inside (0, 1) an observed rate of 0 or 1 is taken for its time to significance."""


@dataclass(frozen=True)
class SampleSizeQuery:
    """A GetSampleSize request (0 = default for alpha, power and arms)."""

    minimum_detectable_effect: float
    baseline_rate: float | None = None
    baseline_mean: float | None = None
    variance: float = 0.0
    alpha: float = 0.0
    power: float = 0.0
    arms: int = 0
    allocation: tuple[float, ...] = ()


@dataclass(frozen=True)
class SampleSizeAnswer:
    per_arm: tuple[int, ...]
    total: int
    alpha_per_comparison: float
    test: str


def _check(field: str, value: float, ok: bool, bound: str) -> None:
    if not (math.isfinite(value) and ok):
        raise InvalidArgument(field, f"must be {bound}, got {value}")


def _check_metric(q: SampleSizeQuery) -> None:
    effect = q.minimum_detectable_effect
    _check("minimum_detectable_effect", effect, effect != 0 and abs(effect) <= MAX_MAGNITUDE,
           f"non-zero with |effect| <= {MAX_MAGNITUDE:g}")
    if q.baseline_rate is None and q.baseline_mean is None:
        raise InvalidArgument("baseline", "give baseline_rate or baseline_mean (with variance)")
    if q.baseline_rate is not None:
        _check("baseline_rate", q.baseline_rate, 0 < q.baseline_rate < 1, "in (0, 1)")
        if q.variance:
            raise InvalidArgument("variance", "only with baseline_mean (a rate's variance "
                                  "follows from the rate)")
        end = q.baseline_rate + effect
        _check("minimum_detectable_effect", end, 0 < end < 1,
               "such that baseline_rate + effect is in (0, 1)")
        return
    _check("baseline_mean", q.baseline_mean, abs(q.baseline_mean) <= MAX_MAGNITUDE,
           f"finite with |mean| <= {MAX_MAGNITUDE:g}")
    _check("variance", q.variance, 0 < q.variance <= MAX_VARIANCE, f"in (0, {MAX_VARIANCE:g}]")


def _check_design(q: SampleSizeQuery, max_arms: int
                  ) -> tuple[float, float, int, tuple[float, ...] | None]:
    alpha, power = q.alpha or DEFAULT_ALPHA, q.power or DEFAULT_POWER
    _check("alpha", alpha, 0 < alpha <= 0.5, "in (0, 0.5] (0 = 0.05)")
    _check("power", power, 0.5 <= power <= 0.9999, "in [0.5, 0.9999] (0 = 0.8)")
    if len(q.allocation) > max_arms:
        raise InvalidArgument("allocation", f"{len(q.allocation)} weights, at most {max_arms}")
    arms = q.arms or len(q.allocation) or 2
    if not 2 <= arms <= max_arms:
        raise InvalidArgument("arms", f"must be 2..{max_arms} (0 = 2), got {arms}")
    if not q.allocation:
        return alpha, power, arms, None
    w = np.asarray(q.allocation, dtype=np.float64)
    if len(w) != arms:
        raise InvalidArgument("allocation", f"{len(w)} weights for {arms} arms")
    if not (np.isfinite(w).all() and (w > 0).all() and w.max() <= MAX_ALLOCATION_RATIO * w.min()):
        raise InvalidArgument("allocation", "need finite weights > 0 with largest / smallest "
                              f"<= {MAX_ALLOCATION_RATIO:g}, got {list(q.allocation)[:10]}")
    return alpha, power, arms, tuple(w.tolist())


def sample_size(q: SampleSizeQuery, max_arms: int) -> SampleSizeAnswer:
    """Observations per arm (control first) so each comparison with the control has `power`;
    at most `max_arms` arms (a campaign's variant limit)."""
    _check_metric(q)
    alpha, power, arms, allocation = _check_design(q, max_arms)
    sd = None if q.baseline_rate is not None else math.sqrt(q.variance)
    try:
        size = abtest.sample_size(q.minimum_detectable_effect, baseline_rate=q.baseline_rate,
                                  sd=sd, alpha=alpha, power=power, arms=arms,
                                  allocation=allocation)
    except ValueError:  # every other input is checked above: only "too small" is left
        size = None
    if size is None or size.total > MAX_OBSERVATIONS:
        raise InvalidArgument("minimum_detectable_effect", f"too small: detecting it needs more "
                              f"than {MAX_OBSERVATIONS:.0e} observations")
    test = "two-proportion z-test" if sd is None else "two-sample t-test"
    return SampleSizeAnswer(size.per_arm, size.total, size.alpha, test)


def seconds_to_significance(row: dict, state: B.BanditState, decisions: Sequence[int],
                            elapsed: float) -> float:
    """Expected wait until the AbRow `row` (ab_analysis) is significant at alpha 0.05 with
    power 0.8, if its observed difference is the true one (inf when that cannot happen: no
    difference, zero variance, an arm without traffic); an observed rate of 0 or 1 counts."""
    c, t = row["control"], row["arm"]
    n, s, ss = state.n, state.s, state.ss
    mean_c = s[c] / n[c]
    try:
        if state.params.reward_model == 0.0:
            # An observed rate may be 0 or 1 (no conversion yet, or every one): the size is
            # defined there, but the calculator takes rates inside (0, 1) only.
            lo, hi = np.clip([mean_c, mean_c + row["diff"]], _EDGE, 1.0 - _EDGE)
            size = abtest.sample_size(hi - lo, baseline_rate=lo,
                                      allocation=[state.weights[c], state.weights[t]])
        else:
            var = [max(ss[a] - s[a] * s[a] / n[a], 0.0) / max(n[a] - 1, 1) for a in (c, t)]
            size = abtest.sample_size(row["diff"], sd=math.sqrt(sum(var) / 2),
                                      allocation=[state.weights[c], state.weights[t]])
    except ValueError:  # no difference, a rate at 0 or 1, zero variance, an arm without weight
        return math.inf
    wait = 0.0
    for arm, need in zip((c, t), size.per_arm):
        missing = need - n[arm]
        if missing > 0:
            rate = decisions[arm] / elapsed if elapsed > 0 and arm < len(decisions) else 0.0
            wait = max(wait, missing / rate if rate > 0 else math.inf)
    return wait
