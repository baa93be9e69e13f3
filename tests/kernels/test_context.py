import numpy as np
import pytest

from kernels.context import (
    CHANNELS,
    CONTEXT_FEATURES,
    N_DAYPARTS,
    ContextTable,
    channel_code,
    context_features,
    daypart,
    request_codes,
)


def test_daypart_by_hand():
    # 1970-01-05 was a Monday; 1970-01-03 a Saturday.
    monday, saturday = 4 * 86_400, 2 * 86_400
    assert daypart([monday + 3 * 3600, monday + 20 * 3600, saturday + 7 * 3600]).tolist() == \
        [0, 3, 5]
    # 23:00 UTC Monday is 01:00 Tuesday at +2h, still a weekday, first block.
    assert daypart(monday + 23 * 3600, 2 * 3600) == 0
    # Sunday 22:00 UTC is Monday 00:00 at +2h: weekday again.
    assert daypart(monday - 2 * 3600, 2 * 3600) == 0
    assert daypart(monday - 2 * 3600) == 7


def test_channel_code():
    assert [channel_code(c) for c in ("web", "app", "email", "", "fax")] == [0, 1, 2, -1, -1]


def test_fit_by_hand():
    # 4 rows: web/cat0, web/cat0, app/cat1, unknown/cat1; all on Monday 03:00 (daypart 0).
    ts = np.full(4, 4 * 86_400 + 3 * 3600)
    t = ContextTable.fit([0, 0, 1, 1], [0, 0, 1, -1], ts, n_categories=2, smoothing=1.0)
    base = np.log([(2 + 1) / (3 + 2), (1 + 1) / (3 + 2)])   # known-channel rows only
    # share = (n[ch, c] + a C base[c]) / (n[ch] + a C) with a C = 2
    np.testing.assert_allclose(t.channel_lift[0], np.log([3.2 / 4, 0.8 / 4]) - base, rtol=1e-6)
    np.testing.assert_allclose(t.channel_lift[1], np.log([1.2 / 3, 1.8 / 3]) - base, rtol=1e-6)
    np.testing.assert_allclose(t.channel_lift[2], 0, atol=1e-7)     # no rows: share = base
    np.testing.assert_allclose(t.daypart_lift[0], 0, atol=1e-6)     # every row in daypart 0
    assert t.channel_lift.shape == (len(CHANNELS), 2) and t.daypart_lift.shape == (N_DAYPARTS, 2)


@pytest.mark.parametrize("b,k", [(1, 1), (7, 30), (3, 0)])
def test_features_match_loop_reference(b, k):
    rng = np.random.default_rng(b * 100 + k)
    n_cat = 5
    table = ContextTable(rng.normal(size=(len(CHANNELS), n_cat)).astype(np.float32),
                         rng.normal(size=(N_DAYPARTS, n_cat)).astype(np.float32))
    cat = rng.integers(0, n_cat, (b, k))
    channel = rng.integers(-1, len(CHANNELS), b)
    part = rng.integers(0, N_DAYPARTS, b)
    out = context_features(table, cat, channel, part)
    assert out.shape == (b, k, len(CONTEXT_FEATURES)) and out.dtype == np.float32
    for i in range(b):
        for j in range(k):
            ch = table.channel_lift[channel[i], cat[i, j]] if channel[i] >= 0 else 0.0
            assert out[i, j, 0] == ch
            assert out[i, j, 1] == table.daypart_lift[part[i], cat[i, j]]


def test_features_reject_bad_shapes():
    table = ContextTable(np.zeros((3, 2), np.float32), np.zeros((8, 2), np.float32))
    with pytest.raises(ValueError, match="cand_category"):
        context_features(table, np.zeros((2, 3), int), np.zeros(3, int), np.zeros(2, int))


def test_request_codes_by_hand():
    monday_9h, saturday_21h = 4 * 86_400 + 9 * 3600, 2 * 86_400 + 21 * 3600
    codes, part = request_codes(["web", "app", "email", "sms", ""], monday_9h)
    assert codes.tolist() == [0, 1, 2, -1, -1] and part.tolist() == [1] * 5
    assert request_codes(["app"], saturday_21h)[1].tolist() == [4 + 3]


def test_check_names_the_table_that_does_not_fit():
    table = ContextTable(np.zeros((len(CHANNELS), 4), np.float32),
                         np.zeros((N_DAYPARTS, 4), np.float32))
    table.check(4)
    with pytest.raises(ValueError, match="channel_lift"):
        table.check(5)
    bad = ContextTable(table.channel_lift, np.full((N_DAYPARTS, 4), np.nan, np.float32))
    with pytest.raises(ValueError, match="daypart_lift has non-finite"):
        bad.check(4)
