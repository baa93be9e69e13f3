import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import ranking
from kernels.ranking import FEATURES, ItemTable

HAND = ItemTable.from_arrays(category=[0, 1, 1, 2], price=[0.0, np.e - 1, 9.0, 1.0],
                             popularity=[0, 3, 1, 7], recency_days=[1, 0, 2, 5])


def _table(rng, n, n_categories):
    return ItemTable.from_arrays(rng.integers(0, n_categories, n), rng.lognormal(2, 1, n),
                                 rng.integers(0, 100, n), rng.random(n) * 30,
                                 n_categories=n_categories)


def _inputs(rng, b, h, k, n):
    """Histories with zero/negative-weight padding and out-of-range rows; candidates with -1 padding."""
    items = rng.integers(-3, n + 3, (b, h))
    w = rng.exponential(1, (b, h)).astype(np.float32)
    w[rng.random((b, h)) < 0.3] = 0
    w[rng.random((b, h)) < 0.05] = -1
    if b > 1:
        w[1] = 0  # one user with an all-padding history
    cands = rng.integers(0, n, (b, k))
    cands[:, k - k // 5:] = -1
    scores = -np.sort(-rng.normal(size=(b, k)).astype(np.float32), axis=1)
    return items, w, cands, scores


def _assert_agree(table, *args):
    native = ranking.features(*args, table)
    reference = ranking.features(*args, table, use_native=False)
    assert native.dtype == np.float32 and native.shape == reference.shape
    np.testing.assert_allclose(native, reference, rtol=1e-6, atol=1e-6)
    return native


@pytest.mark.parametrize("b", [1, 64])
@pytest.mark.parametrize("k", [0, 1, 110])
@pytest.mark.parametrize("n_categories", [1, 30, 3000])
def test_native_matches_reference(b, k, n_categories):
    rng = np.random.default_rng(b * 1000 + k * 10 + n_categories)
    table = _table(rng, 5000, n_categories)
    out = _assert_agree(table, *_inputs(rng, b, 50, k, 5000))
    assert out.shape == (b, k, len(FEATURES))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 8), st.integers(0, 20), st.integers(0, 30), st.integers(1, 40),
       st.integers(0, 2**32 - 1))
def test_native_matches_reference_on_any_shape(b, h, k, n_categories, seed):
    rng = np.random.default_rng(seed)
    _assert_agree(_table(rng, 60, n_categories), *_inputs(rng, b, h, k, 60))


@pytest.mark.parametrize("use_native", [True, False])
def test_hand_case(use_native):
    out = ranking.features(np.array([[0, 1, 2], [3, 3, 0]]), np.array([[1.0, 1.0, 2.0], [0, 0, 0]]),
                           np.array([[2, 3], [1, -1]]), np.array([[0.9, 0.5], [0.3, 0.1]]),
                           HAND, use_native=use_native)
    lg = np.log1p
    mean_lp = (lg(0) + 1.0 + 2 * lg(9.0)) / 4
    expected = [[[0.9, 0, 0, lg(1), lg(2), 0.75, lg(9), lg(9) - mean_lp, lg(3)],
                 [0.5, 1, -0.4, lg(7), lg(5), 0, lg(1), mean_lp - lg(1), lg(3)]],
                [[0.3, 0, 0, lg(3), lg(0), 0, 1.0, 1.0, 0],
                 [0.1, 1, -0.2, 0, lg(1), 0, 0, 0, 0]]]  # row -1 reads item 0
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_a_user_without_history_sees_no_shares_of_the_previous_user():
    items = np.array([[1, 2, 1], [1, 2, 1], [1, 2, 1]])
    w = np.array([[1, 1, 1], [0, 0, 0], [1, 0, 0]], np.float32)
    out = ranking.features(items, w, np.array([[1], [1], [2]]), np.zeros((3, 1), np.float32), HAND)
    np.testing.assert_allclose(out[:, 0, FEATURES.index("category_affinity")], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(out[:, 0, FEATURES.index("log_history_len")], np.log1p([3, 0, 1]))


def test_other_dtypes_and_layouts_give_the_reference():
    rng = np.random.default_rng(7)
    table = _table(rng, 300, 12)
    items, w, cands, scores = _inputs(rng, 5, 9, 14, 300)
    _assert_agree(table, items.astype(np.int32), w.astype(np.float64) * (1 + 1e-9),
                  np.asfortranarray(cands), scores.astype(np.float64))
    _assert_agree(table, items.clip(0).astype(np.uint16), w.astype(np.float16),
                  cands[:, ::-1], scores[:, ::-1])
    huge = np.array([[2**64 - 1, 5]], np.uint64)  # clipped to the last item, not wrapped to -1
    _assert_agree(table, huge, np.ones((1, 2), np.float32), huge, np.ones((1, 2), np.float32))


@pytest.mark.parametrize("use_native", [True, False])
@pytest.mark.parametrize("args, match", [
    ((np.zeros((2, 3), np.int64), np.zeros((2, 4), np.float32), np.zeros((2, 5), np.int64),
      np.zeros((2, 5), np.float32)), "hist_weights"),
    ((np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32), np.zeros((3, 5), np.int64),
      np.zeros((3, 5), np.float32)), "2 users"),
    ((np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32), np.zeros((2, 5), np.int64),
      np.zeros((2, 4), np.float32)), "scores"),
    ((np.zeros(3, np.int64), np.zeros(3, np.float32), np.zeros((1, 5), np.int64),
      np.zeros((1, 5), np.float32)), "hist_items must be 2-D"),
    ((np.zeros((2, 3), np.float64), np.zeros((2, 3), np.float32), np.zeros((2, 5), np.int64),
      np.zeros((2, 5), np.float32)), "hist_items must have dtype"),
    ((np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32), np.zeros((2, 5), np.int64),
      np.zeros((2, 5), np.int32)), "scores must have dtype"),
])
def test_bad_inputs_are_refused(use_native, args, match):
    with pytest.raises(ValueError, match=match):
        ranking.features(*args, HAND, use_native=use_native)


@pytest.mark.parametrize("table, match", [
    (ItemTable(np.zeros(0, np.int64), 1, *[np.zeros(0, np.float32)] * 3), "must have items"),
    (ItemTable(np.zeros(3, np.int64), 0, *[np.zeros(3, np.float32)] * 3), "n_categories=0"),
    (ItemTable(np.zeros(3, np.int64), 1, np.zeros(3, np.float32), np.zeros(2, np.float32),
               np.zeros(3, np.float32)), r"log_popularity must have shape \(3,\)"),
])
def test_bad_tables_are_refused(table, match):
    args = np.zeros((1, 2), np.int64), np.ones((1, 2), np.float32), np.zeros((1, 2), np.int64)
    for use_native in (True, False):
        with pytest.raises(ValueError, match=match):
            ranking.features(*args, np.zeros((1, 2), np.float32), table, use_native=use_native)


@pytest.mark.parametrize("bad_row, slot", [(2, "history"), (3, "candidate")])
def test_native_refuses_a_category_outside_the_table(bad_row, slot):
    category = np.array([0, 1, 0, 1])
    category[bad_row] = 5 if slot == "history" else -1
    table = ItemTable(category, 2, *[np.zeros(4, np.float32)] * 3)
    message = rf"table.category\[{bad_row}\] = {category[bad_row]} is outside \[0, 2\)"
    with pytest.raises(ValueError, match=message):
        ranking.features(np.array([[0, 2]]), np.array([[1.0, 0.0]], np.float32),
                         np.array([[1, 3]]), np.zeros((1, 2), np.float32), table)
