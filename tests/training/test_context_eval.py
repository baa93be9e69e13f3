import numpy as np

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
