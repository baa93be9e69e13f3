import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.metrics import group_ndcg, ranking_metrics


def _csr(sets):
    indptr = np.r_[0, np.cumsum([len(s) for s in sets])]
    return indptr, np.array([i for s in sets for i in sorted(s)], np.int64)


def test_hand_case_two_users():
    indptr, items = _csr([{1, 5}, {7}, set()])
    recs = np.array([[5, 2, 3, 1, 0, 4, 6, 8, 9, 10, 11],
                     [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 7],
                     [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    m = ranking_metrics(recs, indptr, items, np.array([0, 1, 2]), n_items=20)
    # user 0: hits at ranks 1 and 4; user 1: hit at rank 11 is beyond k; user 2 has no test items
    assert m["n_users"] == 2
    assert m["recall@10"] == pytest.approx((2 / 2 + 0) / 2)
    idcg = 1 + 1 / np.log2(3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(5)) / idcg / 2)
    assert m["map@10"] == pytest.approx((1 + 2 / 4) / 2 / 2)
    assert m["coverage"] == pytest.approx(len({0, 1, 2, 3, 4, 5, 6, 8, 9, 10}) / 20)


def test_denominator_is_min_k_and_test_size():
    test = set(range(100, 115))  # 15 test items, 3 hits in top 10
    indptr, items = _csr([test])
    recs = np.array([[100, 1, 101, 2, 3, 4, 5, 6, 7, 102]])
    m = ranking_metrics(recs, indptr, items, np.array([0]), n_items=200)
    assert m["recall@10"] == pytest.approx(3 / 10)
    assert m["map@10"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 10) / 10)
    ideal = sum(1 / np.log2(j + 2) for j in range(10))
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(11)) / ideal)


def test_empty_slots_never_hit_and_are_not_covered():
    indptr, items = _csr([{0}])
    recs = np.array([[-1] * 9 + [0]])
    m = ranking_metrics(recs, indptr, items, np.array([0]), n_items=4)
    assert m["recall@10"] == 1.0
    assert m["ndcg@10"] == pytest.approx(1 / np.log2(11))
    assert m["coverage"] == 0.25


def test_perfect_ranking_scores_one():
    indptr, items = _csr([{3, 4, 5}])
    m = ranking_metrics(np.array([[5, 3, 4, 0, 1, 2, 6, 7, 8, 9]]), indptr, items,
                        np.array([0]), n_items=10)
    assert m["recall@10"] == m["ndcg@10"] == m["map@10"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sets(st.integers(0, 29), min_size=1, max_size=12), min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_metrics_bounded_and_perfect_lists_score_one(sets, rnd):
    indptr, items = _csr(sets)
    users = np.arange(len(sets))
    recs = np.array([rnd.sample(range(30), 10) for _ in sets])
    m = ranking_metrics(recs, indptr, items, users, n_items=30)
    for key in ("recall@10", "ndcg@10", "map@10", "coverage"):
        assert 0.0 <= m[key] <= 1.0 + 1e-12
    perfect = np.array([sorted(s)[:10] + [x for x in range(30) if x not in s][:10 - min(10, len(s))]
                        for s in sets])
    p = ranking_metrics(perfect, indptr, items, users, n_items=30)
    assert p["recall@10"] == pytest.approx(1.0) and p["ndcg@10"] == pytest.approx(1.0)
    assert p["map@10"] == pytest.approx(1.0)


def test_bootstrap_se_over_groups_resamples_whole_groups():
    # a user's requests are not independent: resampled one by one, two identical requests
    # per user gave an SE ~1/sqrt(2) of the right one
    from training.metrics import bootstrap_se

    values = np.random.default_rng(1).random(300)
    twice = np.repeat(values, 2)
    groups = np.repeat(np.arange(300) * 7 + 3, 2)   # any labels
    assert bootstrap_se(twice, groups=groups) == pytest.approx(bootstrap_se(values), rel=1e-12)
    assert bootstrap_se(twice) < 0.8 * bootstrap_se(values)
    with pytest.raises(ValueError, match="one group label per value"):
        bootstrap_se(twice, groups=groups[1:])


def test_group_ndcg_by_hand():
    """Group 1: relevant rows at ranks 2 and 3 of 3 (scores 0.9, 0.5, 0.1 on rows 1, 2, 0);
    group 2: one relevant row ranked first; group 3: none relevant, left out."""
    scores = np.array([0.1, 0.9, 0.5, 3.0, 1.0, 0.2, 0.3])
    labels = np.array([1, 0, 1, 1, 0, 0, 0])
    got = group_ndcg(scores, labels, np.array([3, 2, 2]))
    first = (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert got == pytest.approx((first + 1.0) / 2)
    assert group_ndcg(scores[:3], labels[:3], np.array([3]), k=1) == 0.0  # the top row misses
    assert group_ndcg(scores[5:], labels[5:], np.array([2])) == 0.0  # no group counted
