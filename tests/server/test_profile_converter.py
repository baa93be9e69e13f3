"""`ProfileConverter._features`: the `Features` message GetProfile returns, keyed by name.

Expected values derived by hand from three events read at the time of the last one (no decay):
a purchase of 40.0 on web in category 2, an email sent and an email opened (both channel email).
"""
import numpy as np

from kernels import features as kf
from kernels.feature_layout import DAY, new_state
from server.profiles import ProfileSchema
from server.services.profile import ProfileConverter

T0 = 1.8e9


def features_of(category_names):
    layout = ProfileSchema().layout()
    code = layout.type_code
    state = new_state(layout)
    kf.update(layout, state, kf.Events(
        type=[code("purchase"), code("email_sent"), code("email_open")],
        channel=[layout.channel_code("web"), layout.channel_code("email"),
                 layout.channel_code("email")],
        ts=[T0 - 20, T0 - 10, T0], item=[7, -1, -1], category=[2, -1, -1],
        value=[40.0, 0.0, 0.0]))
    f = kf.read_features(layout, state, T0, recent=False)
    return ProfileConverter._features(f, layout, category_names)


def test_counts_keyed_by_type_and_channel_only_nonzero():
    msg = features_of({2: "books"})
    assert dict(msg.counts) == {"purchase/web": 1.0, "email_sent/email": 1.0,
                                "email_open/email": 1.0}
    assert msg.n_events == 3 and msg.frequency == 1.0 and msg.monetary == 40.0
    assert msg.first_seen == T0 - 20 and msg.last_seen == T0 and msg.recency_seconds == 0.0


def test_decayed_counts_per_half_life():
    msg = features_of({2: "books"})
    assert set(msg.decayed_counts) == {f"{t}/{days}" for t in
                                       ("purchase/web", "email_sent/email", "email_open/email")
                                       for days in ("1d", "7d", "30d")}
    # The purchase is 20 s older than the read: 2^(-20 / half-life).
    for days in (1, 7, 30):
        assert np.isclose(msg.decayed_counts[f"purchase/web/{days}d"], 2 ** (-20 / (days * DAY)),
                          rtol=1e-12)
        assert np.isclose(msg.monetary_decayed[f"{days}d"], 40.0 * 2 ** (-20 / (days * DAY)),
                          rtol=1e-12)


def test_category_affinity_by_name_and_code_fallback():
    named = features_of({2: "books"})
    assert {k.split("/")[0] for k in named.category_affinity} == {"books"}
    assert set(named.category_affinity) == {"books/1d", "books/7d", "books/30d"}
    unnamed = features_of({})
    assert set(unnamed.category_affinity) == {"code:2/1d", "code:2/7d", "code:2/30d"}


def test_channel_rates_only_for_channels_with_sends_or_engagement():
    msg = features_of({})
    assert set(msg.channel_rates) == {"email"}
    rates = msg.channel_rates["email"]
    assert rates.sends == 1.0
    assert np.isclose(rates.open_rate, (1 + 1) / (1 + 1 + 9))  # rate prior (1, 9)
    assert np.isclose(rates.click_rate, (0 + 1) / (1 + 1 + 9))
    assert len(msg.hour_of_week) == 168 and sum(msg.hour_of_week) > 0
