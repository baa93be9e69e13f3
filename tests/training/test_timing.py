"""evaluate-timing on a small demo world: Tailor's choices against fixed, random and the oracle."""
import numpy as np
import pytest

from training import demo_contact as D
from training.timing import TimingConfig, beats, evaluate_timing, format_report

SMALL = TimingConfig(n_users=6000, rounds=4, n_mc=64)


@pytest.fixture(scope="module")
def report():
    return evaluate_timing(SMALL)


def test_send_time_beats_fixed_and_random_with_disjoint_intervals(report):
    rows = report["send_time"]
    assert beats(rows), format_report(report)
    assert rows["oracle"]["truth"] > rows["tailor greedy"]["truth"] > rows["tailor"]["truth"]
    # random is the logging policy: IPS weights are all 1, the estimate is the logged mean
    assert rows["random"]["ips"]["value"] == pytest.approx(rows["random"]["snips"]["value"])


def test_channel_choice_orders_as_its_truth(report):
    rows = report["channel"]
    truth = {k: r["truth"] for k, r in rows.items()}
    assert truth["oracle"] > truth["tailor greedy"] > truth["tailor"] > truth["fixed"] \
        > truth["random"], truth
    assert rows["tailor"]["snips"]["value"] > rows["random"]["snips"]["ci_high"]


@pytest.mark.parametrize("part", ["send_time", "channel"])
def test_estimates_are_near_the_exact_values(report, part):
    # one log serves every policy, so their errors move together; within 2 half-widths (~4 SE)
    for name, r in report[part].items():
        half = (r["snips"]["ci_high"] - r["snips"]["ci_low"]) / 2
        assert abs(r["snips"]["value"] - r["truth"]) < 2 * half, (name, r)


def test_history_hours_follow_the_truth():
    truth = D.contact_truth(3000, 0)
    users, ts = D.engagement_times(truth, np.random.default_rng(0), 0.0, 8 * 7 * 86400.0)
    local = ((ts + 60.0 * truth.tz_offset_min[users]) / 3600.0) % 24.0
    # the share of events within 3 hours of the preferred hour equals the factor's mass there
    near = np.abs((local - truth.preferred_hour[users] + 12.0) % 24.0 - 12.0) < 3.0
    grid = (np.arange(2400) + 0.5) / 100.0
    at = 3600.0 * grid[None, :] - 60.0 * truth.tz_offset_min[users[:2000], None]  # local grid
    mass = D.time_factor(truth, users[:2000, None], at)
    dist = np.abs((grid[None, :] - truth.preferred_hour[users[:2000], None] + 12.0) % 24.0 - 12.0)
    expected = ((mass * (dist < 3.0)).sum(1) / mass.sum(1)).mean()
    assert near[:2000].mean() == pytest.approx(expected, abs=0.03)


def test_cli_prints_the_table_and_fails_when_tailor_does_not_win(capsys):
    from training.cli import main

    code = main(["evaluate-timing", "--users", "1500", "--rounds", "1", "--n-mc", "16"])
    out = capsys.readouterr().out
    assert "send time" in out and "channel" in out and "oracle" in out
    assert code == (0 if out.count(": yes") == 2 else 1)


@pytest.mark.parametrize("flag, value", [("--history-days", "-3"), ("--window-hours", "0"),
                                         ("--n-boot", "1"), ("--window-hours", "200"),
                                         ("--seed", "-1"), ("--epsilon", "2"),
                                         ("--epsilon", "nan")])
def test_cli_names_a_bad_flag(capsys, flag, value):
    """--history-days -3 failed deep in the simulation ("error: lam < 0 or lam contains NaNs");
    --window-hours 200 with the kernel's "window: ...", --seed -1 with numpy's "expected
    non-negative integer" and --epsilon 2 with "epsilon: ...", none naming the flag."""
    from training.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate-timing", "--users", "100", flag, value])
    assert exit_.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_json_of_a_tiny_sample_is_json(capsys):
    """--json printed an undefined SNIPS as NaN, which JSON does not have (jq and most parsers
    refuse the document); it is null, as `training ope --json` writes it."""
    import json

    from training.cli import main

    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    main(["evaluate-timing", "--users", "2", "--json"])
    report = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert report["send_time"]["oracle"]["snips"]["value"] is None  # 0/0: no agreeing send


def test_a_tiny_sample_shows_undefined_estimates_as_such_and_warns():
    """2 users: SNIPS of a policy no logged send agrees with is 0/0; it printed `nan [nan, nan]`
    without a word, and zero-width intervals from 8 sends as if they meant something."""
    text = format_report(evaluate_timing(TimingConfig(n_users=2)))
    assert "nan" not in text and "n/a" in text and "SNIPS divides by their weight" in text
    assert "only 8 logged sends per experiment" in text
    assert "not to be trusted" not in format_report(evaluate_timing(TimingConfig(n_users=600)))


def test_a_window_without_the_fixed_send_time_is_refused():
    """The windows open at 00:00 UTC; with --window-hours 4 the "fixed (09:00 UTC)" row was
    the window's last slot (03:00), silently another policy under the same name."""
    with pytest.raises(ValueError, match="09:00 UTC"):
        evaluate_timing(TimingConfig(n_users=50, window_hours=9))
    evaluate_timing(TimingConfig(n_users=50, window_hours=10))  # 09:00-10:00 is its last slot


@pytest.mark.parametrize("hours", ["1", "9", "169", "0"])
def test_window_hours_outside_10_to_168_is_an_argparse_error(hours, capsys):
    # --window-hours 1..9 passed the parser (1..168) and was refused only after the history
    # simulation (9 s with the default users); the help says "10 to 168"
    from training.cli import main

    with pytest.raises(SystemExit) as done:
        main(["evaluate-timing", "--window-hours", hours])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --window-hours: expected a whole number in 10..168" in err, err
    assert err.count("error:") == 1
