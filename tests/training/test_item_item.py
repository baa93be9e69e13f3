import numpy as np
import pytest

from training.ceiling import oracle_recommendations, view_probabilities
from training.demo import DemoConfig, make_world, user_events
from training.events import Interactions
from training.item_item import ITEM_ITEM_FEATURES, item_item_features, neighbour_table


def _rows(pairs, n_users=3, n_items=3) -> Interactions:
    user, item = np.array(pairs, np.int32).T
    n = user.shape[0]
    return Interactions(np.arange(n_users).astype(str), np.arange(n_items).astype(str), user,
                        item, np.arange(n, dtype=np.int64), np.zeros(n, np.int8),
                        np.zeros(n, np.float32))


# users {0, 1}, {0, 1}, {1, 2}: co-counts C01 = 2, C12 = 1, C02 = 0; item counts 2, 3, 1
ROWS = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 1), (2, 1), (2, 2)]
A, B = 2 / np.sqrt(6), 1 / np.sqrt(3)       # cosine S01, S12


def test_cosine_table_keeps_positive_neighbours_ascending():
    t = neighbour_table(_rows(ROWS), "cosine", m=2)
    assert t.indptr.tolist() == [0, 1, 3, 4]
    assert t.neighbours.tolist() == [1, 0, 2, 1]
    assert t.weights == pytest.approx([A, A, B, B], rel=1e-6)
    assert t.lookup(np.array([0, 2, 0]), np.array([2, 0, 0])).tolist() == [0, 0, 0]


def test_top_m_cuts_to_the_strongest():
    t = neighbour_table(_rows(ROWS), "cosine", m=1)
    assert t.neighbours.tolist() == [1, 0, 1]


def test_ease_table_matches_the_closed_form():
    x = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], float)
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(3))
    b = p / -np.diag(p)[None, :]
    t = neighbour_table(_rows(ROWS), "ease", m=2, regularization=2.0)
    for h in range(3):
        for c in range(3):
            want = b[h, c] if h != c and b[h, c] > 0 else 0.0
            assert t.lookup(np.array(h), np.array(c)) == pytest.approx(want, rel=1e-5)


def test_features_by_hand():
    t = neighbour_table(_rows(ROWS), "cosine", m=2)
    hist = np.array([[0, 0, 2]])                 # first slot is padding (weight 0)
    weights = np.array([[0.0, 1.0, 0.5]], np.float32)
    cand = np.array([[1, 0, -1]])
    f = item_item_features(t, hist, weights, cand, np.array([0, 0, 1]))
    assert f.shape == (1, 3, len(ITEM_ITEM_FEATURES))
    assert f[0, 0] == pytest.approx([A + B, A + 0.5 * B, A, B, A + B, 1], rel=1e-6)
    assert f[0, 1] == pytest.approx([0, 0, 0, 0, 0, 1])


def test_oracle_ranks_by_probability_and_drops_seen():
    prob = np.array([[0.1, 0.5, 0.3, 0.1]])
    seen = (np.array([0, 0, 1]), np.array([1]))
    assert oracle_recommendations(prob, seen, np.array([1]), 3).tolist() == [[2, 0, 3]]


def test_view_probabilities_follow_the_users_categories():
    cfg = DemoConfig(n_users=50, n_items=300, n_days=7, seed=3, chunk_users=50)
    world = make_world(cfg)
    users, _ = user_events(cfg, world, 0)
    prob = view_probabilities(world, cfg, users, np.arange(5), n_samples=400)
    assert prob.sum(axis=1) == pytest.approx(np.ones(5))
    in_mix = users["mix"][np.arange(5)][:, world.category] > 0
    # 10% of views explore; the rest stay in the user's own categories
    assert (prob * in_mix).sum(axis=1).min() > 0.85


def test_item_item_stage_appends_the_columns_to_the_stage_features():
    from kernels.ranking import FEATURES
    from training.als import ALSParams
    from training.item_item_eval import ItemItemStage, world_rows
    from training.stage import fit_stage

    cfg = DemoConfig(n_users=300, n_items=150, n_days=14, seed=2, chunk_users=300)
    inter, catalog, _, truth = world_rows(cfg)
    assert truth["taste"].shape == (300, cfg.dim)
    stage = fit_stage(inter, catalog, ALSParams(factors=8, iterations=2, history_len=10))
    table = neighbour_table(inter, "ease", m=10)
    users = np.arange(5)
    cand, scores = stage.candidates(users, 20)
    got = ItemItemStage(stage, table).features(users, cand, scores)
    assert got.shape == (5, 20, len(FEATURES) + len(ITEM_ITEM_FEATURES))
    np.testing.assert_array_equal(got[..., :len(FEATURES)], stage.features(users, cand, scores))
    # the EASE sum of a candidate is the sum of its weights from the user's window items
    items = stage.hist[1]
    lo, hi = stage.hist[0][0], stage.hist[0][1]
    want = sum(table.lookup(np.array(h), np.array(cand[0, 0])) for h in items[lo:hi])
    assert got[0, 0, len(FEATURES)] == pytest.approx(float(want), rel=1e-5)
