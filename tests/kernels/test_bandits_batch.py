"""`choose_batch`: every user of a batch decided as `choose` would decide them alone."""
import numpy as np
import pytest
from scipy import stats

from kernels import bandits as B

NATIVE = (True, False)
USERS = [f"user-{i}" for i in range(4000)]


@pytest.mark.parametrize("use_native", NATIVE)
def test_fixed_split_and_holdout_match_choose_user_by_user(use_native):
    state = B.new_state("fixed", 3, weights=[1, 2, 5], holdout=0.1)
    rng = B.new_rng(1, use_native)
    got = B.choose_batch(state, rng, USERS[:500], salt="s", use_native=use_native)
    for user, arm, prop in zip(USERS[:500], got.arms, got.propensities):
        one = B.choose(state, rng, user_id=user, salt="s", use_native=use_native)
        assert (arm, prop) == (one.arm, one.propensity)
    assert set(got.propensities) <= {0.1, 1 / 8, 2 / 8, 5 / 8}  # the holdout share or a weight


@pytest.mark.parametrize("use_native", NATIVE)
@pytest.mark.parametrize("policy,params", [("egreedy", {"epsilon": 0.3}), ("ucb1", {}),
                                           ("bernoulli_ts", {})])
def test_draws_follow_the_logged_propensities(policy, params, use_native):
    state = B.new_state(policy, 3, **params)
    for arm, reward in [(0, 1.0), (1, 0.0), (2, 0.0), (0, 1.0)]:
        state = B.update(state, arm, reward)
    got = B.choose_batch(state, B.new_rng(2, use_native), USERS, n_mc=4000,
                         use_native=use_native)
    probs = np.zeros(3)
    probs[got.arms] = got.propensities  # one probability per arm, logged with each draw
    assert probs.sum() == pytest.approx(1.0)
    counts = np.bincount(got.arms, minlength=3)
    seen = probs > 0
    if seen.sum() > 1:
        assert stats.chisquare(counts[seen], probs[seen] * len(USERS)).pvalue > 1e-4
    assert np.all(counts[~seen] == 0)
    if policy == "egreedy":  # by hand: greedy arm 0 gets 1 - eps + eps / 3
        assert probs == pytest.approx([0.8, 0.1, 0.1])
    if policy == "ucb1":  # by hand: 1 + sqrt(2 ln 4 / 2) = 2.18 beats 0 + sqrt(2 ln 4) = 1.67
        assert list(probs) == [1.0, 0.0, 0.0]


def test_holdout_is_decided_by_hash_before_the_policy():
    state = B.new_state("bernoulli_ts", 2, holdout=0.5)
    got = B.choose_batch(state, B.new_rng(3), USERS[:200], salt="c", n_mc=256)
    held = [B.hash_unit("c", u, "holdout") < 0.5 for u in USERS[:200]]
    assert list(got.arms == B.HOLDOUT) == held
    assert np.all(got.propensities[got.arms == B.HOLDOUT] == 0.5)


def test_linear_policies_decide_each_row_of_x():
    state = B.new_state("linucb", 2, 2, alpha=0.0)
    state = B.update(state, 0, 1.0, [1.0, 1.0])  # arm 0 rewarded where x[1] = 1
    state = B.update(state, 1, 1.0, [1.0, -1.0])  # arm 1 where x[1] = -1
    x = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    got = B.choose_batch(state, B.new_rng(4), USERS[:3], x)
    assert list(got.arms) == [0, 1, 0] and np.all(got.propensities == 1.0)


def test_sample_arms_uses_one_uniform_per_draw():
    a, b = B.new_rng(5), B.new_rng(5)
    arms = B.sample_arms(np.array([0.2, 0.3, 0.5]), a, 6)
    u = b.random(6)
    assert list(arms) == [0 if x < 0.2 else 1 if x < 0.5 else 2 for x in u]
