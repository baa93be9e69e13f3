import numpy as np
import pytest

from kernels import abtest


def test_ztest_aa_false_positive_rate_is_nominal():
    rng = np.random.default_rng(0)
    x_c, x_t = rng.binomial(2000, 0.1, 4000), rng.binomial(2000, 0.1, 4000)
    res = abtest.two_proportion_ztest(x_c, 2000, x_t, 2000)
    assert 0.035 < np.mean(res.pvalue < 0.05) < 0.065
    assert 0.93 < np.mean((res.ci_low < 0) & (0 < res.ci_high)) < 0.97


def test_ztest_detects_a_real_lift():
    res = abtest.two_proportion_ztest(200, 2000, 300, 2000)
    assert res.pvalue < 1e-4 and res.ci_low > 0 and res.diff == pytest.approx(0.05)


def test_welch_aa_false_positive_rate_is_nominal_on_skewed_unequal_groups():
    rng = np.random.default_rng(1)
    c = rng.exponential(2.0, (3000, 200))
    t = rng.exponential(2.0, (3000, 300))
    res = abtest.welch_ttest(200, c.sum(1), (c ** 2).sum(1), 300, t.sum(1), (t ** 2).sum(1))
    assert 0.035 < np.mean(res.pvalue < 0.05) < 0.065


def _aa_streams(n_exp, n_obs, p, seed):
    rng = np.random.default_rng(seed)
    cc = np.cumsum(rng.random((n_exp, n_obs)) < p, axis=1)
    ct = np.cumsum(rng.random((n_exp, n_obs)) < p, axis=1)
    return cc, ct


def _peek(cc, ct, every):
    looks = np.arange(every, cc.shape[1] + 1, every)
    pc, pt = cc[:, looks - 1] / looks, ct[:, looks - 1] / looks
    var = (pc * (1 - pc) + pt * (1 - pt)) / looks
    return looks, pt - pc, var


def test_msprt_keeps_false_positives_under_continuous_peeking():
    cc, ct = _aa_streams(400, 5000, 0.1, seed=2)
    looks, diff, var = _peek(cc, ct, every=25)
    p_seq = abtest.msprt(diff, var, tau2=0.02 ** 2)
    assert np.mean(p_seq.min(axis=1) < 0.05) <= 0.06
    # the same peeking with a fixed-horizon z-test inflates the error: the check has teeth
    z = np.abs(diff) / np.sqrt(np.where(var > 0, var, np.inf))
    assert np.mean((z > 1.96).any(axis=1)) > 0.15


def test_msprt_detects_a_real_lift():
    rng = np.random.default_rng(3)
    cc = np.cumsum(rng.random((100, 5000)) < 0.10, axis=1)
    ct = np.cumsum(rng.random((100, 5000)) < 0.13, axis=1)
    looks, diff, var = _peek(cc, ct, every=25)
    assert np.mean(abtest.msprt(diff, var, tau2=0.03 ** 2)[:, -1] < 0.05) > 0.8


def test_srm_detects_a_skewed_split():
    assert abtest.srm_check([5200, 4800], [0.5, 0.5]).mismatch
    assert not abtest.srm_check([5030, 4970], [0.5, 0.5]).mismatch
    assert not abtest.srm_check([7010, 2990], [0.7, 0.3]).mismatch


@pytest.mark.parametrize("effect,expected", [(0.5, 64), (0.8, 26)])
def test_sample_size_means_matches_cohen_table(effect, expected):
    # Cohen (1988) Table 2.4.1: two-tailed alpha 0.05, power 0.80.
    assert abtest.sample_size_means(effect) == expected


def test_sample_size_proportions_gives_the_requested_power():
    n = abtest.sample_size_proportions(0.10, 0.12)
    assert 3800 < n < 4000  # Fleiss formula: 3841
    rng = np.random.default_rng(4)
    res = abtest.two_proportion_ztest(rng.binomial(n, 0.10, 4000), n,
                                      rng.binomial(n, 0.12, 4000), n)
    assert 0.77 < np.mean(res.pvalue < 0.05) < 0.83


def test_prob_beat_control_matches_monte_carlo():
    rng = np.random.default_rng(5)
    got = abtest.prob_beat_control(100, 1000, 120, 1000)
    mc = np.mean(rng.beta(121, 881, 400000) > rng.beta(101, 901, 400000))
    assert got == pytest.approx(mc, abs=0.004)
    assert abtest.prob_beat_control(100, 1000, 100, 1000) == pytest.approx(0.5, abs=1e-6)


def test_ab_analysis_reports_each_variant_against_control():
    rows = abtest.ab_analysis([1000, 1000, 1000], [100, 130, 98], [100, 130, 98], [1, 1, 1])
    assert [r["arm"] for r in rows] == [1, 2]
    assert rows[0]["pvalue"] < 0.05 < rows[1]["pvalue"]
    assert rows[0]["prob_beat_control"] > 0.95 and rows[0]["srm_mismatch"] is False


def test_ab_analysis_of_one_variant_has_no_rows():
    assert abtest.ab_analysis([40], [9], [9], [1.0]) == []


def test_the_split_check_takes_the_assignments_when_given():
    # 10 and 50 observed of 100 and 100 assigned: the split is even, the rewards are not
    (row,) = abtest.ab_analysis([10, 50], [10, 50], [10, 50], [1.0, 1.0], assigned=[100, 100])
    assert row["srm_pvalue"] == 1.0 and row["srm_mismatch"] is False
    (row,) = abtest.ab_analysis([10, 50], [10, 50], [10, 50], [1.0, 1.0])
    assert row["srm_mismatch"] is True


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="sample sizes"):
        abtest.two_proportion_ztest(1, 0, 1, 10)
    with pytest.raises(ValueError, match="tau2"):
        abtest.msprt(0.1, 0.01, tau2=0)


def test_welch_on_scipy_gives_the_numpy_reference_results():
    rng = np.random.default_rng(6)
    n_c, n_t = rng.integers(2, 500, 2000), rng.integers(2, 500, 2000)
    mean_c, mean_t = rng.normal(0, 1, 2000), rng.normal(0.1, 1, 2000)
    var_c, var_t = rng.exponential(1, 2000), rng.exponential(2, 2000)
    var_c[:50] = var_t[:50] = 0.0  # zero-variance pairs (exact sums): t = 0, p = 1
    mean_c[:50], mean_t[:50] = 1.0, 3.0
    stats = [n_c, mean_c * n_c, var_c * (n_c - 1) + mean_c ** 2 * n_c,
             n_t, mean_t * n_t, var_t * (n_t - 1) + mean_t ** 2 * n_t]
    fast, ref = abtest.welch_ttest(*stats), abtest.welch_ttest(*stats, use_scipy=False)
    for got, want in zip(fast, ref):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert (fast.pvalue[:50] == 1.0).all() and (fast.statistic[:50] == 0.0).all()
    one = abtest.welch_ttest(1, 2.0, 4.0, 30, 45.0, 90.0)  # a single control observation
    assert np.isfinite(one.pvalue) and one == abtest.welch_ttest(1, 2.0, 4.0, 30, 45.0, 90.0,
                                                                 use_scipy=False)


@pytest.mark.parametrize("p_c,p_t", [(0.1, 0.12), (0.5, 0.45), (0.02, 0.025), (0.9, 0.95)])
def test_two_equal_arms_need_the_fleiss_equal_split_size(p_c, p_t):
    # The equal-split formula the allocation-aware one generalises (Fleiss, pooled null).
    za, zb = 1.959963984540054, 0.8416212335729143
    pbar = (p_c + p_t) / 2
    n = int(np.ceil((za * np.sqrt(2 * pbar * (1 - pbar)) + zb * np.sqrt(
        p_c * (1 - p_c) + p_t * (1 - p_t))) ** 2 / (p_t - p_c) ** 2))
    got = abtest.sample_size(p_t - p_c, baseline_rate=p_c)
    assert got.per_arm == (n, n) and got.total == 2 * n and got.alpha == 0.05
    assert abtest.sample_size_proportions(p_c, p_t) == n


def test_two_equal_arms_of_a_mean_need_cohens_size():
    assert abtest.sample_size(0.5, sd=1.0).per_arm == (64, 64)  # Cohen Table 2.4.1
    assert abtest.sample_size(2.0, sd=5.0).per_arm == (abtest.sample_size_means(2.0, 5.0),) * 2


def test_unequal_allocation_gives_the_requested_power():
    size = abtest.sample_size(0.03, baseline_rate=0.10, allocation=[1, 2])
    n_c, n_t = size.per_arm
    assert n_t == pytest.approx(2 * n_c, abs=2) and n_c < abtest.sample_size_proportions(0.1, 0.13)
    rng = np.random.default_rng(7)
    res = abtest.two_proportion_ztest(rng.binomial(n_c, 0.10, 4000), n_c,
                                      rng.binomial(n_t, 0.13, 4000), n_t)
    assert 0.77 < np.mean(res.pvalue < 0.05) < 0.83


def test_more_arms_split_alpha_and_keep_the_power_of_each_comparison():
    size = abtest.sample_size(0.5, sd=2.0, arms=4, allocation=[2, 1, 1, 1])
    assert size.alpha == pytest.approx(0.05 / 3) and len(size.per_arm) == 4
    n_c, n_t = size.per_arm[0], size.per_arm[1]
    assert n_c == pytest.approx(2 * n_t, abs=2)
    rng = np.random.default_rng(8)
    mean_c, mean_t = rng.normal(0, 2 / np.sqrt(n_c), 4000), rng.normal(0.5, 2 / np.sqrt(n_t), 4000)
    var_c, var_t = 4 * rng.chisquare(n_c - 1, 4000) / (n_c - 1), 4 * rng.chisquare(n_t - 1, 4000) / (n_t - 1)
    res = abtest.welch_ttest(n_c, mean_c * n_c, var_c * (n_c - 1) + mean_c ** 2 * n_c,
                             n_t, mean_t * n_t, var_t * (n_t - 1) + mean_t ** 2 * n_t)
    assert 0.77 < np.mean(res.pvalue < size.alpha) < 0.83


def test_sample_size_inputs_are_validated():
    with pytest.raises(ValueError, match="allocation"):
        abtest.sample_size(0.1, sd=1.0, arms=3, allocation=[1, 1])
    with pytest.raises(ValueError, match="baseline_rate"):
        abtest.sample_size(0.2, baseline_rate=0.9)
    with pytest.raises(ValueError, match="baseline_rate or sd"):
        abtest.sample_size(0.2)


def test_the_rate_difference_interval_is_never_certain_at_zero_or_all_conversions():
    """No conversion yet in either arm (every conversion test's first state) gave the interval
    [0, 0]; the Agresti-Caffo interval adds one success and one failure to each arm:
    p = 1/102 in both, half-width 1.96 * sqrt(2 p (1 - p) / 102) = 0.02704 (by hand)."""
    res = abtest.two_proportion_ztest(0, 100, 0, 100)
    assert res.diff == 0.0 and res.pvalue == 1.0
    assert res.ci_low == pytest.approx(-0.027042, abs=1e-6)
    assert res.ci_high == pytest.approx(0.027042, abs=1e-6)
    res = abtest.two_proportion_ztest(50, 50, 50, 50)  # every user converted in both
    assert res.ci_low < 0 < res.ci_high


def test_the_rate_difference_interval_covers_at_small_counts():
    """A 95% interval of 0.5% vs 2% at 100 users an arm: Wald's covered 86% of the time."""
    rng = np.random.default_rng(0)
    x_c, x_t = rng.binomial(100, 0.005, 20000), rng.binomial(100, 0.02, 20000)
    res = abtest.two_proportion_ztest(x_c, 100, x_t, 100)
    assert np.mean((res.ci_low <= 0.015) & (0.015 <= res.ci_high)) >= 0.95
    assert res.diff == pytest.approx((x_t - x_c) / 100)


def test_a_mean_difference_without_spread_in_either_arm_has_no_finite_interval():
    """Every reward 0 in both arms (a revenue test before its first purchase), or each arm's
    rewards all equal: the data give no variance, and the interval was [diff, diff], certain
    of the difference; it is (-inf, inf), as the impressions' revenue interval ([0, inf))."""
    for s_c, s_t in ((0.0, 0.0), (5.0, 15.0)):  # means 0 / 0, then 1 / 3 (exact sums)
        res = abtest.welch_ttest(5, s_c, s_c * s_c / 5, 5, s_t, s_t * s_t / 5)
        assert res.diff == (s_t - s_c) / 5 and res.statistic == 0.0 and res.pvalue == 1.0
        assert res.ci_low == -np.inf and res.ci_high == np.inf


def test_the_always_valid_p_value_can_reject_against_a_control_without_conversions():
    """The mSPRT mixture's default variance was (10% of the control mean)^2: 0 while the control
    has no conversion (a rare event, or a control that is broken), and the test could never
    reject: 0/1000 against 500/1000 gave p = 0.99999. It is 10% of the pooled mean of the two
    arms: here 0.25, tau2 = 0.000625; V = 0 + 0.25025 / 1000 (n - 1 variance of the treatment),
    p = 1 / Lambda with Lambda from `msprt`'s formula (by hand)."""
    (row,) = abtest.ab_analysis([1000, 1000], [0, 500], [0, 500], [1, 1])
    tau2, v, d = 0.025 ** 2, 0.25025025025025 / 1000, 0.5
    log_lam = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
    assert row["msprt_pvalue"] == pytest.approx(np.exp(-log_lam), rel=1e-9)
    assert row["msprt_pvalue"] < 1e-100 and row["pvalue"] < 1e-100
    (row,) = abtest.ab_analysis([200, 200], [0, 0], [0, 0], [1, 1])  # nothing yet: no evidence
    assert row["msprt_pvalue"] == 1.0
