"""The encoder's history blend (server/profiles/history.py): short- and long-term interest
decayed against the request time, the session kept whole, the background capped."""
import numpy as np
import pytest

from server.profiles.history import DAY, HistoryBlend, unique_histories

NOW = 1_900_000_000.0
NO_CAP = HistoryBlend(background_mass=0.0)


def _decayed(w, age_days, blend=NO_CAP):
    return w * (2 ** (-age_days * DAY / blend.half_life_s) + 2 ** (-age_days * DAY / blend.long_half_life_s))


def test_one_entry_per_item_weights_summed_ordered_by_latest_event():
    rows, w = NO_CAP.blend(np.array([5, 7, 5, 9]), np.array([1.0, 2.0, 0.5, 4.0]),
                           np.array([NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY, NOW]), NOW, 50)
    assert rows.tolist() == [7, 5, 9]
    expected = [_decayed(2.0, 2), _decayed(1.0, 3) + _decayed(0.5, 1), _decayed(4.0, 0)]
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_a_new_event_does_not_age_the_rest_of_the_profile():
    """Decay runs against the request time: after a 90-day pause, one click leaves the old
    items' weights as they were, and a year-old item keeps its long-term part."""
    old = (np.array([1, 2]), np.array([8.0, 4.0]), np.array([NOW - 90 * DAY, NOW - 365 * DAY]))
    _, before = NO_CAP.blend(*old, NOW, 50)
    rows, after = NO_CAP.blend(np.append(old[0], 3), np.append(old[1], 2.0), np.append(old[2], NOW),
                               NOW, 50)
    assert rows.tolist() == [2, 1, 3]
    np.testing.assert_allclose(after[:2], before, rtol=1e-6)
    assert after[0] == pytest.approx(_decayed(4.0, 365), rel=1e-6) and after[0] > 4.0 * 0.5
    assert after[2] == pytest.approx(4.0)  # a fresh click counts as recent and long-term interest


def test_background_is_capped_and_the_session_is_not():
    blend = HistoryBlend(background_mass=10.0, session_s=1800.0)
    rows = np.arange(40)
    ts = np.where(rows < 38, NOW - 5 * DAY, NOW - 60.0)
    out_rows, w = blend.blend(rows, np.full(40, 4.0), ts, NOW, 50)
    session = np.isin(out_rows, [38, 39])
    assert w[~session].sum() == pytest.approx(10.0, rel=1e-5)
    np.testing.assert_allclose(w[session], _decayed(4.0, 60 / DAY), rtol=1e-5)
    light = blend.blend(np.array([1]), np.array([2.0]), np.array([NOW - DAY]), NOW, 50)[1]
    assert light[0] == pytest.approx(_decayed(2.0, 1), rel=1e-6)  # under the cap: untouched


def test_longer_histories_keep_their_heaviest_items():
    rows = np.arange(6)
    w = np.array([9.0, 1.0, 8.0, 1.0, 7.0, 1.0])
    out, _ = NO_CAP.blend(rows, w, NOW - rows * 60.0, NOW, 3)
    assert out.tolist() == [4, 2, 0]  # the heaviest three, oldest first
    assert NO_CAP.blend(rows[:0], w[:0], w[:0], NOW, 3)[0].size == 0


@pytest.mark.parametrize("ahead", [None, 1000.0, 3599.0])
@pytest.mark.parametrize("age_days", [0.001, 3.0, 400.0])
def test_the_bundle_only_fast_path_equals_the_general_blend(age_days, ahead):
    """Bundle users without live events take `blend_trained` over `unique_histories`: same
    rows, order and weights as `blend` over their raw history (repeats, caps, truncation);
    so with the session counted from a request `ahead` of the decay clock (`session_now`)."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 40, 200)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    items = rng.integers(0, 60, indptr[-1])  # repeats within a user
    weights = rng.uniform(0.0, 9.0, indptr[-1]) * (rng.random(indptr[-1]) > 0.1)
    ptr, rows, w = unique_histories(indptr, items, weights)
    blend, now = HistoryBlend(), 1.7e9
    ts = now - age_days * DAY
    session_now = None if ahead is None else now + ahead
    for u in range(len(lengths)):
        lo, hi = indptr[u], indptr[u + 1]
        want = blend.blend(items[lo:hi].astype(np.int64), weights[lo:hi], np.full(hi - lo, ts),
                           now, 20, session_now)
        got = blend.blend_trained(rows[ptr[u]:ptr[u + 1]], w[ptr[u]:ptr[u + 1]], ts, now, 20,
                                  session_now)
        assert got[0].tolist() == want[0].tolist()
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)


@pytest.mark.parametrize("trained", [False, True])
def test_the_session_counts_back_from_the_request_not_from_a_decay_clock(trained):
    """Recommend decays to a clock in steps (`recommend.handler.decay_clock`) but its session is
    the last `session_s` before the request: an item seen 40 minutes before a request whose clock
    stepped 50 minutes earlier is background (capped with the rest), not session. Counted back
    from the clock it was session, and a step of an hour moved the session by up to an hour."""
    blend, clock = HistoryBlend(background_mass=4.0, session_s=1800.0), NOW - 3000.0
    rows, w = np.arange(8), np.full(8, 2.0)
    seen = NOW - 2400.0  # 40 minutes before the request, 10 after the clock
    if trained:  # the bundle-only path: every row seen at the bundle's time
        got = blend.blend_trained(rows, w, seen, clock, 50, session_now=NOW)
        as_if_clock = blend.blend_trained(rows, w, seen, clock, 50)
    else:
        ts = np.full(8, seen)
        got = blend.blend(rows, w, ts, clock, 50, session_now=NOW)
        as_if_clock = blend.blend(rows, w, ts, clock, 50)
    assert float(got[1].sum()) == pytest.approx(4.0)  # capped: background
    assert float(as_if_clock[1].sum()) == pytest.approx(32.0)  # session, counted from the clock
