"""Channel choice: Beta posteriors by hand, Thompson propensities against the exact 2-arm value."""
import numpy as np
import pytest

from kernels import channel_choice as C
from kernels import feature_layout as FL
from kernels import features as F
from kernels.contact_population import Population
from kernels.features import Events

from .profile_layout import LAYOUT

T0 = 1.7e9
POP = Population(np.full(168, 1 / 168), 1.0, LAYOUT.channels, np.full(5, 1.0), np.full(5, 9.0))


def state_with(**counts):
    types, chans = [], []
    for name, k in counts.items():
        types += [LAYOUT.type_code(name)] * k
        chans += [LAYOUT.channel_code(name.split("_")[0])] * k
    return F.update(LAYOUT, FL.new_state(LAYOUT), Events(types, chans, [T0] * len(types)))


def test_posteriors_by_hand():
    # email: 4 sends, 1 open (+1 click, not counted twice); sms: 2 sends, 1 click (no open event)
    state = state_with(email_sent=4, email_open=1, email_click=1, sms_sent=2, sms_click=1)
    a, b = C.posteriors(LAYOUT, state, T0, POP)
    got = {c: (a[0, i], b[0, i]) for i, c in enumerate(POP.channels)}
    assert got["email"] == pytest.approx((2.0, 12.0))
    assert got["sms"] == pytest.approx((2.0, 10.0))
    assert got["push"] == pytest.approx((1.0, 9.0))
    # a month later (the longest half-life, 30 days) the counts weigh half, but so does each
    # event: phi = 1/2 and the effective counts are unchanged
    a, b = C.posteriors(LAYOUT, state, T0 + 30 * 86400, POP)
    assert (a[0, 2], b[0, 2]) == pytest.approx((2.0, 12.0))


def test_posteriors_use_effective_counts_of_events_of_different_ages():
    # 2 sends a month ago, 2 sends + 1 open now: decayed sends 2 * 1/2 + 2 = 3, opens 1;
    # phi = (2^0 + 2^-1) / 2 = 3/4 -> effective sends 4, opens 4/3
    email, sent, opened = (LAYOUT.channel_code("email"), LAYOUT.type_code("email_sent"),
                           LAYOUT.type_code("email_open"))
    old = T0 - 30 * 86400
    state = F.update(LAYOUT, FL.new_state(LAYOUT),
                     Events([sent, sent, sent, sent, opened], [email] * 5,
                            [old, old, T0, T0, T0]))
    a, b = C.posteriors(LAYOUT, state, T0, POP)
    assert (a[0, 2], b[0, 2]) == pytest.approx((1 + 4 / 3, 9 + 4 - 4 / 3))


@pytest.mark.parametrize("arms", [((2, 12), (3, 5)), ((1, 9), (1, 9)), ((20, 80), (5, 45)),
                                  ((1, 1), (300, 700))])
def test_quadrature_propensity_matches_the_exact_two_arm_value(arms):
    (a1, b1), (a2, b2) = arms
    exact = C.win_probability_2(a1, b1, a2, b2)
    chosen, probs = C.thompson([[a1, a2]], [[b1, b2]], [[True, True]], np.random.default_rng(3))
    assert probs[0] == pytest.approx([exact, 1 - exact], abs=1e-6)


@pytest.mark.parametrize("arms", [((2, 18), (30000, 70000)), ((1, 9), (3000, 7000)),
                                  ((5, 5), (2000, 8000)), ((1.2, 40), (601, 2401)),
                                  ((1.5, 20), (401, 601)), ((3, 12), (1201, 1801))])
def test_quadrature_propensity_is_exact_to_a_thousandth_when_one_arm_is_far_narrower(arms):
    # one 64-node panel stepped over the narrow arm's CDF (0.009387 for 0.010427) or cut a
    # rare arm's far tail (0.000234 for 0.000236): an IPS weight off by the same share
    (a1, b1), (a2, b2) = arms
    exact = C.win_probability_2(a1, b1, a2, b2)
    _, probs = C.thompson([[a1, a2]], [[b1, b2]], [[True, True]], np.random.default_rng(3))
    assert probs[0] == pytest.approx([exact, 1 - exact], rel=1e-3)


def _exact_win_probabilities(a, b):
    """P(arm k's draw is the largest) by scipy's adaptive quadrature, per arm (independent of
    `win_probabilities`: no nodes or panels in common)."""
    from scipy import integrate, stats
    means = sorted(x / (x + y) for x, y in zip(a, b))

    def integrand(x, k):
        others = [stats.beta.cdf(x, a[j], b[j]) for j in range(len(a)) if j != k]
        return stats.beta.pdf(x, a[k], b[k]) * np.prod(others)
    return np.array([integrate.quad(integrand, 0.0, 1.0, args=(k,), points=means, limit=500,
                                    epsabs=1e-15, epsrel=1e-11)[0] for k in range(len(a))])


@pytest.mark.parametrize("a, b", [
    ([4.88, 33.707], [43.844, 10462.09]),  # 7.59e-7 for 1.01e-6: the sum was off < 1e-7
    ([2.827, 1781.885], [57.152, 4794.621]),  # 1.509e-6 for 1.531e-6, likewise
    ([1.905, 364.964], [2.395, 2129.495]),  # 0.087288 for 0.087153: errors cancel in the sum
    ([1.0, 24.49, 6691.36], [4.635, 87.356, 40921.07]),  # 0.009245 for 0.007294
    ([1.0, 3440.8, 1.0, 1.0], [14.02, 1906.97, 55.229, 12.288])])  # 3.197e-6 for 3.216e-6
def test_quadrature_propensity_is_exact_to_a_thousandth_when_the_sum_hides_the_error(a, b):
    # the panels were only tried on rows whose probabilities missed 1 by 1e-3 of the rarest
    # arm's, floored at 1e-7 absolute: one arm's error offset by another's, or below 1e-7,
    # went out as the logged propensity
    exact = _exact_win_probabilities(a, b)
    _, probs = C.thompson([a], [b], [[True] * len(a)], np.random.default_rng(3))
    assert probs[0][exact >= 1e-6] == pytest.approx(exact[exact >= 1e-6], rel=1e-3)


@pytest.mark.parametrize("arms", [((2, 12), (3, 5)), ((0.5, 4), (1, 9))])
def test_monte_carlo_propensity_matches_the_exact_two_arm_value(arms):
    (a1, b1), (a2, b2) = arms
    exact = C.win_probability_2(a1, b1, a2, b2)
    n_mc = 4000
    a = np.tile([a1, a2], (50, 1)).astype(float)
    b = np.tile([b1, b2], (50, 1)).astype(float)
    probs = C.mc_probabilities(a, b, np.ones((50, 2), bool), np.random.default_rng(3), n_mc)
    # 50 users x 4000 draws pooled: standard error sqrt(p (1 - p) / 200000) < 0.0012
    assert probs[:, 0].mean() == pytest.approx(exact, abs=0.005)
    assert probs.sum(axis=1) == pytest.approx(1.0)
    # one pseudo-draw spread over the allowed channels: no channel's probability is 0
    assert (probs >= 0.5 / (n_mc + 1)).all()
    # thompson takes this path for a posterior with a < 1 (pdf singular at 0)
    _, p = C.thompson(a[:1], b[:1], np.ones((1, 2), bool), np.random.default_rng(4), n_mc)
    assert p[0, 0] == pytest.approx(exact, abs=0.03)


def test_a_rare_channels_monte_carlo_propensity_gives_unbiased_ips_weights():
    # posteriors with a < 1 (pdf singular at 0) take the Monte Carlo path; the middle channel
    # wins p = 0.0034 of fresh draws. Its IPS weight 1[chosen] / propensity must average 1:
    # estimating the probability of a fresh draw's winner with 256 draws gave 0.55 (a
    # propensity of (1 + Binomial(256, p)) / 257 is too high more often than too low)
    n = 50_000
    a = np.tile([0.5, 0.3, 0.8], (n, 1))
    b = np.tile([4.5, 120.0, 3.0], (n, 1))
    chosen, probs = C.thompson(a, b, np.ones((n, 3), bool), np.random.default_rng(7), 256)
    weight = (chosen == 1) / probs[np.arange(n), chosen]
    # standard error sqrt((1 / p - 1) / n) ~ 0.077
    assert weight.mean() == pytest.approx(1.0, abs=0.3)
    assert ((chosen == 0) / probs[np.arange(n), chosen]).mean() == pytest.approx(1.0, abs=0.02)


def test_three_arm_quadrature_matches_monte_carlo():
    a, b = np.array([[3.0, 5.0, 2.0]]), np.array([[9.0, 11.0, 8.0]])
    exact = C.win_probabilities(a, b, np.ones((1, 3), bool))[0]
    mc = C.mc_probabilities(np.repeat(a, 100, 0), np.repeat(b, 100, 0), np.ones((100, 3), bool),
                            np.random.default_rng(0), 2000).mean(0)
    assert exact.sum() == pytest.approx(1.0, abs=1e-6)
    assert exact == pytest.approx(mc, abs=0.01)


def test_win_probability_2_by_hand():
    # Beta(1, 1) vs Beta(1, 1): 1/2; Beta(2, 1) (density 2x) vs uniform: int 2x * x dx = 2/3
    assert C.win_probability_2(1, 1, 1, 1) == pytest.approx(0.5)
    assert C.win_probability_2(2, 1, 1, 1) == pytest.approx(2 / 3)


def test_disallowed_channels_never_win():
    a = np.array([[50.0, 1.0, 1.0]] * 200)
    b = np.array([[1.0, 50.0, 50.0]] * 200)
    allowed = np.array([[False, True, True]] * 200)
    chosen, probs = C.thompson(a, b, allowed, np.random.default_rng(0), 64)
    assert set(chosen.tolist()) <= {1, 2} and (probs[:, 0] == 0).all()
    with pytest.raises(ValueError, match="channels"):
        C.thompson(a[:1], b[:1], np.zeros((1, 3), bool), np.random.default_rng(0))


def test_choose_channel_prefers_the_engaged_channel():
    state = state_with(email_sent=40, email_open=1, push_sent=40, push_open=30)
    rng = np.random.default_rng(5)
    picks = [C.choose_channel(state, ["email", "push"], rng, POP, layout=LAYOUT, now=T0)
             for _ in range(20)]
    assert {c for c, _ in picks} == {"push"} and all(p > 0.99 for _, p in picks)
    channel, prop = C.choose_channel(None, ["sms"], rng, POP, layout=LAYOUT, now=T0)
    assert (channel, prop) == ("sms", 1.0)
    with pytest.raises(ValueError, match="channels"):
        C.choose_channel(state, ["fax"], rng, POP, layout=LAYOUT, now=T0)
