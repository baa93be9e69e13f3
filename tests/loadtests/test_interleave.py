"""`bench --interleave`: the window schedule, the pooled p99 difference and its interval, and
`run_windows` against a real server."""
import numpy as np

from loadtests import bench
from loadtests.interleave import paired_windows
from loadtests.loadgen import PING, _window_target, ping_payloads, run_windows


def test_two_targets_take_windows_in_abba_order_so_neither_always_follows_the_other():
    assert [_window_target(w, 2) for w in range(8)] == [0, 1, 1, 0, 0, 1, 1, 0]
    assert [_window_target(w, 3) for w in range(4)] == [0, 1, 2, 0]


def test_a_constant_shift_of_b_is_the_difference_and_every_resample_agrees():
    # 20 pairs; each of A's windows holds 1..100 ms, B's the same plus 2 ms: every pooled
    # percentile of B is A's plus 2 ms, in the whole sample and in every bootstrap resample.
    a = [np.arange(1, 101) / 1e3 for _ in range(20)]
    b = [x + 0.002 for x in a]
    r = paired_windows(b, a, resamples=200)
    assert r.windows == 20 and r.calls == (2000, 2000)
    assert r.p99_ms[1] == np.percentile(np.arange(1, 101), 99)  # 99.01 ms
    assert r.diff_p99_ms == np.float64(r.p99_ms[0] - r.p99_ms[1])
    assert abs(r.diff_p99_ms - 2.0) < 1e-9
    assert abs(r.ci_ms[0] - 2.0) < 1e-9 and abs(r.ci_ms[1] - 2.0) < 1e-9
    assert abs(r.p50_ms[0] - r.p50_ms[1] - 2.0) < 1e-9
    assert abs(r.window_shift_ms - 2.0) < 1e-9  # every window's p99 moved by 2 ms
    assert abs(r.window_ci_ms[0] - 2.0) < 1e-9 and abs(r.window_ci_ms[1] - 2.0) < 1e-9


def test_one_slow_pair_widens_the_interval_to_cover_no_difference():
    # 30 pairs alike but one where B's window was slow throughout (the machine's stall in B's
    # seconds): the pooled p99 moves, but resamples without that pair show no difference.
    rng = np.random.default_rng(1)
    a = [rng.exponential(0.002, 200) for _ in range(30)]
    b = [x.copy() for x in a]
    b[7] = b[7] + 0.05
    r = paired_windows(b, a, resamples=500)
    assert r.diff_p99_ms > 1.0
    assert r.ci_ms[0] <= 0.0 + 1e-9 < r.ci_ms[1]
    # 29 of 30 windows' p99s are equal: the typical window did not move at all
    assert r.window_shift_ms == 0.0 and r.window_ci_ms == (0.0, 0.0)


def test_run_windows_sends_each_window_to_one_target_and_returns_them_in_order(tmp_path):
    with bench.serving(data_dir=tmp_path / "a") as one, bench.serving(data_dir=tmp_path / "b") as two:
        per_target, lag, errors, timeouts = run_windows([one.target, two.target], PING,
                                                        ping_payloads(), rate=200, window=0.25,
                                                        windows=4)
    assert errors == [0, 0] == timeouts and len(per_target) == 2
    assert [len(w) for w in per_target] == [2, 2]
    counts = [len(x) for wins in per_target for x in wins]
    assert all(20 <= c <= 90 for c in counts), counts  # ~50 calls per 0.25 s window at 200/s
    assert all((x > 0).all() and (x < 5).all() for wins in per_target for x in wins)
    assert len(lag) == sum(counts)
