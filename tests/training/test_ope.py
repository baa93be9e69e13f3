import dataclasses
import json

import numpy as np
import pytest

from training import ope

K, D = 4, 3
THETA = np.array([[1.0, -0.5, 0.3], [-0.8, 0.9, 0.0], [0.2, 0.2, -1.0], [0.0, -1.0, 0.8]])
BIAS = np.array([-1.0, -0.5, -1.5, 0.0])


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _q(x):
    return 1.0 / (1.0 + np.exp(-(x @ THETA.T + BIAS)))


def _logging(x):
    return _softmax(x @ np.array([[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.2, 0.2, 0.2]]).T)


def _target(x):
    return _softmax(2.0 * (x @ THETA.T + BIAS))


def _synthetic(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    probs = _logging(x)
    a = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)
    r = (rng.random(n) < _q(x)[np.arange(n), a]).astype(float)
    return ope.LoggedBandit(a, np.zeros(n, np.int64), r, probs[np.arange(n), a], x, K, 1), x


def _true_value():
    x = np.random.default_rng(999).normal(size=(400000, D))
    return float((_target(x) * _q(x)).sum(1).mean())


@pytest.fixture(scope="module")
def runs():
    out = []
    for seed in range(24):
        log, x = _synthetic(3000, seed)
        out.append(ope.estimate(log, _target(x), seed=seed))
    return out


@pytest.mark.parametrize("name", ope.ESTIMATORS)
def test_intervals_cover_the_true_value(runs, name):
    truth = _true_value()
    covered = [r[name]["ci_low"] <= truth <= r[name]["ci_high"] for r in runs]
    assert np.mean(covered) >= 0.8
    assert abs(np.mean([r[name]["value"] for r in runs]) - truth) < 0.01


def test_dr_has_lower_variance_than_ips_with_a_good_reward_model(runs):
    ips = np.array([r["ips"]["value"] for r in runs])
    dr = np.array([r["dr"]["value"] for r in runs])
    assert dr.std() <= ips.std()
    assert np.mean([r["dr"]["stderr"] for r in runs]) < np.mean([r["ips"]["stderr"] for r in runs])


def test_bootstrap_interval_is_close_to_normal():
    log, x = _synthetic(2000, 0)
    normal = ope.estimate(log, _target(x), ("ips", "snips"))
    boot = ope.estimate(log, _target(x), ("ips", "snips"), ci="bootstrap", n_boot=300)
    for name in ("ips", "snips"):
        assert boot[name]["value"] == normal[name]["value"]
        assert boot[name]["stderr"] == pytest.approx(normal[name]["stderr"], rel=0.25)


def test_uniform_policy_replay_on_uniform_logs_is_the_logged_mean():
    rng = np.random.default_rng(0)
    n = 500
    log = ope.LoggedBandit(rng.integers(K, size=n), np.zeros(n, np.int64),
                           rng.random(n), np.full(n, 1 / K), np.zeros((n, 0)), K, 1)
    dist = ope.replay_policy(log, "egreedy", epsilon=1.0)
    np.testing.assert_allclose(dist.sum(1), 1.0)
    est = ope.estimate(log, dist, ("ips", "snips"))
    assert est["ips"]["value"] == pytest.approx(log.reward.mean())
    assert est["snips"]["value"] == pytest.approx(log.reward.mean())


def test_replayed_thompson_learns_towards_the_best_arm():
    rng = np.random.default_rng(1)
    n = 3000
    a = rng.integers(K, size=n)
    r = (rng.random(n) < np.array([0.1, 0.1, 0.1, 0.5])[a]).astype(float)
    log = ope.LoggedBandit(a, np.zeros(n, np.int64), r, np.full(n, 0.25), np.zeros((n, 0)), K, 1)
    dist = ope.replay_policy(log, "bernoulli_ts", n_mc=200)
    assert dist[-100:, 3].mean() > 0.95
    assert ope.estimate(log, dist, ("snips",))["snips"]["value"] > 0.4


def test_obd_reader_on_a_tiny_file(tmp_path):
    path = tmp_path / "obd.csv"
    header = (",timestamp,item_id,position,click,propensity_score,user_feature_0,"
              "user_feature_1,user-item_affinity_0,user-item_affinity_1,user-item_affinity_2")
    rows = ["0,2019-11-24 00:00:19+00:00,2,1,0,0.3,aa,bb,0.0,1.0,0.0",
            "1,2019-11-24 00:00:17+00:00,0,3,1,0.5,aa,cc,0.5,0.0,0.0",
            "2,2019-11-24 00:00:18+00:00,1,2,0,0.2,dd,bb,0.0,0.0,2.0"]
    path.write_text("\n".join([header, *rows]) + "\n")
    log = ope.read_obd(str(path))
    np.testing.assert_array_equal(log.action, [0, 1, 2])  # sorted by timestamp
    np.testing.assert_array_equal(log.position, [2, 1, 0])
    np.testing.assert_array_equal(log.reward, [1, 0, 0])
    np.testing.assert_allclose(log.pscore, [0.5, 0.2, 0.3])
    assert (log.n_actions, log.n_positions) == (3, 3)
    assert log.context.shape == (3, 3 + 4)
    np.testing.assert_array_equal(log.context[0, :3], [0.5, 0.0, 0.0])


def _decisions(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"decision_id": f"d{i}", "campaign_id": "c1", "user_id": f"u{i % 7}",
             "timestamp": 1700000000.0 + i, "arm": int(rng.integers(-1, 3)), "propensity": 1 / 3,
             "reward": float(rng.random() < 0.2), "context": [float(i), 1.0], "position": 0}
            for i in range(n)]


def test_decision_log_roundtrip_skips_holdout(tmp_path):
    recs = _decisions(50)
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    log = ope.read_decision_log(str(path))
    kept = [r for r in recs if r["arm"] >= 0]
    assert len(log) == len(kept) and log.context.shape == (len(kept), 2)
    np.testing.assert_array_equal(log.action, [r["arm"] for r in kept])


def test_decision_log_rejects_bad_propensity(tmp_path):
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), [dict(_decisions(1)[0], arm=0, propensity=0.0)])
    with pytest.raises(ValueError, match="propensities"):
        ope.read_decision_log(str(path))


def test_cli_target_prints_one_json_object(tmp_path, capsys):
    logs, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ope.write_decision_log(str(logs), _decisions(300, 1))
    ope.write_decision_log(str(target), _decisions(300, 2))
    assert ope.main(["--logs", str(logs), "--target", str(target), "--json",
                     "--reward-model", "table"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["estimates"]) == set(ope.ESTIMATORS)
    assert report["on_policy_value"]["value"] == pytest.approx(
        np.mean([r["reward"] for r in _decisions(300, 2) if r["arm"] >= 0]))


def test_cli_policy_prints_a_table(tmp_path, capsys):
    logs = tmp_path / "a.jsonl"
    ope.write_decision_log(str(logs), _decisions(200, 3))
    assert ope.main(["--logs", str(logs), "--policy", "ucb1", "--param", "c=0.5"]) == 0
    out = capsys.readouterr().out
    assert "snips" in out and "logged" in out


def test_registered_in_training_cli(tmp_path, capsys):
    from training.cli import main

    logs = tmp_path / "a.jsonl"
    ope.write_decision_log(str(logs), _decisions(100, 4))
    assert main(["ope", "--logs", str(logs), "--policy", "egreedy", "--json"]) == 0
    assert "dr" in json.loads(capsys.readouterr().out)["estimates"]


def test_grouped_intervals_count_a_repeated_user_once():
    # each round logged 4 times as one group: values unchanged, intervals those of the
    # original log (the per-group residuals are the rounds' residuals), not 2x narrower
    log = _synthetic(2000, 5)[0]
    dist = _target(log.context)
    rep = ope.LoggedBandit(*(np.tile(getattr(log, f), (4,) + (1,) * (getattr(log, f).ndim - 1))
                             for f in ("action", "position", "reward", "pscore", "context")),
                           log.n_actions, log.n_positions)
    one = ope.estimate(log, dist, ("ips", "snips"))
    grouped = ope.estimate(rep, np.tile(dist, (4, 1)), ("ips", "snips"),
                           groups=np.tile(np.arange(2000), 4))
    flat = ope.estimate(rep, np.tile(dist, (4, 1)), ("ips", "snips"))
    for name in ("ips", "snips"):
        assert grouped[name]["value"] == pytest.approx(one[name]["value"])
        assert grouped[name]["ci_low"] == pytest.approx(one[name]["ci_low"], rel=1e-3)
        assert grouped[name]["ci_high"] == pytest.approx(one[name]["ci_high"], rel=1e-3)
        assert flat[name]["ci_high"] - flat[name]["ci_low"] == pytest.approx(
            (one[name]["ci_high"] - one[name]["ci_low"]) / 2, rel=1e-2)


def _bad_input_cases(tmp_path):
    good = tmp_path / "good.jsonl"
    ope.write_decision_log(str(good), _decisions(60, 5))
    (tmp_path / "bad.jsonl").write_text('{"arm": 0, "propensity": 0.5, "reward": 1}\n{oops\n')
    suppressed = [dict(r, arm=-2, propensity=0.0) for r in _decisions(5, 6)]
    ope.write_decision_log(str(tmp_path / "suppressed.jsonl"), suppressed)
    ope.write_decision_log(str(tmp_path / "one.jsonl"), [dict(_decisions(1)[0], arm=0)])
    return {
        "No such file": ["--logs", str(tmp_path / "nope.jsonl"), "--policy", "egreedy"],
        "bad.jsonl:2: not JSON": ["--logs", str(tmp_path / "bad.jsonl"), "--policy", "egreedy"],
        "no logged decisions": ["--logs", str(tmp_path / "suppressed.jsonl"),
                                "--policy", "egreedy"],
        "at least 2": ["--logs", str(tmp_path / "one.jsonl"), "--policy", "egreedy"],
        "estimators": ["--logs", str(good), "--policy", "egreedy", "--estimators", "ips,foo"],
        "unknown parameter": ["--logs", str(good), "--policy", "egreedy", "--param", "foo=1"],
        "number": ["--logs", str(good), "--policy", "egreedy", "--param", "epsilon=x"],
        "folds": ["--logs", str(good), "--policy", "egreedy", "--folds", "1"],
        "n_boot": ["--logs", str(good), "--policy", "egreedy", "--ci", "bootstrap",
                   "--n-boot", "99"],
        "columns": ["--logs", str(good), "--format", "obd", "--policy", "egreedy"],
        # it said "user_id is required by fixed splits and holdouts" of a log with user ids
        "--param holdout: a candidate's holdout": ["--logs", str(good), "--policy",
                                                   "bernoulli_ts", "--param", "holdout=0.5"],
    }


def test_cli_bad_input_is_one_error_line_not_a_traceback(tmp_path, capsys):
    for expected, argv in _bad_input_cases(tmp_path).items():
        assert ope.main(argv) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and "Traceback" not in err, err


def test_pending_decisions_without_a_reward_are_skipped(tmp_path, capsys):
    # ExportDecisions(include_pending) sends reward NaN (the client writes NaN), a hand-made
    # log null: neither is an outcome, and one of them made every estimate NaN
    recs = [dict(r, arm=i % 2, propensity=0.5) for i, r in enumerate(_decisions(40, 7))]
    for r in recs[:10]:
        r["reward"] = float("nan")
    for r in recs[10:15]:
        r["reward"] = None
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    log = ope.read_decision_log(str(path))
    rewards = [r["reward"] for r in recs[15:]]
    assert len(log) == 25
    assert ope.on_policy_value(log)["value"] == pytest.approx(np.mean(rewards))
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # fixed policy without weights: uniform over 2 arms = the logging policy: IPS = mean
    assert report["estimates"]["ips"]["value"] == pytest.approx(np.mean(rewards))


def test_records_without_position_context_or_timestamp_read_back(tmp_path):
    # write_decision_log writes null for a missing key; the reader takes its documented default
    recs = [{"decision_id": f"d{i}", "arm": i % 2, "propensity": 0.5, "reward": float(i % 3 == 0)}
            for i in range(6)]
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    log = ope.read_decision_log(str(path))
    assert len(log) == 6 and log.context.shape == (6, 0) and log.n_positions == 1
    np.testing.assert_array_equal(log.action, [0, 1, 0, 1, 0, 1])


def test_context_hidden_from_a_reader_without_pii_is_dropped(tmp_path, capsys):
    # ExportDecisions sends NaN at the PII positions of the context to a principal without
    # pii-reader: that column is NaN on every row and carries nothing; the default DR reward
    # model (linear) and the linear policies refused the whole log
    recs = [dict(r, arm=i % 2, propensity=0.5, context=[float(i % 5), float("nan")])
            for i, r in enumerate(_decisions(80, 8))]
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    log = ope.read_decision_log(str(path))
    np.testing.assert_array_equal(log.context[:, 0], [i % 5 for i in range(80)])
    assert log.context.shape == (80, 1)
    for policy in ("egreedy", "linucb"):
        assert ope.main(["--logs", str(path), "--policy", policy, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert all(np.isfinite(e["value"]) for e in report["estimates"].values())
    recs[3]["context"] = [float("nan")] * 2  # missing on some rows only: refused by line
    ope.write_decision_log(str(path), recs)
    with pytest.raises(ValueError, match=r"log.jsonl:4: context\[0\]"):
        ope.read_decision_log(str(path))


def test_snips_is_null_not_nan_or_certain_when_the_candidate_never_takes_a_logged_arm(
        tmp_path, capsys):
    # logs: always arm 1; target: always arm 0. Every weight is 0: IPS is 0 (exactly, with a
    # zero-width interval), SNIPS is 0/0, undefined. It printed NaN, invalid JSON, and with the
    # bootstrap the interval [0, 0]. The CLI now refuses such a candidate (no overlap:
    # test_a_candidate_without_overlap_with_the_logs_is_refused); `estimate` still answers it,
    # and its report's JSON carries null for SNIPS
    logs, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    recs = _decisions(40, 9)
    ope.write_decision_log(str(logs), [dict(r, arm=1, propensity=0.5) for r in recs])
    ope.write_decision_log(str(target), [dict(r, arm=0) for r in recs])
    log, tgt = ope.read_decision_log(str(logs)), ope.read_decision_log(str(target))
    log = dataclasses.replace(log, n_actions=2)
    dist = ope.empirical_policy(tgt, 2, 1)[log.position]
    for ci in ("normal", "bootstrap"):
        est = ope.estimate(log, dist, ci=ci, n_boot=100, reward_model="table",
                           groups=log.groups)
        out = json.dumps(ope._json_safe({"estimates": est}))
        report = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert report["estimates"]["snips"] == {"value": None, "ci_low": None, "ci_high": None,
                                                "stderr": None}
        assert report["estimates"]["ips"]["value"] == 0.0
        assert ope.main(["--logs", str(logs), "--target", str(target), "--json", "--ci", ci,
                         "--n-boot", "100", "--reward-model", "table"]) == 2
        assert "no overlap" in capsys.readouterr().err


def test_a_log_of_several_campaigns_is_refused_unless_one_is_picked(tmp_path, capsys):
    # `clients campaign export` without --campaign writes every campaign's decisions; their arm
    # indexes name different variants and were pooled into one bandit without a word
    two = [dict(r, campaign_id="ca", arm=i % 2, propensity=0.5)
           for i, r in enumerate(_decisions(30, 10))]
    three = [dict(r, campaign_id="cb", arm=i % 3, propensity=1 / 3, reward=1.0)
             for i, r in enumerate(_decisions(30, 11))]
    path = tmp_path / "all.jsonl"
    ope.write_decision_log(str(path), two + three)
    assert ope.main(["--logs", str(path), "--policy", "fixed"]) == 2
    err = capsys.readouterr().err
    assert "2 campaigns (ca, cb)" in err and "--campaign" in err
    assert ope.main(["--logs", str(path), "--campaign", "cb", "--policy", "fixed", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_rounds"] == 30 and report["estimates"]["ips"]["value"] == pytest.approx(1.0)
    assert ope.main(["--logs", str(path), "--campaign", "cc", "--policy", "fixed"]) == 2
    assert "no logged decisions" in capsys.readouterr().err


def test_arms_gives_the_campaigns_variant_count_when_some_were_never_logged(tmp_path, capsys):
    # a 2-variant campaign whose log holds arm 0 only (propensity 0.8, reward 1): the log said
    # 1 arm, so the uniform `fixed` policy took arm 0 with probability 1 and IPS was 1/0.8 =
    # 1.25, above any reward; over the campaign's 2 arms it is 0.5/0.8 = 0.625
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), [dict(r, arm=0, propensity=0.8, reward=1.0)
                                       for r in _decisions(20, 12)])
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--arms", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arms"] == 2
    assert report["estimates"]["ips"]["value"] == pytest.approx(0.625)
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["arms"] == 1  # inferred, and said so
    ope.write_decision_log(str(path), [dict(r, arm=2) for r in _decisions(5, 12)])
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--arms", "2"]) == 2
    assert "arm 2" in capsys.readouterr().err


def test_cli_intervals_count_each_user_once(tmp_path, capsys):
    # each user's decision logged 4 times: the same evidence as one decision per user, so the
    # same intervals (the values do not change); they came out 2x narrower, as if the 4
    # decisions of one user were independent
    recs = [dict(r, user_id=f"u{i}", arm=i % 2, propensity=0.5)
            for i, r in enumerate(_decisions(300, 13))]
    once, four = tmp_path / "once.jsonl", tmp_path / "four.jsonl"
    ope.write_decision_log(str(once), recs)
    ope.write_decision_log(str(four), [dict(r, decision_id=f"{r['decision_id']}-{k}")
                                       for r in recs for k in range(4)])
    reports = []
    for path in (once, four):
        assert ope.main(["--logs", str(path), "--policy", "fixed", "--estimators", "ips,snips",
                         "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    for one, rep in ((reports[0]["logged_value"], reports[1]["logged_value"]),
                     *((reports[0]["estimates"][n], reports[1]["estimates"][n])
                       for n in ("ips", "snips"))):
        assert rep["value"] == pytest.approx(one["value"])
        assert rep["ci_high"] - rep["ci_low"] == pytest.approx(one["ci_high"] - one["ci_low"],
                                                             rel=1e-2)
    recs = [dict(r, user_id="u0") for r in recs]  # one user: no interval, said so
    ope.write_decision_log(str(once), recs)
    assert ope.main(["--logs", str(once), "--policy", "fixed"]) == 2
    assert "at least 2 users" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ({"arm": "1"}, "log.jsonl:2: arm: expected a whole number"),
    ({"arm": None}, "log.jsonl:2: arm: expected a whole number"),
    ({"propensity": "high"}, "log.jsonl:2: propensity: expected a number"),
    ({"reward": [1]}, "log.jsonl:2: reward: expected a number"),
])
def test_a_record_of_the_wrong_type_is_named_by_line(tmp_path, capsys, bad, message):
    # an arm of "1" (a string) raised TypeError (a traceback); "high" a message without its line
    recs = [dict(r, arm=0, propensity=0.5) for r in _decisions(3, 14)]
    recs[1].update(bad)
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    assert ope.main(["--logs", str(path), "--policy", "fixed"]) == 2
    assert message in capsys.readouterr().err


def test_thompson_replay_needs_monte_carlo_draws(tmp_path, capsys):
    # --n-mc 0 (or less) gave Thompson no propensities: every estimate came out NaN / null
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), [dict(r, arm=i % 2, propensity=0.5)
                                       for i, r in enumerate(_decisions(40, 15))])
    for n_mc in ("0", "-5"):
        with pytest.raises(SystemExit) as done:
            ope.main(["--logs", str(path), "--policy", "bernoulli_ts", "--n-mc", n_mc])
        assert done.value.code == 2 and "--n-mc" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_mc"):
        ope.replay_policy(ope.read_decision_log(str(path)), "bernoulli_ts", n_mc=0)


def test_dr_reward_model_never_saw_the_users_it_predicts_for(tmp_path, monkeypatch, capsys):
    # the folds were drawn per decision: a user's other decisions trained the model that
    # predicted for them (with a user-identifying context, DR's residuals shrank)
    recs = [dict(r, user_id=f"u{i % 40}", arm=i % 2, propensity=0.5, context=[float(i % 40)])
            for i, r in enumerate(_decisions(200, 16))]
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    log = ope.read_decision_log(str(path))
    seen = []
    real = ope._fit_predict

    def spy(log_, train, test, model):
        seen.append((set(log_.groups[train]), set(log_.groups[test])))
        return real(log_, train, test, model)

    monkeypatch.setattr(ope, "_fit_predict", spy)
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--estimators", "dr"]) == 0
    assert len(seen) == 5 and all(not (tr & te) for tr, te in seen)
    assert set().union(*(te for _, te in seen)) == set(log.groups)


def test_a_negative_position_is_refused(tmp_path, capsys):
    # position -1 indexed the last slot's tables (numpy wraps), silently merging two slots
    recs = [dict(r, arm=i % 2, propensity=0.5, position=i % 2)
            for i, r in enumerate(_decisions(20, 17))]
    recs[3]["position"] = -1
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    assert ope.main(["--logs", str(path), "--policy", "fixed"]) == 2
    assert "positions" in capsys.readouterr().err


def test_a_target_log_of_several_campaigns_names_its_own_flag(tmp_path, capsys):
    # the refusal told to use --campaign, which filters --logs only: the target had no filter
    logs, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ope.write_decision_log(str(logs), [dict(r, campaign_id="ca", arm=i % 2, propensity=0.5)
                                       for i, r in enumerate(_decisions(30, 18))])
    ope.write_decision_log(str(target), [dict(r, campaign_id=c, arm=0)
                                         for c in ("cx", "cy") for r in _decisions(5, 19)])
    argv = ["--logs", str(logs), "--target", str(target), "--reward-model", "table", "--json"]
    assert ope.main(argv) == 2
    assert "--target-campaign" in capsys.readouterr().err
    assert ope.main([*argv, "--target-campaign", "cy"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["estimates"]["ips"]["value"] == pytest.approx(  # always arm 0, p = 0.5
        2 * np.mean([r["reward"] * (i % 2 == 0) for i, r in enumerate(_decisions(30, 18))]))


@pytest.mark.parametrize("policy", ["linucb", "lints"])
def test_linear_policies_replay_with_the_servers_bias_term(policy):
    """The server's linear policies take a bias then the context (`ContextBuilder.policy_x`);
    the replay took the context alone, a policy Tailor never runs. Logs: uniform over 2 arms
    (p = 0.5), a centred context x = +-1 that says nothing, arm 1 pays 1 and arm 0 pays 0.
    With the bias a linear policy learns arm 1 (value -> 1, by hand); without it x'theta ~ 0
    for both arms and the replay stayed near the uniform 0.5 (0.51 / 0.50 before)."""
    from kernels import bandits
    from server.campaigns.context import ContextBuilder

    rng = np.random.default_rng(0)
    n = 2000
    x = rng.choice([-1.0, 1.0], size=(n, 1))
    a = rng.integers(2, size=n)
    log = ope.LoggedBandit(a, np.zeros(n, np.int64), (a == 1).astype(float), np.full(n, 0.5),
                           x, 2, 1)
    dist = ope.replay_policy(log, policy, seed=3)
    assert ope.estimate(log, dist, ("ips",))["ips"]["value"] > 0.9
    # round by round the distribution the server's policy gives on the same feedback
    state, mc = bandits.new_state(policy, 2, 2), bandits.new_rng(3)
    for i in range(50):
        xi = ContextBuilder.policy_x(x[i], 2)
        np.testing.assert_allclose(dist[i], bandits.choose(state, mc, xi, n_mc=256).probs)
        bandits.update(state, int(a[i]), float(a[i] == 1), xi, inplace=True)


def test_a_linear_policy_replays_on_a_log_without_context():
    """A linear campaign without context features runs on its bias alone (dim 1); its export
    has an empty context, which the replay refused ("needs a context")."""
    rng = np.random.default_rng(1)
    n = 1000
    a = rng.integers(2, size=n)
    log = ope.LoggedBandit(a, np.zeros(n, np.int64), (a == 1).astype(float), np.full(n, 0.5),
                           np.zeros((n, 0)), 2, 1)
    assert ope.estimate(log, ope.replay_policy(log, "linucb"), ("ips",))["ips"]["value"] > 0.9


def test_an_iso_timestamp_without_an_offset_is_utc_on_any_machine(tmp_path, monkeypatch):
    """Rounds are replayed in time order; an ISO time without an offset was read in the
    machine's zone, so on a New York machine 22:00 (UTC, 13 minutes before the other round)
    sorted 5 hours later, after it. UTC, as the clients' --start/--end."""
    import time
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        path = tmp_path / "log.jsonl"
        path.write_text(json.dumps({"arm": 1, "propensity": 0.5, "reward": 1.0,
                                    "timestamp": 1700000000.0}) + "\n"  # 2023-11-14 22:13:20Z
                        + json.dumps({"arm": 0, "propensity": 0.5, "reward": 0.0,
                                      "timestamp": "2023-11-14T22:00:00"}) + "\n")
        np.testing.assert_array_equal(ope.read_decision_log(str(path)).action, [0, 1])
        assert ope._timestamp("2023-11-14T22:00:00") == 1700000000.0 - 800
        assert ope._timestamp("2023-11-14T17:00:00-05:00") == 1700000000.0 - 800
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_target_without_rounds_at_a_logged_position_is_refused(tmp_path, capsys):
    """The target's empirical policy had no action at a position it never shows: every round
    there got probability 0 on every arm and IPS counted it as a 0 reward (logs of reward 1
    everywhere, a quarter of them at position 1, a target of position 0 only: IPS 0.75 and DR
    0.75 for a policy worth 1)."""
    recs = [dict(r, arm=i % 2, propensity=0.5, reward=1.0, position=i % 2 and (i // 2) % 2)
            for i, r in enumerate(_decisions(40, 11))]
    logs, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ope.write_decision_log(str(logs), recs)
    ope.write_decision_log(str(target), [dict(r, position=0) for r in recs])
    assert ope.main(["--logs", str(logs), "--target", str(target), "--reward-model", "table"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "position 1" in err


def test_a_candidate_choosing_arms_a_deterministic_logger_never_took_is_flagged(tmp_path,
                                                                                capsys):
    # ucb1-like logs: arm 0 every time, propensity 1 (rewards at 0.1; arms 1 and 2 would give
    # 0.3). The uniform candidate's truth is 0.233; IPS said 0.035 [0.032, 0.039] and SNIPS and
    # DR 0.106, without a word: two thirds of its choices are on arms the logs cannot value
    rng = np.random.default_rng(0)
    path = tmp_path / "det.jsonl"
    ope.write_decision_log(str(path), [dict(r, arm=0, propensity=1.0,
                                            reward=float(rng.random() < 0.1))
                                       for r in _decisions(600, 13)])
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--arms", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unsupported_share"] == pytest.approx(2 / 3)
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--arms", "3"]) == 0
    assert "warning: 66.7% of the candidate's choices" in capsys.readouterr().out
    # a stochastic logger (propensity < 1 everywhere): nothing to flag
    ope.write_decision_log(str(path), [dict(r, arm=i % 3, propensity=1 / 3)
                                       for i, r in enumerate(_decisions(60, 14))])
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unsupported_share"] == 0.0
    assert ope.main(["--logs", str(path), "--policy", "fixed"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_a_candidate_without_overlap_with_the_logs_is_refused(tmp_path, capsys):
    """A target that only ever takes arm 2, on logs of arms 0 and 1: no logged round says
    anything of its value. It printed IPS 0.000000 [0, 0] (certain), SNIPS nan and DR the
    reward model's guess, exit 0; it is refused, naming the rounds and the arms."""
    recs = [dict(r, arm=i % 2, propensity=0.5, reward=1.0) for i, r in enumerate(_decisions(40, 15))]
    logs, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ope.write_decision_log(str(logs), recs)
    ope.write_decision_log(str(target), [dict(r, arm=2) for r in recs])
    assert ope.main(["--logs", str(logs), "--target", str(target), "--arms", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "no overlap" in err and "40 logged rounds" in err
    # one round in common is overlap enough to estimate (with its wide interval)
    ope.write_decision_log(str(target), [dict(r, arm=2 if i else 0) for i, r in enumerate(recs)])
    assert ope.main(["--logs", str(logs), "--target", str(target), "--arms", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["estimates"]["ips"]["value"] > 0


def test_the_report_says_how_many_decisions_it_skipped_and_why(tmp_path, capsys):
    """`campaign export --include-pending` of a young campaign: 48 of 301 decisions closed.
    The report said "48 logged rounds" and nothing of the other 253; it counts the pending
    and the holdout or suppressed decisions it skipped, in the table and in the JSON."""
    recs = [dict(r, arm=i % 3, propensity=1 / 3) for i, r in enumerate(_decisions(30, 16))]
    recs += [dict(r, arm=0, reward=None) for r in _decisions(5, 17)]
    recs += [dict(r, arm=-1) for r in _decisions(2, 18)]
    path = tmp_path / "log.jsonl"
    ope.write_decision_log(str(path), recs)
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_rounds"] == 30
    assert report["skipped"] == {"pending": 5, "holdout_or_suppressed": 2}
    assert ope.main(["--logs", str(path), "--policy", "fixed"]) == 0
    assert capsys.readouterr().out.startswith(
        "30 logged rounds (skipped: 5 pending, 2 holdout or suppressed), candidate")


def _two_arm_logs(tmp_path, rewarded):
    """40 decisions of 10 users, arms 0/1 alternating at propensity 0.5, reward 1 on the
    first ``rewarded`` arm-0 rounds only; the target log takes arm 0 always."""
    logs, target = tmp_path / "logs.jsonl", tmp_path / "target.jsonl"
    recs = [dict(r, arm=i % 2, propensity=0.5, reward=float(i % 2 == 0 and i // 2 < rewarded))
            for i, r in enumerate(_decisions(40, 3))]
    recs = [dict(r, user_id=f"u{i % 10}") for i, r in enumerate(recs)]
    ope.write_decision_log(str(logs), recs)
    ope.write_decision_log(str(target), [dict(r, arm=0) for r in recs])
    return ["--logs", str(logs), "--target", str(target), "--reward-model", "table"]


@pytest.mark.parametrize("rewarded, expected", [(0, 0.0), (3, 3.0), (12, 12.0)])
def test_estimates_resting_on_few_rewarded_rounds_are_flagged(tmp_path, capsys, rewarded,
                                                              expected):
    # IPS terms are weight 1 / 0.5 = 2 times the reward: `rewarded` equal terms, so Kish's
    # count (sum t)^2 / sum t^2 is `rewarded`. With none, IPS printed 0 with the interval
    # [0, 0] and no word of doubt; with 3 its interval holds the truth about 80% of the time
    # (the report's simulation), yet nothing said so
    argv = _two_arm_logs(tmp_path, rewarded)
    assert ope.main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["effective_rounds"] == pytest.approx(expected)
    assert ope.main(argv) == 0
    out = capsys.readouterr().out
    assert ("rest on the rewards of about" in out) == (expected < ope.MIN_EFFECTIVE_ROUNDS)
    if rewarded == 0:
        assert report["estimates"]["ips"]["ci_low"] == report["estimates"]["ips"]["ci_high"] == 0


def test_effective_rounds_weigh_unequal_terms():
    # terms 2, 2, 4 (weights 2, 2, 4 on reward 1) and a zero: (2 + 2 + 4)^2 / (4 + 4 + 16)
    log = ope.LoggedBandit(np.zeros(4, np.int64), np.zeros(4, np.int64),
                           np.array([1.0, 1.0, 1.0, 0.0]), np.array([0.5, 0.5, 0.25, 0.5]),
                           np.zeros((4, 0)), 2, 1)
    dist = np.tile([1.0, 0.0], (4, 1))
    assert ope.effective_rounds(log, dist) == pytest.approx(64 / 24)


def test_a_candidate_choosing_an_arm_no_logged_round_has_is_flagged(tmp_path, capsys):
    # a campaign of 3 variants whose third was appended after these 40 decisions (arms 0 and 1
    # at propensity 0.5): the uniform candidate puts 1/3 of every round on arm 2, which IPS and
    # SNIPS value as reward 0; the warning counted only rounds logged with propensity 1, so it
    # said nothing (unsupported_share 0.0; a bernoulli_ts candidate on a real campaign's 1,500
    # decisions with --arms 4 put 83% of its choices on the unlogged arm, IPS 0.026, unflagged)
    path = tmp_path / "two.jsonl"
    ope.write_decision_log(str(path), [dict(r, arm=i % 2, propensity=0.5)
                                       for i, r in enumerate(_decisions(40, 15))])
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--arms", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unsupported_share"] == pytest.approx(1 / 3)
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--arms", "3"]) == 0
    assert "warning: 33.3% of the candidate's choices" in capsys.readouterr().out
    assert ope.main(["--logs", str(path), "--policy", "fixed", "--json"]) == 0  # both logged
    assert json.loads(capsys.readouterr().out)["unsupported_share"] == 0.0


@pytest.mark.parametrize("grouped", [False, True])
def test_equal_estimates_get_equal_bootstrap_intervals(grouped):
    # the logging policy valued on its own logs: every weight is 1, so IPS and SNIPS are both
    # the mean reward on every resample; the bootstrap drew other resamples for each, and the
    # two printed different intervals for one figure (evaluate-timing's random row, 2,000
    # users, 200 resamples: [102.0, 117.8] and [101.9, 114.9])
    rng = np.random.default_rng(4)
    n = 300
    log = ope.LoggedBandit(rng.integers(K, size=n), np.zeros(n, np.int64),
                           (rng.random(n) < 0.2).astype(float), np.full(n, 1 / K),
                           np.zeros((n, 0)), K, 1)
    groups = np.arange(n) % 50 if grouped else None
    est = ope.estimate(log, np.full((n, K), 1 / K), ("ips", "snips"), ci="bootstrap",
                       n_boot=200, groups=groups)
    assert est["ips"]["value"] == pytest.approx(log.reward.mean())
    assert (est["ips"]["ci_low"], est["ips"]["ci_high"]) == pytest.approx(
        (est["snips"]["ci_low"], est["snips"]["ci_high"]), rel=1e-12)
