import numpy as np


def test_pipeline_beats_baselines(trained):
    m = trained.metrics
    assert m["n_eval_users"] > 1000
    assert m["retrieval"]["ndcg@10"] > 1.5 * m["popularity"]["ndcg@10"]
    info = trained.ranker_info  # kept or dropped on its own validation users, not on these
    assert (trained.ranker is None) == (info["valid_ndcg"] <= info["valid_retrieval_ndcg"])
    if trained.ranker is not None:
        assert m["model"]["ndcg@10"] > m["retrieval"]["ndcg@10"]
        assert m["model"]["ndcg@10"] > m["popularity"]["ndcg@10"]
    else:
        assert m["model"] == m["retrieval"] and trained.ranker_info.get("dropped")


def test_item_factors_recover_ground_truth_categories(trained, world_dir):
    gt = np.load(world_dir / "ground_truth.npz")
    truth = gt["item_category"]
    item_ids = trained.catalog.item_ids.astype(int)
    category = truth[item_ids]
    f = trained.stage.item_factors
    active = trained.stage.popularity >= 5
    v = f[active] / np.linalg.norm(f[active], axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    nn = np.argsort(-sim, axis=1)[:, :10]
    cat = category[active]
    purity = (cat[nn] == cat[:, None]).mean()
    chance = ((np.bincount(cat) / cat.shape[0]) ** 2).sum()
    assert purity > max(0.8, 5 * chance), (purity, chance)


def test_user_vectors_align_with_ground_truth_taste(trained, world_dir):
    """Users whose learned vectors are close should have close true tastes."""
    gt = np.load(world_dir / "ground_truth.npz")
    users = trained.train_rows.user_ids.astype(int)
    rows = np.arange(0, users.shape[0], 7)
    learned = trained.stage.user_vectors(rows)
    learned /= np.maximum(np.linalg.norm(learned, axis=1, keepdims=True), 1e-9)
    taste = gt["user_taste"][users[rows]]
    nn = np.argsort(-(learned @ learned.T), axis=1)[:, 1:6]
    near = (taste[:, None, :] * taste[nn]).sum(-1).mean()
    rand = (taste @ taste.T).mean()
    assert near > rand + 0.4, (near, rand)
