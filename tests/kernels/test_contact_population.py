"""Population prior of send time and channel: the moment estimator by hand and by simulation."""
import numpy as np
import pytest

from kernels import contact_population as P
from kernels import feature_layout as FL
from kernels import features as F
from kernels.features import Events

from .profile_layout import LAYOUT

T0 = 1.7e9


def test_fit_dirichlet_by_hand():
    # p = (6/8, 2/8); S_1 = S_2 = 1/0.75 + 1/0.25 = 16/3; rho = (32/3 - 8) / (12 + 12) = 1/9
    p, alpha = P.fit_dirichlet([[4, 0], [2, 2]], smoothing=0.0)
    assert p == pytest.approx([0.75, 0.25])
    assert alpha == pytest.approx(8.0)


def test_fit_dirichlet_clips_and_handles_no_evidence():
    # users as unlike as can be: rho = (8 - 4) / 4 = 1 -> alpha 0, clipped to alpha_min
    assert P.fit_dirichlet([[2, 0], [0, 2]], smoothing=0.0)[1] == pytest.approx(P.ALPHA_MIN)
    # users exactly like the population: rho < 0 -> alpha_max
    assert P.fit_dirichlet([[1, 1], [1, 1]], smoothing=0.0)[1] == P.ALPHA_MAX
    # one count each: nothing to tell users apart from the population
    p, alpha = P.fit_dirichlet([[1, 0, 0], [0, 0, 1]], smoothing=0.0)
    assert alpha == P.ALPHA_MAX and p == pytest.approx([0.5, 0, 0.5])
    with pytest.raises(ValueError, match="counts"):
        P.fit_dirichlet([[1, -1]])


@pytest.mark.parametrize("alpha", [3.0, 30.0])
def test_fit_dirichlet_recovers_a_simulated_prior(alpha):
    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.ones(8) * 2)
    theta = rng.dirichlet(alpha * p, size=6000)
    n = rng.integers(0, 40, 6000)
    counts = np.array([rng.multinomial(k, t) for k, t in zip(n, theta)])
    p_hat, alpha_hat = P.fit_dirichlet(counts, smoothing=0.0)
    assert p_hat == pytest.approx(p, abs=0.01)
    assert alpha_hat == pytest.approx(alpha, rel=0.15)


def _email_user(sends, opens, ts=T0):
    layout = LAYOUT
    email = layout.channel_code("email")
    types = [layout.type_code("email_sent")] * sends + [layout.type_code("email_open")] * opens
    return F.update(layout, FL.new_state(layout),
                    Events(types, [email] * len(types), [ts] * len(types)))


def test_fit_population_channel_prior_by_hand_and_default_elsewhere():
    # all-time counts: email engaged/sends = (4/4, 0/4) -> the [[4, 0], [0, 4]] case... use
    # (4, 0) and (2, 2): m = 6/8, alpha = 8 as in the hand case above (smoothing 0)
    states = np.stack([_email_user(4, 4), _email_user(4, 2)])
    pop = P.fit_population(LAYOUT, states, T0, half_life=None, smoothing=0.0)
    email = pop.channels.index("email")
    assert pop.channel_a[email] == pytest.approx(8 * 0.75)
    assert pop.channel_b[email] == pytest.approx(8 * 0.25)
    sms = pop.channels.index("sms")
    assert (pop.channel_a[sms], pop.channel_b[sms]) == LAYOUT.rate_prior  # no sends: default
    # email opens are engagement events: both users' hours sit in one bin
    assert pop.hour_p.argmax() == F._hour_of_week(T0, 0)


def test_population_round_trips_and_validates(tmp_path):
    pop = P.Population.uninformed(LAYOUT, hour_alpha=2.0)
    P.save(pop, tmp_path / "contact_prior.npz")
    back = P.load(tmp_path / "contact_prior.npz")
    assert back.channels == pop.channels and back.hour_alpha == 2.0
    np.testing.assert_array_equal(back.channel_b, pop.channel_b)
    with pytest.raises(ValueError, match="hour_p"):
        P.Population(np.ones(168), 1.0, ("email",), [1.0], [1.0])
    with pytest.raises(ValueError, match="channel_a"):
        P.Population(np.full(168, 1 / 168), 1.0, ("email",), [0.0], [1.0])


def test_effective_scale_by_hand():
    h = 30 * 86400.0
    states = FL.new_states(LAYOUT, 3)
    states[:, FL.N_EVENTS] = [1, 2, 0]
    states[:, FL.FIRST_TS] = [T0 - h, T0 - 2 * h, np.inf]
    states[:, FL.REF_TS] = [T0 - h, T0, -np.inf]
    # one event a half-life old: its weight 1/2; ages 0..2h: (1 + 1/4) / 2; no events: 1
    assert P.effective_scale(states, T0, h) == pytest.approx([0.5, 0.625, 1.0])


def test_hour_prior_is_fitted_on_effective_counts():
    # two clicks per user, a half-life (30 d) old: decayed they sum to n = 1 (n (n - 1) = 0,
    # no evidence: alpha_max), effective they are n = 2. Users (2, 0) and (0, 2) on hours A, B:
    # S = 4 each, rho = (8 - 4) / 4 = 1 -> alpha_min; users (1, 1) and (1, 1): S = 0 -> alpha_max
    click, web = LAYOUT.type_code("click"), LAYOUT.channel_code("web")
    old = T0 - 30 * 86400.0
    hour = 3600.0

    def user(t1, t2):
        return F.update(LAYOUT, FL.new_state(LAYOUT), Events([click] * 2, [web] * 2, [t1, t2]))

    apart = np.stack([user(old, old), user(old + hour, old + hour)])
    pop = P.fit_population(LAYOUT, apart, T0, smoothing=0.0)
    assert pop.hour_alpha == pytest.approx(P.ALPHA_MIN)
    mixed = np.stack([user(old, old + hour), user(old, old + hour)])
    assert P.fit_population(LAYOUT, mixed, T0, smoothing=0.0).hour_alpha == P.ALPHA_MAX
