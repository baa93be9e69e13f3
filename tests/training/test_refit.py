"""Evaluate, then refit (issue 21): the served fit sees every row; seen sets are complete."""
import json

import numpy as np

from training.bundle import write_bundle
from training.events import EVENTS, event_weights
from training.pipeline import TrainConfig, train
from training.split import temporal_split
from training.stage import SEEN_EVENT_TYPES, seen_table

from .conftest import make_interactions


def _latest_item_per_user(rows):
    order = np.lexsort((rows.ts, rows.user))
    u = rows.user[order]
    last = np.r_[np.flatnonzero(u[1:] != u[:-1]), len(u) - 1]
    return u[last], rows.item[order][last]


def _in_history(hist, users, items):
    indptr, h_items, _ = hist
    return np.array([it in h_items[indptr[u]:indptr[u + 1]] for u, it in zip(users, items)])


def test_seen_table_on_a_hand_made_log():
    rows = [("a", "x", 5, "view"), ("a", "x", 9, "purchase"), ("a", "w", 3, "click"),
            ("b", "x", 1, "rating", 4.0), ("b", "x", 2, "rating", 5.0)]
    seen = seen_table(make_interactions(rows, item_ids=["w", "x", "y"]))
    assert seen["seen_indptr"].tolist() == [0, 2, 3]
    assert seen["seen_items"].tolist() == [0, 1, 1] and seen["seen_items"].dtype == np.int32
    bit = {e: 1 << SEEN_EVENT_TYPES.index(e) for e in EVENTS}
    expected = [bit["click"], bit["view"] | bit["purchase"], bit["rating"]]
    assert seen["seen_mask"].tolist() == expected
    assert seen["seen_mask"].dtype == np.uint32 and seen["seen_last_ts"].tolist() == [3, 9, 2]


def test_refit_serves_every_row_and_manifest_says_so(trained, small_world, tmp_path):
    inter, _ = small_world
    rows = inter.subset(event_weights(inter) > 0)
    tr, _ = temporal_split(rows, trained.config.test_frac)
    fits = trained.fits
    assert fits["served"] == {**fits["served"], "rows": len(rows), "refit": True}
    assert fits["evaluation"]["rows"] == int(tr.sum()) < len(rows)
    assert fits["served"]["cutoff"] == int(rows.ts.max()) >= fits["evaluation"]["cutoff"]
    users, items = _latest_item_per_user(rows)
    assert _in_history(trained.stage.hist, users, items).all()
    bundle = write_bundle(trained, tmp_path)
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["fits"] == json.loads(json.dumps(fits)) and m["metrics_fit"] == "evaluation"
    assert m["history"]["seen_event_types"] == list(EVENTS) and m["data"]["n_rows"] == len(rows)
    arrays = np.load(bundle / "users.npz")
    indptr, seen = arrays["seen_indptr"], arrays["seen_items"]
    assert indptr.shape == (arrays["user_ids"].shape[0] + 1,) and indptr[-1] == seen.shape[0]
    for u, it in zip(users[:200], items[:200]):   # the most recent item of a user is seen
        assert it in seen[indptr[u]:indptr[u + 1]]
    boundary = np.zeros(seen.shape[0] - 1, bool)   # position j: seen[j] ends a user's run
    inner = indptr[1:-1]
    boundary[inner[(inner > 0) & (inner < seen.shape[0])] - 1] = True
    assert ((np.diff(seen.astype(np.int64)) > 0) | boundary).all()   # ascending within a user
    assert arrays["seen_mask"].shape == seen.shape == arrays["seen_last_ts"].shape


def test_no_refit_serves_the_evaluation_fit(small_world, small_config):
    inter, catalog = small_world
    config = TrainConfig(als=small_config.als, use_ranker=False, refit=False)
    result = train(inter, catalog, config)
    assert result.fits["served"]["refit"] is False
    served, evaluation = result.fits["served"], result.fits["evaluation"]
    assert served["rows"] == evaluation["rows"] == len(result.train_rows)
    rows = inter.subset(event_weights(inter) > 0)
    users, items = _latest_item_per_user(rows)
    assert not _in_history(result.stage.hist, users, items).all()
