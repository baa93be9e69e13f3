import numpy as np
import pytest

from training.metrics import ranking_metrics


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
