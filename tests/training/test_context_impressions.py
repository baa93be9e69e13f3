"""Context features from the impression log: the reader, the take-rate lift tables (by hand), the
labels of shown candidates, and the demo world's simulated log."""
import json
from math import log

import numpy as np
import pytest

from tests.training.conftest import make_interactions
from training.context_impressions import _labels, before_cutoffs, fit_rates
from training.demo import DemoConfig
from training.demo_files import write_demo
from training.impression_log import ImpressionRows, read_impressions, user_cutoffs
from training.readers import load

MONDAY_9H, SATURDAY_21H = 1_701_680_400, 1_702_155_600  # UTC dayparts 1 and 7
ITEMS = np.array(["i0", "i1", "i2"])
CATEGORY = np.array([0, 1, 0])


def _line(user, channel, ts, shown):
    """One impressions.jsonl object as `training export --impressions` writes it."""
    return json.dumps({
        "request_id": f"r{ts}{channel}", "user_ref": "k1:00", "user_id": user, "timestamp": ts,
        "model_version": "v", "channel": channel, "context": {}, "cold_start": False,
        "items": [{"item_id": i, "position": p + 1, "score": 0.5, "clicked": c, "carted": False,
                   "purchased": False} for p, (i, c) in enumerate(shown)],
        "first_click": 0, "clicks": 0, "add_to_carts": 0, "purchases": 0, "revenue": 0.0})


@pytest.fixture
def hand_log(tmp_path):
    path = tmp_path / "impressions.jsonl"
    path.write_text("\n".join([
        _line("ann", "web", MONDAY_9H, [("i0", True), ("i1", False)]),
        _line("bob", "app", MONDAY_9H, [("i0", False), ("code:99", True), ("i1", True)]),
        _line("ann", "web", SATURDAY_21H, [("i2", True), ("i1", True)]),
        _line("", "push", MONDAY_9H, [("i0", False)]),  # hash only, a channel without a table
    ]) + "\n")
    return read_impressions(path, np.array(["ann", "bob"]), ITEMS)


def test_the_reader_keeps_catalog_items_in_position_order(hand_log):
    assert hand_log.user.tolist() == [0, 1, 0, -1]
    assert hand_log.channel.tolist() == [0, 1, 0, -1]
    assert hand_log.indptr.tolist() == [0, 2, 4, 6, 7]  # "code:99" is not in the catalog
    assert hand_log.item.tolist() == [0, 1, 0, 1, 2, 1, 0]
    assert hand_log.positive.tolist() == [True, False, False, True, True, True, False]


def test_lifts_are_take_rates_relative_to_the_category_shrunk_by_prior_shows(hand_log):
    # m = 2 shows; 7 shown, 4 taken: r0 = 4/7. Category 0: 2 of 4, category 1: 2 of 3, so
    # r[0] = (2 + 2 r0) / 6 = 11/21 and r[1] = (2 + 2 r0) / 5 = 22/35.
    t = fit_rates(hand_log, CATEGORY, 2, prior_shows=2)
    web = [log((2 + 2 * 11 / 21) / 4 / (11 / 21)), log((1 + 2 * 22 / 35) / 4 / (22 / 35))]
    app = [log((0 + 2 * 11 / 21) / 3 / (11 / 21)), log((1 + 2 * 22 / 35) / 3 / (22 / 35))]
    assert t.channel_lift[0] == pytest.approx(web, rel=1e-5)   # log(16/11), log(79/88)
    assert t.channel_lift[1] == pytest.approx(app, rel=1e-5)   # log(2/3), log(79/66)
    assert t.channel_lift[2].tolist() == [0.0, 0.0]            # email: never shown
    # Monday 9h: the push request counts here (3 shows of category 0, 1 taken)
    assert t.daypart_lift[1] == pytest.approx([log(43 / 55), log(79 / 88)], rel=1e-5)
    assert t.daypart_lift[7] == pytest.approx([log(43 / 33), log(79 / 66)], rel=1e-5)
    assert not np.delete(t.daypart_lift, [1, 7], axis=0).any()
    t.check(2)


def test_a_context_shown_more_but_taken_at_the_same_rate_gets_no_lift():
    # the app showed category 0 nine times as often as the web, both at rate 1/3
    n_web, n_app = 3, 27
    imps = ImpressionRows(np.zeros(2, np.int64), np.array([0, 1]), np.full(2, MONDAY_9H),
                          np.array([0, n_web, n_web + n_app]), np.zeros(n_web + n_app, np.int64),
                          np.r_[[True, False, False], np.tile([True, False, False], 9)])
    assert fit_rates(imps, np.array([0]), 1, prior_shows=5).channel_lift[:2] == pytest.approx(0)


def test_no_taken_item_is_refused(hand_log):
    none = ImpressionRows(hand_log.user, hand_log.channel, hand_log.ts, hand_log.indptr,
                          hand_log.item, np.zeros_like(hand_log.positive))
    with pytest.raises(ValueError, match="clicked"):
        fit_rates(none, CATEGORY, 2)


def test_impressions_before_the_users_hold_out_only(hand_log):
    rows = make_interactions([("ann", "i0", 10), ("ann", "i1", MONDAY_9H + 5), ("bob", "i0", 1)])
    cut = user_cutoffs(rows, rows.ts > 100)  # ann's later row; bob has none
    assert cut[0] == MONDAY_9H + 5 and cut[1] == np.iinfo(np.int64).max
    assert before_cutoffs(hand_log, cut).tolist() == [True, True, False, True]


def test_shown_candidates_are_labelled_taken_or_not_and_the_rest_left_out(hand_log):
    cand = np.array([[1, 2, 0, -1], [2, 0, 1, -1], [0, 1, 2, -1], [0, 1, 2, -1]])
    shown, taken = _labels(hand_log, cand, 3)
    assert shown.tolist() == [[1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0]]
    assert taken.tolist() == [[0, 0, 1, 0], [0, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


TINY = DemoConfig(n_users=400, n_items=120, n_days=14, seed=3, chunk_users=150)


def test_the_demo_log_is_deterministic_and_read_like_an_export(tmp_path):
    for name in ("a", "b"):
        write_demo(tmp_path / name, TINY, context_tastes=1.0, impressions_per_user=4)
    write_demo(tmp_path / "plain", TINY, context_tastes=1.0)
    for f in ("impressions.jsonl", "interactions.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    inter, _ = load(tmp_path / "a" / "interactions.csv", tmp_path / "a" / "items.csv")
    imps = read_impressions(tmp_path / "a" / "impressions.jsonl", inter.user_ids, inter.item_ids)
    assert len(imps) > 1000 and (imps.user >= 0).all() and set(imps.channel.tolist()) == {0, 1}
    sizes = np.diff(imps.indptr)  # 10 distinct of 20 picks; fewer where a taste is narrow and
    # its categories small (120 items in 16 categories here)
    assert sizes.max() == 10 and sizes.min() > 0 and (sizes == 10).mean() > 0.6
    assert 0 < imps.positive.mean() < 1
    lines = [json.loads(x) for x in (tmp_path / "a" / "impressions.jsonl").read_text().splitlines()]
    assert [r["clicks"] for r in lines] == [sum(i["clicked"] for i in r["items"]) for r in lines]
    # every click is an event too; the world's own rows are unchanged
    plain, _ = load(tmp_path / "plain" / "interactions.csv", tmp_path / "plain" / "items.csv")
    assert len(inter) - len(plain) == imps.positive.sum()


def test_impressions_without_context_features_are_refused(hand_log):
    from training.pipeline import TrainConfig, train
    rows = make_interactions([("ann", "i0", 10), ("bob", "i1", 20)])
    with pytest.raises(ValueError, match="--context-features"):
        train(rows, None, TrainConfig(), impressions=hand_log)


def test_retrain_takes_the_log_only_when_something_in_it_was_taken(tmp_path, capsys):
    from training.retrain import _impressions
    rows = make_interactions([("ann", "i0", 10), ("ann", "i1", 20)], item_ids=ITEMS.tolist())
    path = tmp_path / "impressions.jsonl"
    path.write_text(_line("ann", "web", MONDAY_9H, [("i0", False), ("i1", False)]) + "\n")
    assert _impressions(path, rows) is None and "from the events" in capsys.readouterr().err
    path.write_text(_line("ann", "web", MONDAY_9H, [("i0", False), ("i1", True)]) + "\n")
    assert _impressions(path, rows).positive.tolist() == [False, True]
