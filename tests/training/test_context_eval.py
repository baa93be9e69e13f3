import numpy as np
import pytest

from kernels.context import daypart
from training.als import ALSParams
from training.context_eval import demo_rows, requests, run
from training.demo import DemoConfig
from training.ranker import RankerParams

TINY = DemoConfig(n_users=600, n_items=200, n_days=21, seed=2, chunk_users=600)


def test_requests_group_rows_by_user_channel_and_daypart():
    rows, _, channel = demo_rows(TINY, 1.0)
    users, ch, part, (indptr, items) = requests(rows, channel)
    key = set(zip(rows.user.tolist(), channel.tolist(), daypart(rows.ts).tolist()))
    assert len(key) == users.shape[0] == indptr.shape[0] - 1
    assert set(zip(users.tolist(), ch.tolist(), part.tolist())) == key
    # each request's items are exactly the rows' items in that context
    r = 5
    mask = (rows.user == users[r]) & (channel == ch[r]) & (daypart(rows.ts) == part[r])
    assert items[indptr[r]:indptr[r + 1]].tolist() == sorted(set(rows.item[mask].tolist()))


def test_run_scores_all_three_methods_on_the_same_requests():
    out = run(TINY, 1.0, RankerParams(n_candidates=30, n_estimators=20, max_users=2000),
              ALSParams(factors=16, iterations=4), max_requests=1500)
    assert out["n_requests"] > 0
    for name in ("retrieval", "ranker", "ranker+context"):
        assert 0 < out[name]["recall@10"] <= 1 and 0 < out[name]["ndcg@10"] <= 1
    assert np.isfinite(out["ranker+context"]["trees"])


def test_context_features_need_a_channel_per_row():
    from dataclasses import replace

    from training.pipeline import TrainConfig, train
    rows, catalog, channel = demo_rows(TINY, 1.0)
    with pytest.raises(ValueError, match="channel"):
        train(rows, catalog, TrainConfig(context_features=True))
    with pytest.raises(ValueError, match="ranker"):
        train(replace(rows, channel=channel), catalog,
              TrainConfig(context_features=True, use_ranker=False))


def test_evaluate_requests_scores_each_request_in_its_context():
    from dataclasses import replace

    from training.context_ranker import evaluate_requests, fit_table, requests
    from training.events import DEFAULT_EVENT_WEIGHTS
    from training.split import temporal_split
    from training.stage import fit_stage
    rows, catalog, channel = demo_rows(TINY, 1.0)
    rows = replace(rows, channel=channel)
    tr, te = temporal_split(rows, 0.2)
    stage = fit_stage(rows.subset(tr), catalog, ALSParams(factors=8, iterations=3),
                      DEFAULT_EVENT_WEIGHTS)
    out = evaluate_requests(stage, fit_table(rows.subset(tr), catalog), rows.subset(te),
                            n_candidates=20)
    assert out["n_eval_users"] == requests(rows.subset(te))[0].shape[0] > 0
    assert out["model"] == out["retrieval"]  # no ranker: the retrieval lists
    assert 0 < out["retrieval"]["ndcg@10"] <= 1 and out["se"]["retrieval"]["ndcg@10"] > 0
    # the SE resamples users (their requests together), and the table says requests, not users
    from training.evaluate import eval_units, format_table

    req = requests(rows.subset(te))
    assert out["n_eval_users"] > np.unique(req[0]).shape[0]   # several requests per user
    assert out["eval"]["se"].startswith("bootstrap over the users")
    assert out["eval"]["n_users"] == np.unique(req[0]).shape[0]
    assert eval_units(out) == "requests" and eval_units({"eval": {}}) == "users"
    assert f"n_eval requests = {out['n_eval_users']} of " in format_table(out)
    assert "users with test items" not in format_table(out)
