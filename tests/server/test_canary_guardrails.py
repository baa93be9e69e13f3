"""The canary split and the guardrail decision, on hand-derived counts (no server needed)."""
import dataclasses
import math

import pytest

from server.models.canary import CanarySplit
from server.models.guardrails import GuardrailPolicy, Guardrails, ctr_look
from server.models.tally import BOUNDS_MS, Counts, Tally

USERS = [f"user-{i}" for i in range(20_000)]


def test_split_share_is_the_hash_share_and_stable_per_user():
    split = CanarySplit.new("v2", "v1", 0.2)
    mask = split.mask(USERS)
    assert abs(mask.mean() - 0.2) < 0.01  # binomial sd 0.0028 at n = 20,000
    assert [split.in_canary(u) for u in USERS[:500]] == mask[:500].tolist()
    again = CanarySplit.decode(split.encode())  # what another worker reads from the store
    assert (again.mask(USERS) == mask).all()


def test_a_new_canary_draws_users_independently_of_the_last():
    a, b = CanarySplit.new("v2", "v1", 0.5), CanarySplit.new("v3", "v1", 0.5)
    both = (a.mask(USERS) & b.mask(USERS)).mean()
    assert abs(both - 0.25) < 0.015  # independent halves overlap on a quarter


def test_outcomes_count_from_the_canary_baseline():
    split = CanarySplit.new("v2", "v1", 0.5, {"v1": (1000, 400), "v2": (10, 1)})
    again = CanarySplit.decode(split.encode())
    assert again.baseline == {"v1": (1000, 400), "v2": (10, 1)}
    assert again.since_start("v1", (1100, 420)) == (100, 20)
    assert again.since_start("v2", (60, 1)) == (50, 0)
    # clicks joined to answers shown before the start never exceed the impressions since
    assert again.since_start("v1", (1005, 420)) == (5, 5)
    old = CanarySplit.decode(b'{"id": "c", "version": "v2", "stable": "v1", "share": 0.5, '
                             b'"started": 0.0}')  # a record written before baselines
    assert old.baseline == {} and old.since_start("v1", (7, 3)) == (7, 3)


def _counts(requests: int, errors: int = 0, ms: float = 2.0) -> Counts:
    tally = Tally()
    for i in range(requests):
        tally.observe("v", ms / 1000.0, i < errors)
    return tally.versions["v"]


POLICY = GuardrailPolicy(min_requests=100, guard_min_requests=50, min_impressions=1000,
                         ctr_alpha=0.05, ctr_tau=0.01, ctr_margin=0.01)


def test_error_rate_guardrail_aborts_at_once():
    verdict = Guardrails(POLICY).judge("c", _counts(1000), _counts(60, errors=3))
    assert verdict.action == "abort" and "error rate 0.0500" in verdict.reason


def test_latency_guardrail_compares_p99_bucket_bounds():
    stable, slow = _counts(200, ms=2.0), _counts(60, ms=20.0)
    # 2 ms falls in the bucket ending 0.1 x 1.25^14 = 2.27 ms, 20 ms in the one ending 21.2 ms
    assert stable.quantile_ms() == pytest.approx(0.1 * 1.25 ** 14)
    assert slow.quantile_ms() == pytest.approx(0.1 * 1.25 ** 24)
    verdict = Guardrails(POLICY).judge("c", stable, slow)  # 21.2 > 2.27 x 1.5 + 5
    assert verdict.action == "abort" and "p99" in verdict.reason
    # 6 ms: the bucket ending 0.1 x 1.25^19 = 6.94 ms, below 8.41 ms
    assert Guardrails(POLICY).judge("c", stable, _counts(60, ms=6.0)).action == "wait"


def test_no_worse_canary_is_promoted_only_after_the_minimum_sample():
    rails = Guardrails(POLICY)
    assert rails.judge("c", _counts(1000), _counts(99)).action == "wait"
    assert rails.judge("c", _counts(1000), _counts(100)).action == "promote"
    off = Guardrails(dataclasses.replace(POLICY, auto_promote=False))
    verdict = off.judge("c", _counts(1000), _counts(100))
    assert verdict.action == "wait" and "ready to promote" in verdict.reason


class Log:
    """The impression log's `counts(version)` as the lead wires it: a real callable."""

    def __init__(self, counts: dict[str, tuple[int, int]]):
        self.table = counts

    def __call__(self, version: str) -> tuple[int, int]:
        return self.table[version]


def test_ctr_test_aborts_a_canary_with_a_lower_click_rate():
    log = Log({"v1": (10_000, 1000), "v2": (2000, 140)})
    # By hand: V = .1 x .9 / 10000 + .07 x .93 / 2000 = 4.155e-5, tau^2 = 1e-4, d = -.03:
    # ln L = ln(V / (V + tau^2)) / 2 + tau^2 d^2 / (2 V (V + tau^2)) = -0.6129 + 7.6512 = 7.0383
    look = ctr_look(log("v1"), log("v2"), 0.05, 0.01)
    assert look.pvalue == pytest.approx(math.exp(-7.0383), rel=1e-3)
    verdict = Guardrails(POLICY).judge("c", _counts(1000), _counts(100), (log("v1"), log("v2")))
    assert verdict.action == "abort" and "CTR 0.0700 below 0.1000" in verdict.reason


def test_ctr_test_promotes_when_the_lower_bound_is_within_the_margin():
    log = Log({"v1": (20_000, 2000), "v2": (20_000, 2000)})
    # By hand: V = 2 x .09 / 20000 = 9e-6; h^2 = 2V(V + tau^2) / tau^2 x (ln 20 + ln(12.111) / 2)
    # = 1.962e-5 x 4.2428 = 8.3244e-5, h = 0.009124: lower bound -0.009124
    look = ctr_look(log("v1"), log("v2"), 0.05, 0.01)
    assert look.lower == pytest.approx(-0.009124, rel=1e-3)
    outcomes = (log("v1"), log("v2"))
    assert Guardrails(POLICY).judge("c", _counts(1000), _counts(100), outcomes).action == "promote"
    strict = GuardrailPolicy(min_requests=100, ctr_tau=0.01, ctr_margin=0.005)
    verdict = Guardrails(strict).judge("c", _counts(1000), _counts(100), outcomes)
    assert verdict.action == "wait" and "lower bound -0.0091" in verdict.reason


def test_ctr_waits_for_the_minimum_impressions_and_keeps_the_running_minimum():
    rails = Guardrails(POLICY)
    few = (Log({"v": (500, 50)})("v"), (500, 50))
    assert rails.judge("c", _counts(1000), _counts(100), few).action == "wait"
    worse = ((10_000, 1000), (2000, 140))
    assert rails.judge("c", _counts(1000), _counts(100), worse).action == "abort"
    low_p = rails.p_min
    # a later look with the canary above does not raise the always-valid p-value back (and its
    # lower bound, 0.01 - 0.0253 by the formula above, is not within the margin yet)
    assert rails.judge("c", _counts(1000), _counts(100), ((10_000, 1000), (2000, 220))).action == "wait"
    assert rails.p_min == low_p
    rails.judge("d", _counts(1000), _counts(100), few)  # a new canary starts afresh
    assert rails.p_min == 1.0


def test_tallies_of_workers_add_up():
    a, b = Tally(), Tally()
    a.reset("c"), b.reset("c")
    a.observe("v1", 0.001, False)
    b.observe("v1", 0.5, True)
    b.observe("v2", 0.002, False)
    other = Tally()
    other.reset("old")
    other.observe("v1", 0.001, False)
    total = Tally.merge([a.encode(), b.encode(), other.encode()], "c")
    assert (total["v1"].requests, total["v1"].errors, total["v2"].requests) == (2, 1, 1)
    assert total["v1"].quantile_ms(0.5) == BOUNDS_MS[11]  # 0.1 x 1.25^11 = 1.16 ms: first >= 1 ms
    assert total["v1"].quantile_ms(0.99) == BOUNDS_MS[39]  # 0.1 x 1.25^39 = 606 ms: first >= 500


def test_a_canary_clicked_beside_an_active_version_nobody_clicks_can_be_promoted():
    """The default mixture (ctr_tau 0) was 10% of the active CTR: 0 while the active version had
    no click, and the always-valid bound was then -4.84: the better canary waited forever. It is
    10% of the pooled CTR, 50 / 10,000 (as the campaigns' tests): by hand tau^2 = 2.5e-7,
    V = .01 x .99 / 5000 = 1.98e-6, h^2 = 2V(V + tau^2) / tau^2 x (ln 20 + ln((V + tau^2) / V) / 2)
    = 3.53232e-5 x 3.055184 = 1.079189e-4: lower bound 0.01 - 0.0103884 = -0.0003884."""
    stable, canary = (5000, 0), (5000, 50)
    look = ctr_look(stable, canary, 0.05)
    assert look.lower == pytest.approx(-0.0003884, abs=2e-7)
    policy = dataclasses.replace(POLICY, ctr_tau=0.0, ctr_margin=0.005)
    verdict = Guardrails(policy).judge("c", _counts(1000), _counts(100), (stable, canary))
    assert verdict.action == "promote"
