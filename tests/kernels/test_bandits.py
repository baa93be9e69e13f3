import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kernels import _rng
from kernels import bandits as B
from kernels.bandit_stats import campaign_stats, stats_view

NATIVE = (True, False)


def _played(policy, k=4, d=0, steps=60, seed=0, **params):
    """A state after `steps` random pulls with Bernoulli rewards (contexts if linear)."""
    rng = np.random.default_rng(seed)
    state = B.new_state(policy, k, d, **params)
    for _ in range(steps):
        x = rng.normal(size=d) if d else None
        state = B.update(state, int(rng.integers(k)), float(rng.random() < 0.3), x, inplace=True)
    return state


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(B.POLICIES), st.sampled_from([1.0, 0.9]),
       st.lists(st.tuples(st.integers(0, 3), st.floats(-2, 2)), min_size=1, max_size=20))
def test_update_native_matches_numpy(policy, gamma, pulls):
    d = 3 if policy in B.LINEAR else 0
    a = b = B.new_state(policy, 4, d, gamma=gamma)
    for i, (arm, reward) in enumerate(pulls):
        x = np.arange(d) * 0.5 - i * 0.1 if d else None
        a, b = B.update(a, arm, reward, x), B.update(b, arm, reward, x, use_native=False)
    for name in ("n", "s", "ss", "A", "b"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)


def test_update_is_pure_and_bytes_roundtrip():
    state = _played("linucb", d=3, gamma=0.95, holdout=0.2)
    before = state.to_bytes()
    after = B.update(state, 1, 1.0, np.ones(3))
    assert state.to_bytes() == before
    assert B.update_bytes(before, 1, 1.0, np.ones(3)) == after.to_bytes()
    back = B.BanditState.from_bytes(after.to_bytes())
    assert back.policy == "linucb" and back.params == after.params
    np.testing.assert_array_equal(back.A, after.A)


def test_from_bytes_rejects_garbage():
    with pytest.raises(ValueError, match="BanditState"):
        B.BanditState.from_bytes(b"XXXX" + bytes(200))


def test_discounting_bounds_the_effective_count():
    state = _played("bernoulli_ts", steps=500, gamma=0.9)
    assert state.n.sum() == pytest.approx((1 - 0.9 ** 500) / 0.1)


@pytest.mark.parametrize("use_native", NATIVE)
def test_ucb1_scores_and_choice_match_numpy_exactly(use_native):
    state = _played("ucb1", k=6, steps=100, c=0.5)
    np.testing.assert_allclose(B.ucb1_scores(state, use_native), B.ucb1_scores(state, False),
                               rtol=1e-12)
    dec = B.choose(state, B.new_rng(0, use_native), use_native=use_native)
    assert dec.arm == int(np.argmax(B.ucb1_scores(state, False))) and dec.propensity == 1.0


@pytest.mark.parametrize("use_native", NATIVE)
def test_ucb1_splits_ties_among_untried_arms(use_native):
    state = B.update(B.new_state("ucb1", 4), 2, 1.0)
    rng = B.new_rng(3, use_native)
    decs = [B.choose(state, rng, use_native=use_native) for _ in range(3000)]
    np.testing.assert_array_equal(decs[0].probs, [1 / 3, 1 / 3, 0, 1 / 3])
    counts = np.bincount([d.arm for d in decs], minlength=4)
    assert counts[2] == 0 and stats.chisquare(counts[[0, 1, 3]]).pvalue > 1e-3


@pytest.mark.parametrize("use_native", NATIVE)
def test_egreedy_propensities_are_exact_and_match_frequencies(use_native):
    state = _played("egreedy", k=5, steps=200, epsilon=0.2)
    rng = B.new_rng(5, use_native)
    decs = [B.choose(state, rng, use_native=use_native) for _ in range(4000)]
    greedy = np.argmax(state.s / state.n)
    expected = np.full(5, 0.04)
    expected[greedy] += 0.8
    np.testing.assert_allclose(decs[0].probs, expected, rtol=1e-12)
    counts = np.bincount([d.arm for d in decs], minlength=5)
    assert stats.chisquare(counts, expected * 4000).pvalue > 1e-3


@pytest.mark.parametrize("policy", ["linucb", "lints"])
def test_linear_moments_native_match_numpy(policy):
    state = _played(policy, k=5, d=4, steps=80, lam=0.7, gamma=0.97)
    x = np.array([0.3, -1.0, 0.5, 2.0])
    for got, want in zip(B.linear_moments(state, x), B.linear_moments(state, x, False)):
        np.testing.assert_allclose(got, want, rtol=1e-10)


def test_linucb_choice_matches_numpy():
    state = _played("linucb", k=5, d=4, steps=80, alpha=0.5)
    for x in np.random.default_rng(1).normal(size=(20, 4)):
        arms = [B.choose(state, B.new_rng(0, nat), x, use_native=nat).arm for nat in NATIVE]
        assert arms[0] == arms[1]


def test_linear_policy_requires_context():
    with pytest.raises(ValueError, match="x"):
        B.choose(B.new_state("linucb", 3, 2), B.new_rng(0))


@given(st.binary(max_size=64))
def test_hash64_native_matches_python(data):
    assert B.hash64(data) == B.hash64(data, use_native=False)


def test_hash64_is_pinned():
    # Stability across releases: changing this value reshuffles every running A/B test.
    assert B.hash64(b"abc") == 996580060897260808
    assert B.hash_unit("spring-sale", "user-42") == B.hash_unit("spring-sale", "user-42", "split",
                                                                use_native=False)


def test_rng_is_seeded_and_reproducible():
    a, b = _rng.Rng(7), _rng.Rng(7)
    np.testing.assert_array_equal(a.beta(2.0, 3.0, 100), b.beta(2.0, 3.0, 100))
    assert not np.array_equal(_rng.Rng(8).random(10), _rng.Rng(7).random(10))


def test_seeded_streams_are_pinned():
    """Seeded draws and decisions as they were before the generator left `_bandits.pyx` (a
    changed stream changes every seeded experiment). rtol leaves room for another libm only."""
    r = _rng.Rng(2026)
    np.testing.assert_array_equal(r.random(4), [0.5737315027932676, 0.2836794602748579,
                                                0.8125094267576175, 0.8936746510506359])
    assert r.uniform() == 0.8120352909328482
    for got, want in [
        (r.normal(4), [-0.6943432867050134, -0.4201138686926355, -0.6394950760638036,
                       -0.8045545083915754]),
        (r.gamma(0.3, 3), [0.3390563931707209, 0.0006460946829275406, 0.02116302190780937]),
        (r.gamma(4.0, 3), [1.7065458804374665, 4.0813919282003726, 1.5417080395121516]),
        (r.beta(2.0, 5.0, 3), [0.2545415271264999, 0.32618791711575784, 0.29798754010936573]),
    ]:
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert [r.integers(1000) for _ in range(3)] == [656, 363, 587]
    ts = B.new_state("bernoulli_ts", 3)
    ts.n[:], ts.s[:] = [10, 10, 10], [3, 5, 4]
    r = B.new_rng(99)
    assert [tuple(B.choose(ts, r))[:2] for _ in range(3)] == [  # propensities: counts / 257
        (2, 0.2723735408560311), (2, 0.33852140077821014), (1, 0.556420233463035)]
    nig = B.new_state("gaussian_ts", 2)
    nig.n[:], nig.s[:], nig.ss[:] = [4, 6], [2.0, 3.5], [1.5, 2.5]
    assert [tuple(B.choose(nig, r, n_mc=64))[:2] for _ in range(2)] == [
        (1, 0.5384615384615384), (1, 0.676923076923077)]
    assert [B.choose(B.new_state("egreedy", 3), r).arm for _ in range(6)] == [0, 2, 0, 0, 0, 1]


def test_rng_uniform_is_the_next_value_of_random():
    a, b = _rng.Rng(5), _rng.Rng(5)
    np.testing.assert_array_equal([a.uniform() for _ in range(50)], b.random(50))


@pytest.mark.parametrize("name,args,dist", [
    ("random", (), stats.uniform()),
    ("normal", (), stats.norm()),
    ("gamma", (0.3,), stats.gamma(0.3)),
    ("gamma", (4.5,), stats.gamma(4.5)),
    ("beta", (0.7, 2.0), stats.beta(0.7, 2.0)),
    ("beta", (30.0, 400.0), stats.beta(30.0, 400.0)),
])
def test_rng_distributions_ks(name, args, dist):
    draws = getattr(_rng.Rng(11), name)(*args, 20000)
    assert stats.kstest(draws, dist.cdf).pvalue > 1e-3


@pytest.mark.parametrize("use_native", NATIVE)
@pytest.mark.parametrize("policy", ["bernoulli_ts", "gaussian_ts", "lints"])
def test_thompson_propensities_match_choice_frequencies(policy, use_native):
    d = 2 if policy == "lints" else 0
    state = _played(policy, k=4, d=d, steps=40, seed=2)
    x = np.array([0.5, -0.2]) if d else None
    rng = B.new_rng(9, use_native)
    decs = [B.choose(state, rng, x, n_mc=2000, use_native=use_native) for _ in range(3000)]
    probs = np.mean([dec.probs for dec in decs], axis=0)
    assert probs.sum() == pytest.approx(1.0)
    counts = np.bincount([dec.arm for dec in decs], minlength=4)
    keep = probs * 3000 > 5
    assert stats.chisquare(counts[keep], probs[keep] / probs[keep].sum() * counts[keep].sum()
                           ).pvalue > 1e-3
    for dec in decs[:50]:
        assert dec.propensity == dec.probs[dec.arm] > 0


@pytest.mark.parametrize("policy", ["bernoulli_ts", "gaussian_ts"])
def test_native_and_numpy_posteriors_agree(policy):
    state = _played(policy, k=3, steps=60)
    got = campaign_stats(state, _rng.Rng(2), n_mc=40000)
    want = campaign_stats(state, np.random.default_rng(2), n_mc=40000, use_native=False)
    np.testing.assert_allclose(got["prob_best"], want["prob_best"], atol=0.015)
    np.testing.assert_allclose(got["expected_loss"], want["expected_loss"], atol=0.01)
    np.testing.assert_array_equal(got["mean"], want["mean"])


def test_campaign_stats_intervals_cover_the_mean():
    state = _played("bernoulli_ts", k=3, steps=300)
    out = campaign_stats(state, B.new_rng(0))
    assert (out["ci_low"] < out["mean"]).all() and (out["mean"] < out["ci_high"]).all()
    assert out["prob_best"].sum() == pytest.approx(1.0)
    assert (out["expected_loss"] >= 0).all()


@pytest.mark.parametrize("use_native", [True, False])
def test_stats_read_rewards_outside_zero_one_with_the_normal_model(use_native):
    """reward_model 0 (the default) on revenue rewards: the Normal-inverse-gamma model
    (posterior mean (kappa0 mu0 + s) / (kappa0 + n) = s / (1 + n)), not rates near 1; rewards
    in [0, 1] (fractions included) keep the Beta model (a0 + s) / (a0 + b0 + n)."""
    rng = _rng.Rng(3) if use_native else np.random.default_rng(3)
    revenue = B.new_state("fixed", 2)
    for arm, r in [(0, 10.0), (0, 12.0), (0, 14.0), (1, 20.0), (1, 24.0)]:
        B.update(revenue, arm, r, inplace=True)
    out = campaign_stats(revenue, rng, use_native=use_native)
    np.testing.assert_allclose(out["mean"], [36.0 / 4, 44.0 / 3])
    assert (out["ci_low"] < out["mean"]).all() and (out["mean"] < out["ci_high"]).all()
    assert out["prob_best"][1] > 0.5  # few rewards, far from the prior mean 0: not sure yet
    (row,) = out["ab"]
    assert row["diff"] == pytest.approx(22.0 - 12.0) and np.isfinite([row["ci_low"], row["ci_high"]]).all()
    rates = B.new_state("fixed", 2)
    for arm, r in [(0, 1.0), (0, 0.0), (0, 0.5), (1, 1.0), (1, 1.0)]:
        B.update(rates, arm, r, inplace=True)
    out = campaign_stats(rates, rng, use_native=use_native)
    np.testing.assert_allclose(out["mean"], [(1 + 1.5) / (2 + 3), (1 + 2.0) / (2 + 2)])
    assert stats_view(rates) is rates and stats_view(revenue).params.reward_model == 1.0


@pytest.mark.parametrize("use_native", NATIVE)
def test_fixed_split_follows_weights_and_is_sticky(use_native):
    state = B.new_state("fixed", 3, weights=[0.5, 0.3, 0.2], holdout=0.1)
    decs = [B.choose(state, None, user_id=f"u{i}", salt="s1", use_native=use_native)
            for i in range(5000)]
    arms = np.array([d.arm for d in decs])
    assert abs((arms == B.HOLDOUT).mean() - 0.1) < 0.015
    counts = np.bincount(arms[arms >= 0], minlength=3)
    assert stats.chisquare(counts, np.array([0.5, 0.3, 0.2]) * counts.sum()).pvalue > 1e-3
    again = B.choose(state, None, user_id="u17", salt="s1", use_native=not use_native)
    assert (again.arm, again.propensity) == (decs[17].arm, decs[17].propensity)
    assert decs[0].propensity in (0.5, 0.3, 0.2, 0.1)


@pytest.mark.parametrize("kwargs,match", [
    ({"policy": "nope", "n_arms": 2}, "policy"),
    ({"policy": "ucb1", "n_arms": 0}, "n_arms"),
    ({"policy": "linucb", "n_arms": 2}, "dim"),
    ({"policy": "ucb1", "n_arms": 2, "gamma": 1.5}, "gamma"),
    ({"policy": "fixed", "n_arms": 2, "weights": [1, -1]}, "weights"),
])
def test_new_state_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        B.new_state(**kwargs)


def test_fixed_split_stats_include_ab_analysis():
    state = B.new_state("fixed", 2)
    for arm, reward in [(0, 0.0), (0, 1.0), (1, 1.0), (1, 1.0), (0, 0.0), (1, 0.0)]:
        state = B.update(state, arm, reward)
    rows = campaign_stats(state, B.new_rng(0))["ab"]
    assert rows[0]["arm"] == 1 and rows[0]["diff"] == pytest.approx(2 / 3 - 1 / 3)


def test_decision_only_thompson_matches_propensities():
    state = _played("bernoulli_ts", k=3, steps=30, seed=4)
    rng = B.new_rng(2)
    counts = np.bincount([B.choose(state, rng, n_mc=0).arm for _ in range(4000)], minlength=3)
    probs = B.choose(state, rng, n_mc=20000).probs
    keep = probs > 0.01
    assert stats.chisquare(counts[keep], probs[keep] / probs[keep].sum() * counts[keep].sum()
                           ).pvalue > 1e-3
    assert np.isnan(B.choose(state, rng, n_mc=0).propensity)


def _normal_argmax_probs(means, sds) -> np.ndarray:
    """P(arm is the argmax) of independent normal arm values, by quadrature."""
    from scipy import integrate
    out = []
    for a in range(len(means)):
        def f(t, a=a):
            rest = [stats.norm.cdf((t - m) / s) for j, (m, s) in enumerate(zip(means, sds)) if j != a]
            return stats.norm.pdf(t, means[a], sds[a]) * np.prod(rest)
        out.append(integrate.quad(f, means[a] - 12 * sds[a], means[a] + 12 * sds[a],
                                  points=list(means), limit=500, epsabs=1e-14)[0])
    return np.array(out)


def _inverse(use_native):
    return B._bandits.ts_choose_inverse if use_native else B._ts_inverse_numpy


@pytest.mark.parametrize("use_native", NATIVE)
def test_lints_inverse_propensity_weights_are_unbiased_for_a_rare_arm(use_native):
    """1 / propensity (the IPS weight) averages 1 / p for every arm, the rare one (p = 0.0027)
    included: 256 fixed draws gave it (1 - (1 - p)^257) / p, half of that."""
    means, sds = np.array([0.0, 0.0, -2.2]), np.array([1.0, 1.0, 0.6])
    exact = _normal_argmax_probs(means, sds)
    assert exact[2] == pytest.approx(0.00274, abs=1e-5)
    post = np.zeros((4, 3))
    post[0], post[1] = means, sds
    rng, probs, weights = B.new_rng(4, use_native), np.empty(3), ([], [], [])
    while len(weights[2]) < 40:
        arm, draws = _inverse(use_native)(B.KIND_NORMAL, post, rng, 64, 65536, probs)
        assert probs.sum() == pytest.approx(1.0) and draws <= 65536 // 3
        weights[arm].append(1.0 / probs[arm])
    for a in range(3):
        se = np.sqrt((1 - exact[a]) / 64 / len(weights[a]))
        assert np.mean(weights[a]) * exact[a] == pytest.approx(1.0, abs=5 * se)


@pytest.mark.parametrize("use_native", NATIVE)
def test_lints_inverse_propensity_stops_at_its_sample_bound(use_native):
    """An arm too rare for the bound: at most max_samples // K draws, and the propensity is
    then (wins + 1) / (draws + 1), at least 1 / (draws + 1), as 256 fixed draws gave."""
    post = np.zeros((4, 2))
    post[0], post[1] = [0.0, -3.0], [1.0, 0.5]   # arm 1: p = 0.0037
    rng, probs = B.new_rng(1, use_native), np.empty(2)
    for _ in range(3000):
        arm, draws = _inverse(use_native)(B.KIND_NORMAL, post, rng, 64, 600, probs)
        if arm == 1:
            assert draws == 300 and probs[1] >= 1 / 301 and probs.sum() == pytest.approx(1.0)
            return
        assert probs[0] == pytest.approx(64 / draws)
    pytest.fail("the rare arm was never chosen")


def test_lints_choose_logs_the_inverse_estimate_and_other_policies_keep_theirs():
    state = _played("lints", k=3, d=2, steps=40, seed=2)
    x = np.array([0.5, -0.2])
    a = B.choose(state, B.new_rng(3), x, n_mc=256, wins=64, max_samples=65536)
    b = B.choose(state, B.new_rng(3), x, n_mc=256)
    assert a.arm == b.arm and a.propensity == a.probs[a.arm] > 0
    assert a.propensity * 257 != round(a.propensity * 257)  # not a k / 257 share
    ts = _played("gaussian_ts", k=3, steps=40)
    c = B.choose(ts, B.new_rng(3), n_mc=256, wins=64, max_samples=65536)
    assert c.propensity * 257 == pytest.approx(round(c.propensity * 257))
