"""The canary guardrails: compare the canary with the active version and decide.

`Guardrails.judge` is a pure function of the summed counts (`tally.Counts` per version) and, when
the impression log reports them, the online outcomes (impressions, impressions with a click) per
version: in the server those shown since the canary started and past their click window, with
their clicks (`monitor.CanaryMonitor`). It answers abort, promote or wait:

* abort at once when a guardrail fails, each judged once the canary has served
  `guard_min_requests` requests (impressions for the CTR):
  - error rate: canary rate > active rate + `max_error_rate_increase`;
  - latency: canary p99 > active p99 x `max_p99_ratio` + `p99_slack_ms`;
  - CTR: the always-valid mSPRT p-value of (canary CTR - active CTR) = 0 (`kernels.abtest.msprt`,
    the campaigns' sequential test; running minimum over this canary's looks) is <= `ctr_alpha`
    with the canary below. Peeking at every check keeps the false-abort rate <= `ctr_alpha`.
* promote when no guardrail fails, each version served `min_requests` requests and, with
  outcomes, each showed `min_impressions` impressions and the always-valid lower bound of the
  CTR difference (the same mixture's confidence sequence) is above -`ctr_margin` (not worse by
  more than the margin); with `auto_promote` off it waits, saying it is ready.
* wait otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from kernels import abtest

from .tally import Counts

__all__ = ["CtrLook", "GuardrailPolicy", "Guardrails", "Verdict", "ctr_look"]

ABORT, PROMOTE, WAIT = "abort", "promote", "wait"


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    """Thresholds of the guardrails (Settings `canary_*`; docs/operations.md)."""

    min_requests: int = 1000
    guard_min_requests: int = 50
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 5.0
    min_impressions: int = 1000
    ctr_alpha: float = 0.05
    ctr_tau: float = 0.0
    ctr_margin: float = 0.005
    auto_promote: bool = True

    @classmethod
    def from_settings(cls, s) -> GuardrailPolicy:
        return cls(s.canary_min_requests, s.canary_guard_min_requests,
                   s.canary_max_error_rate_increase, s.canary_max_p99_ratio, s.canary_p99_slack_ms,
                   s.canary_min_impressions, s.canary_ctr_alpha, s.canary_ctr_tau,
                   s.canary_ctr_margin, s.canary_auto_promote)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str
    """"abort", "promote" or "wait"."""
    reason: str


@dataclass(frozen=True, slots=True)
class CtrLook:
    """One look at the CTR difference (canary - active)."""

    diff: float
    pvalue: float
    """Always-valid p-value of diff = 0 at this look (not yet the running minimum)."""
    lower: float
    """Always-valid lower confidence bound of the difference at level 1 - alpha."""


def ctr_look(stable: tuple[int, int], canary: tuple[int, int], alpha: float,
             tau: float = 0.0) -> CtrLook:
    """mSPRT of (canary CTR - active CTR) from (impressions, clicked impressions) of each.

    The variance is p(1 - p)/n per version; the mixture is N(0, tau^2), tau defaulting (0) to
    10% of the pooled CTR of both versions, as the campaigns' `ab_analysis` does (of the active
    version's alone it was 0 while nobody clicked it, and a clicked canary then waited forever
    for a bound of -4.8). The bound is the set of
    differences the test does not reject: diff - h with
    h^2 = 2V(V + tau^2)/tau^2 * (ln(1/alpha) + ln((V + tau^2)/V)/2).
    """
    (n_s, x_s), (n_c, x_c) = stable, canary
    p_s, p_c = x_s / n_s, x_c / n_c
    var = max(p_s * (1 - p_s) / n_s + p_c * (1 - p_c) / n_c, 1e-12)
    pooled = (x_s + x_c) / (n_s + n_c)
    tau2 = tau * tau if tau > 0 else max((0.1 * pooled) ** 2, 1e-12)
    diff = p_c - p_s
    pvalue = float(abtest.msprt(diff, var, tau2)[-1])
    half = math.sqrt(2 * var * (var + tau2) / tau2
                     * (math.log(1 / alpha) + 0.5 * math.log((var + tau2) / var)))
    return CtrLook(diff, pvalue, diff - half)


class Guardrails:
    """Judges one canary after another; keeps the running minimum of the CTR p-value."""

    def __init__(self, policy: GuardrailPolicy):
        self.policy = policy
        self._canary_id = ""
        self.p_min = 1.0

    def judge(self, canary_id: str, stable: Counts, canary: Counts,
              outcomes: tuple[tuple[int, int], tuple[int, int]] | None = None) -> Verdict:
        """The verdict on canary `canary_id`; `outcomes`: ((impressions, clicked) of the active
        version, the same of the canary), or None when no impression log reports them."""
        if canary_id != self._canary_id:
            self._canary_id, self.p_min = canary_id, 1.0
        failed = self._failed(stable, canary)
        look = None
        if failed is None and outcomes is not None:
            look, failed = self._ctr(*outcomes)
        if failed is not None:
            return Verdict(ABORT, failed)
        return self._promotion(stable, canary, outcomes, look)

    def _failed(self, stable: Counts, canary: Counts) -> str | None:
        pol = self.policy
        if canary.requests < pol.guard_min_requests:
            return None
        if canary.error_rate > stable.error_rate + pol.max_error_rate_increase:
            return (f"error rate {canary.error_rate:.4f} of {canary.requests} canary requests > "
                    f"{stable.error_rate:.4f} (active) + {pol.max_error_rate_increase:g}")
        if stable.requests >= pol.guard_min_requests:
            p99_c, p99_s = canary.quantile_ms(), stable.quantile_ms()
            if p99_c > p99_s * pol.max_p99_ratio + pol.p99_slack_ms:
                return (f"p99 latency {p99_c:.1f} ms > {p99_s:.1f} ms (active) x "
                        f"{pol.max_p99_ratio:g} + {pol.p99_slack_ms:g} ms")
        return None

    def _ctr(self, stable: tuple[int, int], canary: tuple[int, int]):
        pol = self.policy
        if min(stable[0], canary[0]) < max(pol.guard_min_requests, 1):
            return None, None
        look = ctr_look(stable, canary, pol.ctr_alpha, pol.ctr_tau)
        self.p_min = min(self.p_min, look.pvalue)
        if self.p_min <= pol.ctr_alpha and look.diff < 0:
            return look, (f"CTR {canary[1] / canary[0]:.4f} below {stable[1] / stable[0]:.4f} "
                          f"(active): always-valid p {self.p_min:.3g} <= {pol.ctr_alpha:g}")
        return look, None

    def _promotion(self, stable: Counts, canary: Counts, outcomes, look: CtrLook | None) -> Verdict:
        pol = self.policy
        if min(stable.requests, canary.requests) < pol.min_requests:
            return Verdict(WAIT, f"{canary.requests} canary / {stable.requests} active requests "
                                 f"of the {pol.min_requests} each needs")
        if outcomes is not None:
            shown = min(outcomes[0][0], outcomes[1][0])
            if look is None or shown < pol.min_impressions:
                return Verdict(WAIT, f"{shown} impressions of the {pol.min_impressions} each "
                                     "version needs")
            if look.lower < -pol.ctr_margin:
                return Verdict(WAIT, f"CTR difference {look.diff:+.4f}, lower bound "
                                     f"{look.lower:+.4f} not yet above -{pol.ctr_margin:g}")
        if not pol.auto_promote:
            return Verdict(WAIT, "no worse: ready to promote (auto promote is off)")
        return Verdict(PROMOTE, "no worse after the minimum sample: "
                       f"error rate {canary.error_rate:.4f} vs {stable.error_rate:.4f}, "
                       f"p99 {canary.quantile_ms():.1f} vs {stable.quantile_ms():.1f} ms"
                       + (f", CTR difference {look.diff:+.4f} (lower bound {look.lower:+.4f})"
                          if look is not None else ""))
