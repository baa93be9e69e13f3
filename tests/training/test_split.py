import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.split import distinct_items, temporal_split

from .conftest import make_interactions


def test_holds_out_last_fifth_rounded_down_at_least_one():
    rows = [("a", f"i{k}", 100 + k) for k in range(10)] + [("b", "i1", 5), ("b", "i2", 6)]
    train, test = temporal_split(make_interactions(rows))
    assert test.tolist() == [False] * 8 + [True] * 2 + [False, True]


def test_single_interaction_users_stay_in_training():
    rows = [("a", "x", 1), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3)]
    train, test = temporal_split(make_interactions(rows))
    assert test.tolist() == [False, False, False, True]


def test_ties_broken_by_item_id_then_input_order():
    rows = [("a", "z", 10), ("a", "b", 10), ("a", "c", 5), ("a", "b", 10), ("a", "m", 1)]
    inter = make_interactions(rows, item_ids=["z", "m", "c", "b"])  # codes not in id order
    _, test = temporal_split(inter)   # n=5 -> hold out 1: last of (10,b),(10,b),(10,z) is z
    assert test.tolist() == [True, False, False, False, False]


def test_frac_rounds_down():
    rows = [("a", f"i{k}", k) for k in range(14)]
    _, test = temporal_split(make_interactions(rows))
    assert test.sum() == 2  # floor(0.2 * 14) = 2


def test_rejects_bad_fraction():
    with pytest.raises(ValueError, match="frac"):
        temporal_split(make_interactions([("a", "x", 1)]), 1.5)


def test_test_sets_are_distinct_items_per_user():
    indptr, items = distinct_items(np.array([0, 0, 2, 0]), np.array([3, 3, 1, 1]), 3)
    assert indptr.tolist() == [0, 2, 2, 3]
    assert items.tolist() == [1, 3, 1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 5)),
                min_size=1, max_size=60))
def test_split_property(rows):
    inter = make_interactions([(f"u{u}", f"i{i}", t) for u, i, t in rows])
    train, test = temporal_split(inter)
    assert (train ^ test).all()
    for u in range(inter.n_users):
        mine = inter.user == u
        n = int(mine.sum())
        assert test[mine].sum() == (max(1, n // 5) if n >= 2 else 0)
        key = list(zip(inter.ts, inter.item_ids[inter.item]))
        held = [key[k] for k in np.flatnonzero(mine & test)]
        kept = [key[k] for k in np.flatnonzero(mine & train)]
        assert not held or not kept or min(held) >= max(kept)
