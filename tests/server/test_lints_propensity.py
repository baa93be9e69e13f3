"""The propensity a lints (contextual Thompson) campaign logs, as `DecisionMaker` decides
ChooseVariant and PlanCampaign: its inverse, the IPS weight of off-policy estimates, averages
1 / p for a rare arm too (256 fixed Monte Carlo draws gave (1 - (1 - p)^257) / p: 51% of it at
p = 0.0026)."""
import numpy as np
import pytest

from kernels import bandits as B
from server.campaigns.policy import DecisionMaker
from server.campaigns.spec import CampaignSpec, Variant
from tests.kernels.test_bandits import _normal_argmax_probs


def _rare_third_arm() -> tuple[CampaignSpec, bytes, float]:
    """A lints campaign whose third arm is chosen with p = 0.0026 (ten 1-rewards for each of
    the first two, ten 0-rewards for the third), its posterior bytes and p."""
    spec = CampaignSpec("c", policy="lints",
                        variants=(Variant("a"), Variant("b"), Variant("c"))).validated()
    state, x = spec.new_state(), np.ones(1)
    for arm, reward in ((0, 1.0), (1, 1.0), (2, 0.0)):
        for _ in range(10):
            state = B.update(state, arm, reward, x)
    p = _normal_argmax_probs(*B.posterior_params(state, x)[1][:2])[2]
    assert p == pytest.approx(0.00259, abs=1e-5)
    return spec, state.to_bytes(), p


def test_a_rare_arms_logged_propensity_gives_an_unbiased_ips_weight():
    spec, blob, p = _rare_third_arm()
    maker = DecisionMaker(B.new_rng(5))
    weights = []
    while len(weights) < 40:
        d = maker.decide(spec, blob, "u", [])
        if d.arm == 2:
            weights.append(1.0 / d.propensity)
    se = np.sqrt((1 - p) / 64 / len(weights))
    assert np.mean(weights) * p == pytest.approx(1.0, abs=5 * se)


def test_planned_decisions_log_the_same_estimate():
    spec, blob, p = _rare_third_arm()
    maker = DecisionMaker(B.new_rng(6))
    weights = []
    while len(weights) < 40:
        batch = maker.decide_batch(spec, blob, ["u"] * 2000, [[]] * 2000)
        weights += [1.0 / q for a, q in zip(batch.arms, batch.propensities) if a == 2]
    se = np.sqrt((1 - p) / 64 / len(weights))
    assert np.mean(weights) * p == pytest.approx(1.0, abs=5 * se)


def test_the_draws_stop_at_the_limit():
    spec, blob, _ = _rare_third_arm()
    maker = DecisionMaker(B.new_rng(7), lints_samples=300)  # 100 draws of 3 arms: 256 at least
    while (d := maker.decide(spec, blob, "u", [])).arm != 2:
        pass
    assert d.propensity * 257 == pytest.approx(round(d.propensity * 257))
