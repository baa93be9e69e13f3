"""server.drift's counting: one batch's values into the reference's bins, rolling windows, and
the report's statuses, against counts worked out by hand."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from contract.drift import FeatureReference
from kernels.ranking import FEATURES
from server.drift import DriftLayout, RollingCounts, build_report
from server.recommend.pipeline import BatchValues

REFS = {r.name: r for r in [
    FeatureReference("history_len", (1, 1, 1), (2.0, 5.0)),
    FeatureReference("history_category", (1, 1, 1), categorical=True),
    FeatureReference("recommendation_category", (1, 1, 1), categorical=True),
    FeatureReference("retrieval_score", (1, 1), (0.5,)),
    FeatureReference("log_price", (1, 1), (1.0,)),
    FeatureReference("ranker_score", (1, 1), (0.0,)),
    FeatureReference("channel_affinity", (1, 1), (0.0,)),  # a feature this server lacks
]}
BUNDLE = SimpleNamespace(item_category=np.array([0, 1, 2]), version="v1")


def batch(with_ranker: bool = True) -> BatchValues:
    hist = (np.array([[0, 1, 2, 0], [2, 2, 0, 0]]), np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32))
    cands = [(np.array([0, 1]), np.array([0.9, 0.2], np.float32)),
             (np.array([2]), np.array([0.6], np.float32))]
    feats = np.full((2, 2, len(FEATURES)), 99.0, np.float32)  # row [1, 1] is padding
    feats[0, :, 0], feats[1, 0, 0] = [0.9, 0.2], 0.6
    lp = FEATURES.index("log_price")
    feats[0, :, lp], feats[1, 0, lp] = [0.5, 1.5], 2.0
    scores = [np.array([-1.0, 1.0], np.float32), np.array([0.0], np.float32)]
    results = [SimpleNamespace(rows=np.array([2, 1])), SimpleNamespace(rows=np.array([0]))]
    if not with_ranker:
        feats, scores = None, [s for _, s in cands]
    return BatchValues(BUNDLE, hist, cands, feats, scores, results)


def per_feature(layout: DriftLayout, counts: np.ndarray) -> dict:
    return {s.ref.name: counts[s.start:s.start + s.ref.n_bins].tolist() for s in layout.slots}


def test_a_batch_lands_in_the_bins_worked_out_by_hand():
    layout = DriftLayout(REFS, n_categories=3)
    assert per_feature(layout, layout.count(batch())) == {
        "history_len": [0, 2, 0],               # 3 and 2 items: 2 <= both < 5
        "history_category": [1, 1, 3],          # items 0 1 2 | 2 2
        "recommendation_category": [1, 1, 1],   # rows 2 1 | 0
        "retrieval_score": [1, 2],              # 0.2 | 0.9 0.6 (padding row left out)
        "log_price": [1, 2],                    # 0.5 | 1.5 2.0
        "ranker_score": [1, 2],                 # -1 | 1 0 (0 is on the edge: upper bin)
        "channel_affinity": [0, 0]}


def test_batches_counted_together_give_the_sum_of_their_counts():
    """`count_many`: histories and answers binned together, candidates per batch; a batch
    without a ranker mixes in."""
    layout = DriftLayout(REFS, n_categories=3)
    one, plain = batch(), batch(with_ranker=False)
    expected = 2 * layout.count(one) + layout.count(plain)
    np.testing.assert_array_equal(layout.count_many([one, plain, one]), expected)
    assert layout.count_many([one, plain, one]).sum() == expected.sum() > 0


def test_the_monitor_counts_waiting_batches_by_queries_time_and_report():
    """`DriftMonitor.observe` keeps batches until `PENDING_QUERIES` queries or
    `PENDING_SECONDS` have come, and `report` counts whatever waits; a batch of another
    `Bundle` object of the same version (an amended copy) is counted apart, with its own
    categories."""
    from server.drift import monitor as dm

    now = [1000.0]
    bundle = SimpleNamespace(item_category=np.array([0, 1, 2]), version="v1",
                             category_code={"a": 0, "b": 1, "c": 2},
                             manifest=SimpleNamespace(drift=REFS))
    mon = dm.DriftMonitor(SimpleNamespace(active=bundle), window_seconds=100, windows=2,
                          min_count=1, clock=lambda: now[0])

    def of(b):
        v = batch()
        return BatchValues(b, v.hist, v.cands, v.feats, v.scores, v.results)

    def counted() -> dict:
        track = mon._tracks["v1"]
        return per_feature(track.layout, track.windows.total(now[0])[0])

    def recommended(n: int, copies: int = 0) -> list:  # rows 2 1 | 0 a batch; the copy: all "c"
        return [n, n, n + 3 * copies]

    half = dm.PENDING_QUERIES // 2  # two queries a batch
    for _ in range(half - 1):
        mon.observe(of(bundle))
    assert counted()["recommendation_category"] == recommended(0)
    mon.observe(of(bundle))
    assert counted()["recommendation_category"] == recommended(half)
    mon.observe(of(bundle))
    now[0] += dm.PENDING_SECONDS  # light traffic: the next batch takes both
    mon.observe(of(bundle))
    assert counted()["recommendation_category"] == recommended(half + 2)
    mon.observe(of(bundle))
    copy = SimpleNamespace(**{**vars(bundle), "item_category": np.array([2, 2, 2])})
    mon.observe(of(copy))  # the waiting batch is counted, the copy's waits
    assert counted()["recommendation_category"] == recommended(half + 3)
    report = mon.report()
    assert counted()["recommendation_category"] == recommended(half + 3, copies=1)
    n = half + 3  # batches of the bundle (items 0 1 2 | 2 2), then the copy's (all "c")
    assert counted()["history_category"] == [n, n, 3 * n + 5]
    rows = {f.name: f for f in report.features}
    assert rows["history_len"].live_count == (half + 4) * 2
    # counts go to the window of the first waiting batch's time (epoch 11 here, not 12)
    now[0] = 1199.5
    mon.observe(of(bundle))
    now[0] = 1200.0 + dm.PENDING_SECONDS
    mon.observe(of(bundle))
    windows = mon._tracks["v1"].windows
    assert windows.epochs.max() == 11 and windows.counts[11 % 2].sum() > 0
    # a canary's (another version's) waiting batch is counted by the next report too
    canary = SimpleNamespace(**{**vars(bundle), "version": "v2"})
    mon.observe(of(canary))
    assert mon._tracks["v2"].pending
    mon.report()
    assert not mon._tracks["v2"].pending and mon._tracks["v2"].windows.counts.sum() > 0


def test_without_a_ranker_only_retrieval_scores_are_counted_of_the_candidates():
    layout = DriftLayout(REFS, n_categories=3)
    got = per_feature(layout, layout.count(batch(with_ranker=False)))
    assert got["retrieval_score"] == [1, 2] and got["log_price"] == got["ranker_score"] == [0, 0]


def test_the_report_has_psi_statuses_and_says_what_is_not_computed():
    layout = DriftLayout(REFS, n_categories=3)
    report = build_report("v1", layout, layout.count(batch()), 0.0, threshold=0.2, min_count=3,
                          window_seconds=60, windows=2)
    rows = {f.name: f for f in report.features}
    # history_len: p = (1/3, 1/3, 1/3), q = (floor, 1, floor)
    third, floor = 1 / 3, 1e-4
    expected = 2 * (floor - third) * math.log(floor / third) + (1 - third) * math.log(1 / third)
    assert rows["history_len"].psi == pytest.approx(expected)
    assert rows["history_len"].status == "few values"  # 2 users < min_count 3
    assert rows["history_category"].status == "drift" and report.status == "drift"
    assert rows["channel_affinity"].status.startswith("not computed")
    assert math.isnan(rows["channel_affinity"].psi)


def test_a_categorical_reference_of_another_catalog_is_not_computed():
    layout = DriftLayout(REFS, n_categories=4)
    skipped = {s.ref.name for s in layout.slots if s.skipped}
    assert skipped == {"history_category", "recommendation_category", "channel_affinity"}


def test_rolling_windows_sum_the_last_ones_and_reuse_old_rows():
    rolling = RollingCounts(size=2, window_seconds=100, windows=2)
    rolling.add(np.array([1, 0]), now=50)      # window 0
    rolling.add(np.array([0, 2]), now=150)     # window 1
    total, since = rolling.total(now=199)
    assert total.tolist() == [1, 2] and since == 0
    total, since = rolling.total(now=250)      # window 2: window 0 is out
    assert total.tolist() == [0, 2] and since == 100
    rolling.add(np.array([5, 5]), now=260)     # takes window 0's row
    assert rolling.total(now=260)[0].tolist() == [5, 7]
    rolling.add(np.array([1, 1]), now=50)      # late counts: the newest window, nothing cleared
    assert rolling.total(now=260)[0].tolist() == [6, 8]
    assert rolling.total(now=1000)[0].tolist() == [0, 0]


def test_large_batches_count_a_uniform_sample_of_their_candidates():
    from server.drift.layout import MAX_CANDIDATES
    width, users = 100, 30  # a stride through 3000 rows would see a few ranks only
    rank = FEATURES.index("retrieval_rank")
    feats = np.zeros((users, width, len(FEATURES)), np.float32)
    feats[:, :, rank] = np.arange(width)
    values = BatchValues(BUNDLE, (np.zeros((users, 1), int), np.zeros((users, 1), np.float32)),
                         [(np.arange(width), np.zeros(width, np.float32))] * users, feats,
                         [np.zeros(width, np.float32)] * users, [])
    edges = tuple(float(e) for e in range(10, width, 10))  # ten bins of ten ranks
    refs = {"retrieval_rank": FeatureReference("retrieval_rank", (1,) * 10, edges)}
    layout = DriftLayout(refs, n_categories=3)
    assert layout.count(values).sum() == MAX_CANDIDATES
    total = sum(layout.count(values) for _ in range(200))
    # 51,200 draws: each bin's share is 0.1 with a standard deviation of 0.0013
    assert np.abs(total / total.sum() - 0.1).max() < 0.01


def test_the_psi_gauge_does_not_keep_a_figure_no_live_values_back():
    """`tailor_drift_psi` is the PSI of the live windows: once they hold no value of a feature
    (traffic stopped, the windows rolled past it) or its version is no longer served (a push,
    a promoted canary), the gauge is -1 (no value), not the last figure (an alert on it would
    fire on), nor NaN (see the next test)."""
    from prometheus_client import REGISTRY

    from server.drift import monitor as dm

    def gauge(version: str, feature: str = "history_category") -> float:
        return REGISTRY.get_sample_value("tailor_drift_psi", {"version": version,
                                                              "feature": feature})

    now = [1000.0]
    old, new = ({**vars(BUNDLE), "category_code": {"a": 0, "b": 1, "c": 2},
                 "manifest": SimpleNamespace(drift=REFS), "version": v}
                for v in ("stale-1", "stale-2"))
    old, new = SimpleNamespace(**old), SimpleNamespace(**new)
    source = SimpleNamespace(active=old)
    mon = dm.DriftMonitor(source, window_seconds=100, windows=2, min_count=1,
                          clock=lambda: now[0])

    def observe(bundle):
        v = batch()
        mon.observe(BatchValues(bundle, v.hist, v.cands, v.feats, v.scores, v.results))

    observe(old)
    psi = {f.name: f.psi for f in mon.report().features}
    assert gauge("stale-1") == pytest.approx(psi["history_category"]) and psi["history_category"] > 0
    now[0] += 300.0  # both windows are past: no live value
    assert {f.status for f in mon.report().features if f.name == "history_category"} == {"no traffic"}
    assert gauge("stale-1") == -1.0
    observe(old)
    mon.report()
    assert gauge("stale-1") == pytest.approx(psi["history_category"])
    source.active = new  # pushed: the old version's figures go
    observe(new)
    mon.report()
    assert gauge("stale-2") == pytest.approx(psi["history_category"])
    assert gauge("stale-1") == gauge("stale-1", "log_price") == -1.0
    # a bundle trained without a reference (no PSI of its own) retires the figures too
    source.active = SimpleNamespace(**{**vars(new), "version": "stale-3",
                                       "manifest": SimpleNamespace(drift=None)})
    assert mon.report().status == "no reference"
    assert gauge("stale-2") == -1.0


_WORKER = """
import sys
from types import SimpleNamespace
from server.drift import monitor as dm
from server.recommend.pipeline import BatchValues
from tests.server.test_drift_layout import BUNDLE, REFS, batch

now = [1000.0]
bundle = SimpleNamespace(**{**vars(BUNDLE), "category_code": {"a": 0, "b": 1, "c": 2},
                            "manifest": SimpleNamespace(drift=REFS), "version": "v1"})
mon = dm.DriftMonitor(SimpleNamespace(active=bundle), window_seconds=100, windows=2, min_count=1,
                      clock=lambda: now[0])
v = batch()
mon.observe(BatchValues(bundle, v.hist, v.cands, v.feats, v.scores, v.results))
mon.report()
if sys.argv[1] == "idle":
    now[0] += 300.0  # this worker's windows roll past its traffic: no live value
    mon.report()
"""


def test_the_psi_gauge_merged_over_workers_does_not_depend_on_file_order(tmp_path):
    """With several workers the scrape merges `tailor_drift_psi` by max over the workers' files.
    A worker without live values of a feature must not turn that max into NaN or not depending
    on which file prometheus-client reads first (NaN compares false both ways): the merged
    gauge is the PSI of the worker that has one, whatever the order."""
    import os
    import subprocess
    import sys

    from prometheus_client.multiprocess import MultiProcessCollector

    from tests.conftest import ROOT

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    for role in ("busy", "idle"):
        subprocess.run([sys.executable, "-c", _WORKER, role], cwd=ROOT, env=env, check=True,
                       timeout=120)
    files = sorted(str(p) for p in tmp_path.glob("gauge_max_*.db"))
    assert len(files) == 2

    def merged(order: list[str]) -> float:
        for metric in MultiProcessCollector.merge(order):
            for s in metric.samples:
                if s.name == "tailor_drift_psi" and s.labels["feature"] == "history_category":
                    return s.value
        raise AssertionError("no tailor_drift_psi sample")

    from server.drift import monitor as dm

    bundle = SimpleNamespace(**{**vars(BUNDLE), "category_code": {"a": 0, "b": 1, "c": 2},
                                "manifest": SimpleNamespace(drift=REFS), "version": "v1"})
    mon = dm.DriftMonitor(SimpleNamespace(active=bundle), window_seconds=100, windows=2,
                          min_count=1, clock=lambda: 1000.0)
    v = batch()
    mon.observe(BatchValues(bundle, v.hist, v.cands, v.feats, v.scores, v.results))
    psi = {f.name: f.psi for f in mon.report().features}
    assert psi["history_category"] > 0
    assert merged(files) == merged(files[::-1]) == pytest.approx(psi["history_category"])
    # the idle worker's own figure is "no value", below any PSI
    assert sorted(merged([f]) for f in files) == [-1.0, pytest.approx(psi["history_category"])]


def test_the_psi_gauge_has_no_value_until_a_feature_has_enough_live_values():
    """The docs say to alert on `tailor_drift_psi > 0.2`, and the report never calls a PSI over
    fewer than `min_count` live values a drift ("few values": sampling noise). The gauge carried
    that noisy PSI: a few values after a restart or a push (here one batch, history_category
    PSI 0.29) set off the alert. It is -1 (no value) until the feature has `min_count` values."""
    from prometheus_client import REGISTRY

    from server.drift import monitor as dm

    def gauge(feature: str = "history_category") -> float:
        return REGISTRY.get_sample_value("tailor_drift_psi", {"version": "few-1",
                                                              "feature": feature})

    bundle = SimpleNamespace(**{**vars(BUNDLE), "category_code": {"a": 0, "b": 1, "c": 2},
                                "manifest": SimpleNamespace(drift=REFS), "version": "few-1"})
    mon = dm.DriftMonitor(SimpleNamespace(active=bundle), window_seconds=100, windows=2,
                          min_count=20, threshold=0.2, clock=lambda: 1000.0)

    def observe_and_report() -> dict:
        v = batch()
        mon.observe(BatchValues(bundle, v.hist, v.cands, v.feats, v.scores, v.results))
        return {f.name: f for f in mon.report().features}

    rows = observe_and_report()
    few = rows["history_category"]
    assert few.status == "few values" and few.live_count < 20 and few.psi > 0.2
    assert gauge() == -1.0
    while rows["history_category"].live_count < 20:
        rows = observe_and_report()
    assert rows["history_category"].status == "drift"
    assert gauge() == pytest.approx(rows["history_category"].psi)
