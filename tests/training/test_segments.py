"""User segments of the offline metrics (training.segments, training.evaluate.segment_metrics)."""
import numpy as np

from training.evaluate import segment_metrics
from training.events import Interactions
from training.segments import user_segments

DAY = 86400


def _rows(user, ts, n_users=4):
    n = len(user)
    return Interactions(np.array([f"u{i}" for i in range(n_users)]), np.array(["a", "b"]),
                        np.array(user, np.int32), np.zeros(n, np.int32), np.array(ts, np.int64),
                        np.zeros(n, np.int8), np.zeros(n, np.float32))


def test_new_returning_and_activity_by_hand():
    cutoff = 100 * DAY
    # u0: 5 rows from day 10 (returning, 5-19); u1: 1 row on day 95 (new, 1-4);
    # u2: 20 rows from day 93 on (new: first row 7 days before the cutoff, 20-49); u3: none
    user = [0] * 5 + [1] + [2] * 20
    ts = [10 * DAY + i for i in range(5)] + [95 * DAY] + [93 * DAY + i for i in range(20)]
    seg = user_segments(_rows(user, ts), cutoff)
    assert seg["new"].tolist() == [False, True, True, False]
    assert seg["returning"].tolist() == [True, False, False, False]
    assert seg["activity 1-4"].tolist() == [False, True, False, False]
    assert seg["activity 5-19"].tolist() == [True, False, False, False]
    assert seg["activity 20-49"].tolist() == [False, False, True, False]
    assert not seg["activity 50+"].any()


def test_segment_metrics_average_over_the_segment_users_only():
    # users 0 and 1 each hold out item 3; user 0's list hits it first, user 1's misses
    indptr, items = np.array([0, 1, 2]), np.array([3, 3])
    lists = {"model": np.array([[3, 1], [1, 2]])}
    users = np.array([0, 1])
    segs = {"first": np.array([True, False]), "second": np.array([False, True]),
            "both": np.array([True, True])}
    out = segment_metrics(lists, (indptr, items), users, 5, segs)
    assert out["first"] == {"n_users": 1, "model": {"recall@10": 1.0, "ndcg@10": 1.0}}
    assert out["second"]["model"] == {"recall@10": 0.0, "ndcg@10": 0.0}
    assert out["both"]["model"]["recall@10"] == 0.5 and out["both"]["n_users"] == 2
