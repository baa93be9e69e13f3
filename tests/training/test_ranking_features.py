import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.ranking import FEATURES, ItemTable, candidate_features, user_context

TABLE = ItemTable.from_arrays(category=[0, 1, 1, 2], price=[0.0, np.e - 1, 9.0, 1.0],
                              popularity=[0, 3, 1, 7], recency_days=[1, 0, 2, 5])


def _f(out, name):
    return out[..., FEATURES.index(name)]


def test_hand_case():
    ctx = user_context(np.array([[0, 1, 2], [3, 3, 0]]),
                       np.array([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]], np.float32), TABLE)
    out = candidate_features(ctx, np.array([[2, 3], [1, 0]]),
                             np.array([[0.9, 0.5], [0.3, 0.1]], np.float32), TABLE)
    assert out.shape == (2, 2, len(FEATURES)) and out.dtype == np.float32
    np.testing.assert_allclose(_f(out, "category_affinity")[0], [0.75, 0.0])
    np.testing.assert_allclose(_f(out, "retrieval_rank")[0], [0, 1])
    np.testing.assert_allclose(_f(out, "score_gap")[0], [0.0, -0.4], rtol=1e-6)
    np.testing.assert_allclose(_f(out, "log_popularity")[0], np.log1p([1, 7]), rtol=1e-6)
    np.testing.assert_allclose(_f(out, "log_recency_days")[0], np.log1p([2, 5]), rtol=1e-6)
    mean_lp = (np.log1p(0) + 1.0 + 2 * np.log1p(9.0)) / 4
    np.testing.assert_allclose(_f(out, "price_gap")[0], np.abs(np.log1p([9.0, 1.0]) - mean_lp),
                               rtol=1e-5)
    np.testing.assert_allclose(_f(out, "log_history_len")[:, 0], np.log1p([3, 0]), rtol=1e-6)
    assert np.isfinite(out).all()    # an empty history gives zeros, not NaN


def test_padding_candidates_stay_finite():
    ctx = user_context(np.zeros((1, 2), np.int64), np.ones((1, 2), np.float32), TABLE)
    out = candidate_features(ctx, np.array([[1, -1]]), np.array([[0.2, 0.0]], np.float32), TABLE)
    assert np.isfinite(out).all()


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="hist_weights"):
        user_context(np.zeros((2, 3), np.int64), np.zeros((2, 4), np.float32), TABLE)
    ctx = user_context(np.zeros((2, 3), np.int64), np.ones((2, 3), np.float32), TABLE)
    with pytest.raises(ValueError, match="scores"):
        candidate_features(ctx, np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int32), TABLE)
    with pytest.raises(ValueError, match="price"):
        ItemTable.from_arrays([0, 1], [1.0], [0, 0], [0, 0])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_features_are_finite_and_shares_sum_to_one(b, h, k, seed):
    rng = np.random.default_rng(seed)
    table = ItemTable.from_arrays(rng.integers(0, 5, 50), rng.lognormal(2, 1, 50),
                                  rng.integers(0, 100, 50), rng.random(50) * 30, n_categories=5)
    w = np.where(rng.random((b, h)) < 0.3, 0, rng.exponential(1, (b, h))).astype(np.float32)
    ctx = user_context(rng.integers(0, 50, (b, h)), w, table)
    has = (w > 0).any(axis=1)
    np.testing.assert_allclose(ctx.category_share.sum(axis=1)[has], 1.0, rtol=1e-5)
    assert (ctx.category_share[~has] == 0).all()
    scores = -np.sort(-rng.standard_normal((b, k)).astype(np.float32), axis=1)
    out = candidate_features(ctx, rng.integers(-1, 50, (b, k)), scores, table)
    assert out.shape == (b, k, len(FEATURES)) and np.isfinite(out).all()
    assert (_f(out, "score_gap") <= 1e-6).all()
