"""The impression record codec, the outcome transitions a join applies, and the Wilson interval."""
import numpy as np
import pytest
from scipy import stats as sps

from server.impressions import wilson
from server.impressions.records import (
    CART,
    CLICK,
    HEAD,
    PURCHASE,
    UNKNOWN_POSITION,
    C,
    decode,
    encode,
    new_counters,
    with_outcome,
)


def _record(n=5):
    codes = np.arange(100, 100 + n, dtype=np.int64)
    scores = np.linspace(1, 0, n, dtype=np.float32)
    return encode(1.7e9, "v1", "email", [("page", "home"), ("é", "ü")], codes, scores, True)


def test_a_record_decodes_to_what_was_encoded_and_stays_compact():
    raw = _record()
    imp = decode(raw)
    assert (imp.timestamp, imp.model_version, imp.channel, imp.cold_start) == (1.7e9, "v1", "email", True)
    assert imp.context == {"page": "home", "é": "ü"}
    assert imp.items.tolist() == [100, 101, 102, 103, 104]
    assert imp.scores.tolist() == pytest.approx(np.linspace(1, 0, 5).tolist())
    assert (imp.first_click, imp.clicks, imp.purchases, imp.revenue) == (-1, 0, 0, 0.0)
    # head + "v1" + context (4 length prefixes + 4 + 4 + 2 + 2 bytes) + 5 * (8 + 4)
    assert len(raw) == HEAD.size + 2 + (8 + 12) + 5 * (8 + 4 + 1)
    assert imp.outcomes.tolist() == [0] * 5


def test_clicks_keep_the_first_position_and_move_the_histogram():
    delta = new_counters()
    raw = with_outcome(_record(), CLICK, 3, 0.0, delta)
    assert decode(raw).first_click == 3 and delta[C.CLICKED] == 1 and delta[C.HIST + 3] == 1
    raw = with_outcome(raw, CLICK, 4, 0.0, delta)  # further down: the first click stays
    assert decode(raw).first_click == 3 and delta[C.CLICKED] == 1 and delta[C.CLICKS] == 2
    raw = with_outcome(raw, CLICK, 1, 0.0, delta)  # higher up: the impression moves buckets
    assert decode(raw).first_click == 1 and delta[C.HIST + 3] == 0 and delta[C.HIST + 1] == 1
    assert delta[C.CLICKED] == 1 and decode(raw).clicks == 3
    assert decode(raw).outcomes.tolist() == [0, 1, 0, 1, 1]
    other = with_outcome(_record(), CLICK, UNKNOWN_POSITION, 0.0, delta)
    assert decode(other).first_click == UNKNOWN_POSITION and delta[-1] == 1  # the last bucket


def test_purchases_and_carts_count_each_impression_once_and_sum_revenue():
    delta = new_counters()
    raw = with_outcome(_record(), PURCHASE, 0, 10.0, delta)
    raw = with_outcome(raw, PURCHASE, 1, 2.0, delta)
    raw = with_outcome(raw, CART, 1, 0.0, delta)
    raw = with_outcome(raw, CART, 2, 0.0, delta)
    imp = decode(raw)
    assert (imp.purchases, imp.revenue, imp.add_to_carts) == (2, 12.0, 2)
    assert (delta[C.CONVERTED], delta[C.PURCHASES], delta[C.REVENUE], delta[C.CARTED]) == (1, 2, 12, 1)
    assert delta[C.REVENUE_SQ] == 144.0  # one impression worth 12: its square, not 10² + 2²
    assert imp.items.tolist() == decode(_record()).items.tolist()  # the rest is untouched
    assert imp.outcomes.tolist() == [4, 6, 2, 0, 0]  # purchased at 0, 1; carted at 1, 2


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (1, 4), (37, 1000)])
def test_wilson_matches_scipy(k, n):
    want = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((want.low, want.high))


def test_wilson_by_hand_and_without_data():
    # 1 of 4 at z = 1.96: centre (0.25 + 0.9604/8) / 1.9604, half 1.96·sqrt(3/64 + 0.9604/64) / 1.9604
    z = 1.959964
    centre = (0.25 + z * z / 8) / (1 + z * z / 4)
    half = z * ((0.25 * 0.75 / 4 + z * z / 64) ** 0.5) / (1 + z * z / 4)
    assert wilson(1, 4) == pytest.approx((centre - half, centre + half))
    assert wilson(0, 0) == (0.0, 1.0)


def test_intervals_import_nothing_the_server_did_not_import_at_start():
    """A module imported after start is left out of `gc.freeze` (server/app.py): scipy.stats,
    imported by the first gauge report, made every later full collection 15-100 ms long."""
    import subprocess
    import sys
    code = ("import sys, server.app; from server.impressions import wilson; "
            "before = set(sys.modules); wilson(3, 10); print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "[]"


def test_packing_many_answers_at_once_gives_each_ones_bytes():
    from server.impressions.records import encode_many
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 1 << 53, (4, 7))
    scores = rng.random((4, 7)).astype(np.float32)
    ts, cold, channels = np.array([1.5, 2.5, 3.5, 4.5]), np.array([True, False, False, True]), \
        ["web", "", "push", "email"]
    many = encode_many(ts, "ver-9", channels, codes, scores, cold)
    assert many == [encode(ts[i], "ver-9", channels[i], (), codes[i], scores[i], cold[i])
                    for i in range(4)]
