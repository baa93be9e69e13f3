"""`bench_decision_log --paired`: the paired difference and its interval, and a real run of one
tree's writer against itself."""
import re

import numpy as np
import pytest

from loadtests.writer_pairs import across_rounds, paired_cost
from tests.conftest import ROOT, run_module


def test_b_cheaper_by_the_same_amount_in_every_pair_is_that_difference_in_every_resample():
    a = np.random.default_rng(2).lognormal(np.log(600), 0.3, 200)
    r = paired_cost(a - 30, a, resamples=500)
    assert r.pairs == 200 and r.cheaper == (1.0, 0.0)
    assert abs(r.diff_us + 30) < 1e-9 and abs(r.mean_us[0] - r.mean_us[1] + 30) < 1e-9
    assert abs(r.ci_us[0] + 30) < 1e-6 and abs(r.ci_us[1] + 30) < 1e-6
    assert abs(r.relative + 30 / a.mean()) < 1e-12
    assert abs(r.median_us[0] - (np.median(a) - 30)) < 1e-9


def test_drift_shared_by_both_of_a_pair_leaves_a_3_percent_change_resolved():
    # The machine's load moves both commits of a pair alike, +-50% (lognormal sigma 0.5), ten
    # times the change; each commit's own noise is 1%. Resampling pairs keeps the drift out of
    # the difference: the interval holds -3% and not 0. Resampling B and A apart would not
    # (their means' spread is ~3% each at 500 commits).
    rng = np.random.default_rng(3)
    drift = rng.lognormal(np.log(600), 0.5, 500)
    a = drift * rng.normal(1, 0.01, 500)
    b = 0.97 * drift * rng.normal(1, 0.01, 500)
    r = paired_cost(b, a, resamples=2000)
    assert r.ci_relative[0] < -0.03 < r.ci_relative[1] < 0
    assert r.ci_us[0] < r.diff_us < r.ci_us[1] < 0
    assert r.cheaper[0] > 0.9


def test_pairs_of_unequal_count_are_refused():
    with pytest.raises(ValueError, match="equal count"):
        paired_cost(np.ones(5), np.ones(4))


def test_rounds_are_summed_up_with_a_t_interval_over_rounds():
    # three rounds at +1, +2, +3%, each known to 0.1%: mean +2%, standard error 0.577%,
    # t(0.975, 2 df) = 4.303
    mean, (low, high) = across_rounds([0.01, 0.02, 0.03], [0.001] * 3)
    assert abs(mean - 0.02) < 1e-12
    assert abs(low - (0.02 - 4.303 * 0.005774)) < 1e-4 and abs(high - (0.02 + 4.303 * 0.005774)) < 1e-4
    assert across_rounds([0.01, 0.01], [0, 0]) == (0.01, (0.01, 0.01))
    with pytest.raises(ValueError, match="two or more rounds"):
        across_rounds([0.01], [0.001])


def test_rounds_that_agree_by_chance_keep_their_own_error():
    # two rounds of few pairs, -2.6 and -2.8% each +-2.7% (standard error): their spread says
    # 0.1%, their own errors 2.7%; the interval is the wider one's and holds 0
    mean, (low, high) = across_rounds([-0.026, -0.028], [0.027, 0.027])
    assert abs(mean + 0.027) < 1e-12
    assert abs(high - (-0.027 + 12.706 * 0.027 / 2 ** 0.5)) < 1e-4 and low < 0 < high


LINE = re.compile(r"  (this tree|before   ): mean +([\d.]+) us CPU a transaction, median +([\d.]+); "
                  r"cheaper in +([\d.]+)% of pairs")
DIFF = re.compile(r"  this tree - before: ([+-][\d.]+) us \[([+-][\d.]+), ([+-][\d.]+)\], "
                  r"([+-][\d.]+)% \[([+-][\d.]+), ([+-][\d.]+)\] \(99.9% bootstrap interval "
                  r"over 60 pairs\)")


def test_a_tree_against_itself_differs_by_nothing_its_interval_can_tell():
    """Both children run this tree's writer, taking 60 one-decision commits in turn: the
    interval of their difference holds 0 (at 99.9%, so that chance alone fails this about once
    in a thousand runs)."""
    proc = run_module("loadtests.bench_decision_log", "--paired", "--server-src", str(ROOT),
                      "--batch", "1", "--pairs", "60", "--warm", "10", "--rounds", "1",
                      "--confidence", "0.999", timeout=300)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"this tree: {ROOT}; before: {ROOT}"
    assert lines[1].startswith("round 1 choose x1, 60 pairs (load average ")
    rows = [LINE.fullmatch(line) for line in lines[2:4]]
    assert all(rows), lines
    (this, mean_b, _, cheaper_b), (before, mean_a, _, cheaper_a) = (m.groups() for m in rows)
    assert this == "this tree" and float(cheaper_b) + float(cheaper_a) <= 100
    assert 50 < float(mean_a) < 50_000 and 50 < float(mean_b) < 50_000  # us: a commit's CPU
    diff, low, high, rel, rel_low, rel_high = map(float, DIFF.fullmatch(lines[4]).groups())
    assert abs(diff - (float(mean_b) - float(mean_a))) <= 0.15
    assert low <= diff <= high and rel_low <= rel <= rel_high
    assert low <= 0 <= high and rel_low <= 0 <= rel_high
    assert len(lines) == 5
