"""Issue 20 (training): exact top-k through FAISS, sampled evaluation users, bootstrap SE."""
import numpy as np
import pytest

from training.evaluate import eval_users, evaluate, format_table
from training.retrieval import top_k
from training.split import distinct_items

from .conftest import make_interactions


def _reference(user_vecs, item_vecs, users, seen, k):
    """Top k unseen items by a plain loop over users (what top_k must reproduce)."""
    indptr, items = seen
    out = np.full((users.shape[0], k), -1)
    for row, (u, vec) in enumerate(zip(users, user_vecs)):
        scores = item_vecs @ vec
        scores[items[indptr[u]:indptr[u + 1]]] = -np.inf
        order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])][:k]
        out[row, :len(order)] = order
    return out


@pytest.mark.parametrize("n_items", [7, 400])
def test_top_k_is_the_exact_unseen_top_k(n_items):
    rng = np.random.default_rng(3)
    item_vecs = rng.normal(size=(n_items, 8)).astype(np.float32)
    user_vecs = rng.normal(size=(40, 8)).astype(np.float32)
    users = np.arange(40) * 2                      # user codes are not row numbers
    best = np.argsort(-(user_vecs @ item_vecs.T), axis=1)[:, :3]   # hide each user's best 3
    seen_u = np.r_[np.repeat(users, 3), rng.integers(0, 80, 60)]
    seen_i = np.r_[best.ravel(), rng.integers(0, n_items, 60)]
    seen = distinct_items(seen_u, seen_i, 80)
    got, scores = top_k(user_vecs, item_vecs, users, seen, 10, batch=16)
    np.testing.assert_array_equal(got, _reference(user_vecs, item_vecs, users, seen, 10))
    assert not (got[:, :, None] == best[:, None, :]).any()   # seen items never come back
    valid = got >= 0
    np.testing.assert_allclose(scores[valid], np.einsum(
        "ud,ukd->uk", user_vecs, item_vecs[np.where(valid, got, 0)])[valid], rtol=1e-5)
    assert np.isneginf(scores[~valid]).all()


def _hold_out(n_users):
    rows = [(f"u{u:03d}", f"i{(u + j) % 9}", 10 + j, "purchase")
            for u in range(n_users) for j in range(3)]
    test = make_interactions(rows[::3])            # the first row of each user is the hold-out
    return test


def test_eval_users_samples_without_replacement_with_a_seed():
    test = _hold_out(50)
    _, _, everyone, n = eval_users(test)
    assert n == 50 and everyone.tolist() == list(range(50))
    _, _, some, n = eval_users(test, max_users=20, seed=4)
    assert n == 50 and some.shape == (20,) and np.unique(some).shape == (20,)
    assert (np.diff(some) > 0).all() and np.isin(some, everyone).all()
    assert eval_users(test, max_users=20, seed=4)[2].tolist() == some.tolist()
    assert eval_users(test, max_users=20, seed=5)[2].tolist() != some.tolist()
    assert eval_users(test, max_users=60)[2].tolist() == everyone.tolist()


def test_manifest_metrics_say_who_was_evaluated_and_the_se(trained, small_world):
    m = trained.metrics
    assert m["n_eval_users"] == m["eval"]["users"] <= m["n_test_users"]
    assert m["eval"]["of_test_users"] == m["n_test_users"]
    assert trained.fits["evaluation"]["n_test_users"] == m["n_test_users"]
    for name in ("model", "retrieval", "popularity"):
        assert 0 < m["se"][name]["ndcg@10"] < 0.05 and 0 < m["se"][name]["recall@10"] < 0.05
    table = format_table(m)
    assert f"n_eval_users = {m['n_eval_users']} of {m['n_test_users']}" in table
    assert f"{m['se']['model']['ndcg@10']:.4f}" in table


def test_a_sample_scores_within_noise_of_every_user(trained, small_world):
    """Retrieval on 600 sampled users against all users: within 3 SE of the sample."""
    from training.events import event_weights
    from training.split import temporal_split

    inter, _ = small_world
    rows = inter.subset(event_weights(inter) > 0)
    test = rows.subset(temporal_split(rows, trained.config.test_frac)[1])
    full = evaluate(trained.stage, test)
    part = evaluate(trained.stage, test, max_users=600, seed=1)
    assert part["n_eval_users"] == 600 < full["n_eval_users"] == full["n_test_users"]
    assert part["eval"]["sample"] == "uniform without replacement, seed 1"
    gap = abs(part["retrieval"]["ndcg@10"] - full["retrieval"]["ndcg@10"])
    assert gap <= 3 * part["se"]["retrieval"]["ndcg@10"]
