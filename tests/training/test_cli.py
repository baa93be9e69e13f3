import numpy as np
import pyarrow.csv as pacsv
import pytest

from training.cli import COMMANDS, build_parser
from training.compare_als import main as compare_main


def test_every_listed_module_registers_one_subcommand_with_a_handler(capsys):
    """COMMANDS is the whole CLI: each module adds exactly one subcommand that has a handler."""
    expected = ["demo-data", "train", "bootstrap", "backtest", "evaluate-timing", "cold-items",
                "push", "export", "ope", "attribute", "retrain"]
    assert len(COMMANDS) == len(expected)
    parser = build_parser()
    for name in expected:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: python -m training {name} ")
    help_text = parser.format_help()
    assert "{" + ",".join(expected) + "}" in help_text  # no other subcommand, in COMMANDS order
    for argv in (["demo-data", "--out", "x"], ["bootstrap", "--data-dir", "x"]):
        assert callable(parser.parse_args(argv).func)


def test_the_demo_world_sizes_help_shows_their_defaults(capsys):
    """`demo-data --help` listed --users --items --days --seed without a word or a default."""
    from training.demo import DemoConfig
    d = DemoConfig()
    for name, flags in (("demo-data", {"users": d.n_users, "items": d.n_items, "days": d.n_days,
                                       "seed": d.seed}),
                        ("bootstrap", {"users": d.n_users, "items": d.n_items})):
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for flag, default in flags.items():
            assert f"--{flag} {flag.upper()} " in text and f"(default {default})" in text, flag


def test_compare_als_on_movielens_format(world_dir, tmp_path, capsys):
    rows = pacsv.read_csv(world_dir / "interactions.csv").to_pydict()
    rating = {"view": 1, "click": 3, "add_to_cart": 4, "purchase": 5}
    path = tmp_path / "ratings.dat"
    with open(path, "w") as fh:
        fh.write("userId::movieId::rating::timestamp\n")
        for u, i, t, e in zip(rows["user_id"], rows["item_id"], rows["timestamp"], rows["event"]):
            if e in rating and u % 5 == 0:
                fh.write(f"{u}::{i}::{rating[e]}::{t}\n")
    assert compare_main(["--interactions", str(path), "--format", "movielens",
                         "--factors", "16"]) == 0
    out = capsys.readouterr().out
    table = {ln.split()[0]: [float(x) for x in ln.split()[1:]] for ln in out.splitlines()
             if ln.split() and ln.split()[0] in ("model", "popularity", "implicit-als")}
    assert set(table) == {"model", "popularity", "implicit-als"}
    assert table["model"][1] > table["popularity"][1] and np.isfinite(table["implicit-als"]).all()


def test_bad_files_and_values_are_one_error_line_not_a_traceback(tmp_path, capsys):
    from training.cli import main

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    cases = {
        "No such file": ["train", "--interactions", str(tmp_path / "nope.csv"),
                         "--out", str(tmp_path / "b")],
        "missing column": ["train", "--interactions", str(tmp_path / "bad.csv"),
                           "--out", str(tmp_path / "b")],
        "No such file or directory": ["backtest", "--interactions", str(tmp_path / "nope.csv"),
                                      "--test-frac", "0.2"],
    }  # evaluate-timing's --epsilon 2 is the parser's now (test_timing: it names the flag)
    for expected, argv in cases.items():
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and "Traceback" not in err, err


def test_out_of_range_counts_are_refused_by_the_parser(tmp_path, capsys):
    from training.cli import main

    data = ["--interactions", str(tmp_path / "i.csv"), "--out", str(tmp_path / "b")]
    (tmp_path / "f.txt").write_text("a file, not a directory")
    for argv in (["demo-data", "--out", str(tmp_path / "d"), "--users", "0"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--items", "-3"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--days", "0"],
                 # wrote a world of about one shop event per user, or died on numpy's words
                 ["demo-data", "--out", str(tmp_path / "d"), "--events-per-user", "0"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--events-per-user", "nan"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--context-tastes", "nan"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--impressions-per-user", "-1"],
                 ["evaluate-timing", "--users", "0"], ["evaluate-timing", "--rounds", "0"],
                 ["bootstrap", "--data-dir", str(tmp_path), "--users", "0"],
                 ["train", *data, "--factors", "0"], ["train", *data, "--iterations", "0"],
                 ["train", *data, "--candidates", "0"], ["train", *data, "--test-frac", "0"],
                 ["train", *data, "--test-frac", "1.5"],
                 # a half-life <= 0 gave a bundle the server refuses; a negative alpha or
                 # regularization, a model of nonsense
                 ["train", *data, "--half-life-days", "0"],
                 ["train", *data, "--half-life-days", "-5"],
                 ["train", *data, "--half-life-days", "inf"],
                 ["backtest", *data[:2], "--half-life-days", "nan"],
                 # a NaN lambda gave EASE NaN scores (a baseline of nonsense), 0 a singular solve
                 ["backtest", *data[:2], "--ease-lambda", "nan"],
                 ["backtest", *data[:2], "--ease-lambda", "0"],
                 ["train", *data, "--alpha", "-1"], ["train", *data, "--regularization", "-1"],
                 # a target of 2 built HNSW at efSearch 4096, of 0 IVF at nprobe 1 (recall 0.25)
                 ["train", *data, "--target-recall", "2"], ["train", *data, "--target-recall", "0"],
                 ["train", *data, "--tree-tolerance", "1"],
                 # the server refuses these: the bundle was refused after the whole run
                 ["train", *data, "--history-len", "10001"],
                 # --threads -2 aborted the process in libgomp ("Out of memory allocating
                 # 962072675200 bytes"), --seed -1 failed in ALS without naming the flag, and
                 # --drift-users -5 silently wrote no drift reference (as 0 asks)
                 ["train", *data, "--threads", "-2"], ["train", *data, "--seed", "-1"],
                 ["train", *data, "--drift-users", "-5"],
                 ["train", *data, "--factors", "65537"],
                 # cold-items scored a nonsense --holdout 0 or -1 (one item held out), died on
                 # 1.5 and --k 0 with numpy's words, and on --k -3 with a traceback
                 ["cold-items", *data[:2], "--items", "x.csv", "--holdout", "0"],
                 ["cold-items", *data[:2], "--items", "x.csv", "--holdout", "1.5"],
                 ["cold-items", *data[:2], "--items", "x.csv", "--k", "0"],
                 ["cold-items", *data[:2], "--items", "x.csv", "--k", "-3"],
                 # cold-items --threads -2 aborted the process in libgomp ("Out of memory
                 # allocating 962072675200 bytes"), --seed -1 ended on numpy's words
                 ["cold-items", *data[:2], "--items", "x.csv", "--threads", "-2"],
                 ["cold-items", *data[:2], "--items", "x.csv", "--seed", "-1"],
                 # retrain pushed with --canary 0 to every user at once (no guardrails), was
                 # refused --canary 100 by the server only after the whole export and training,
                 # and with --tolerance nan counted any candidate as not worse
                 ["retrain", "--work-dir", str(tmp_path / "w"), "--canary", "0"],
                 ["retrain", "--work-dir", str(tmp_path / "w"), "--canary", "100"],
                 ["retrain", "--work-dir", str(tmp_path / "w"), "--canary", "nan"],
                 ["retrain", "--work-dir", str(tmp_path / "w"), "--tolerance", "nan"],
                 # push --canary 0 went to the server as no canary at all: the bundle served
                 # every user at once, without guardrails (docs: 0 < P < 100)
                 ["push", str(tmp_path), "--canary", "0"],
                 ["push", str(tmp_path), "--canary", "100"],
                 ["push", str(tmp_path), "--canary", "nan"],
                 # demo-data --seed -1 ended on numpy's "expected non-negative integer" without
                 # naming the flag; an --end in the year 3000 wrote a world train refuses
                 # ("after the year 3000 as unix seconds: milliseconds?")
                 ["demo-data", "--out", str(tmp_path / "d"), "--seed", "-1"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--end", "2999-12-31"],
                 ["demo-data", "--out", str(tmp_path / "d"), "--end", "9999-12-31"],
                 # a --timeout of inf, nan, 0, -1 or 1e10 is a deadline already past for
                 # gRPC: "push refused: DEADLINE_EXCEEDED", as if the server had refused it
                 ["push", str(tmp_path), "--timeout", "inf"],
                 ["push", str(tmp_path), "--timeout", "nan"],
                 ["push", str(tmp_path), "--timeout", "0"],
                 ["push", str(tmp_path), "--timeout", "1e10"],
                 ["retrain", "--work-dir", str(tmp_path / "w"), "--timeout", "-1"],
                 # an output that cannot be written failed only after the whole run: train's
                 # "Not a directory" lost the training, backtest's and cold-items' the report
                 ["train", *data[:2], "--out", str(tmp_path / "f.txt" / "b")],
                 ["train", *data[:2], "--out", str(tmp_path / "f.txt")],
                 ["backtest", *data[:2], "--json", str(tmp_path / "missing" / "r.json")],
                 ["backtest", *data[:2], "--json", str(tmp_path)],
                 ["cold-items", *data[:2], "--items", "x.csv", "--json",
                  str(tmp_path / "f.txt" / "r.json")]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2, argv
        assert "error: argument" in capsys.readouterr().err, argv
    assert not (tmp_path / "d").exists() and not (tmp_path / "w").exists()


def test_a_failed_export_leaves_no_partial_files(tmp_path, capsys):
    # no server on the port: the export failed, and left interactions.csv.tmp and
    # tombstones.csv.tmp behind
    from tests.conftest import free_port
    from training.cli import main

    out = tmp_path / "export" / "interactions.csv"
    assert main(["export", "--server", f"127.0.0.1:{free_port()}", "--out", str(out),
                 "--impressions"]) == 1
    assert "export failed: UNAVAILABLE" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_train_on_too_few_rows_for_a_ranker_says_so(tmp_path, capsys):
    # two users, four rows: the ranker's datasets were empty and LightGBM's "Check failed:
    # (num_data) > (0)" came out as a traceback; --no-ranker trains the same rows
    from training.cli import main

    rows = tmp_path / "i.csv"
    rows.write_text("user_id,item_id,timestamp,event,value\n1,5,1700000000,view,0\n"
                    "1,6,1700000100,view,0\n2,5,1700000000,purchase,3\n2,7,1700000200,click,0\n")
    argv = ["train", "--interactions", str(rows), "--out", str(tmp_path / "b"), "--factors", "4",
            "--iterations", "2", "--no-report"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ranker" in err and "--no-ranker" in err, err
    assert main([*argv, "--no-ranker"]) == 0


def test_too_few_ranker_users_names_the_flag(world_dir, tmp_path, capsys):
    # --ranker-users 3 left the ranker no validation user, and the error said "give more rows"
    from training.cli import main

    assert main(["train", "--interactions", str(world_dir / "interactions.csv"), "--out",
                 str(tmp_path / "b"), "--factors", "4", "--iterations", "2", "--no-report",
                 "--ranker-users", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--ranker-users 3" in err and "at least 10" in err, err


def test_an_export_failing_on_a_file_leaves_no_partial_files(tmp_path, capsys):
    # an OSError (here: the tombstones' directory is missing) left interactions.csv.tmp behind
    from tests.conftest import free_port
    from training.cli import main

    out = tmp_path / "export" / "interactions.csv"
    assert main(["export", "--server", f"127.0.0.1:{free_port()}", "--out", str(out),
                 "--tombstones-out", str(tmp_path / "missing" / "t.csv")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("body, says", [
    ("", "no data rows"),
    ("1,5,1700000000,email_sent,0\n2,5,1700000100,sms_sent,0\n", "no row has a positive"),
])
def test_train_on_no_rows_of_positive_weight_says_so(tmp_path, capsys, body, says):
    # a header-only file, or one of zero-weight events only: an IndexError from the ALS
    # fit came out as a traceback (exit 1)
    from training.cli import main

    rows = tmp_path / "i.csv"
    rows.write_text("user_id,item_id,timestamp,event,value\n" + body)
    assert main(["train", "--interactions", str(rows), "--out", str(tmp_path / "b"),
                 "--no-ranker", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err, err
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_the_experiment_scripts_end_bad_input_on_one_error_line(tmp_path):
    # `python -m training.compare_als` with a missing file, `.context_eval --users 0` (a
    # ZeroDivisionError) and `.item_item_eval --users 0` ended on tracebacks
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for argv in (["training.compare_als", "--interactions", str(tmp_path / "nope.csv")],
                 ["training.context_eval", "--users", "0"],
                 ["training.item_item_eval", "--users", "0"]):
        proc = subprocess.run([sys.executable, "-m", *argv], cwd=root, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and "error: " in proc.stderr, proc.stderr[-2000:]


def test_retrain_and_train_find_the_servers_keyring_where_the_server_does(monkeypatch, tmp_path):
    """`retrain --secrets-dir` defaulted to var/secrets whatever TAILOR_SECRETS_DIR said (train
    took it): a retrain beside a server with its keyrings elsewhere could not read `erasure`."""
    monkeypatch.setenv("TAILOR_SECRETS_DIR", str(tmp_path / "keys"))
    parser = build_parser()
    for argv in (["retrain", "--work-dir", str(tmp_path / "w")],
                 ["train", "--interactions", "i.csv", "--out", "o"]):
        assert parser.parse_args(argv).secrets_dir == tmp_path / "keys"


def test_an_empty_or_none_secrets_dir_means_what_it_means_for_the_server(monkeypatch, capsys):
    """An empty TAILOR_SECRETS_DIR was the working directory (`Path("")`), where the server
    refuses to start; `none` is the environment only, as `secrets_dir = "none"` is."""
    argv = ["train", "--interactions", "i.csv", "--out", "o"]
    monkeypatch.setenv("TAILOR_SECRETS_DIR", "none")
    assert build_parser().parse_args(argv).secrets_dir is None
    monkeypatch.setenv("TAILOR_SECRETS_DIR", "")
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "argument --secrets-dir: an empty path would be the working directory (an empty " \
           "TAILOR_SECRETS_DIR?)" in capsys.readouterr().err

def _one_row_per_user(path):
    """A log where no user has a second row: no hold-out, no row after a backtest's split."""
    path.write_text("user_id,item_id,timestamp,event,value\n" + "".join(
        f"u{u},i{u % 7},{1_700_000_000 + u},purchase,1\n" for u in range(40)))
    return path


def test_train_backtest_that_cannot_split_is_refused_before_training(tmp_path, capsys):
    # the backtest's "no user has rows after the split" came only after the whole training and
    # the bundle's write, as the last line, where a script reads the bundle's path
    from training.cli import main

    rows = _one_row_per_user(tmp_path / "i.csv")
    assert main(["train", "--interactions", str(rows), "--out", str(tmp_path / "b"),
                 "--no-ranker", "--no-report", "--factors", "4", "--backtest"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: --backtest: ") and "no user has rows after the split" in err
    assert "method" not in out and not (tmp_path / "b").exists()


def test_a_train_backtest_that_fails_still_names_the_bundle_it_wrote(tmp_path, capsys,
                                                                      monkeypatch):
    # the backtest's server does not start (a setting it refuses): the bundle was written but
    # its path was never printed; the error did not say the bundle was fine
    from training.cli import main
    from training.demo import DemoConfig
    from training.demo_files import write_demo

    write_demo(tmp_path / "w", DemoConfig(n_users=150, n_items=80, n_days=10, seed=3))
    monkeypatch.setenv("TAILOR_EVENT_FUTURE_TOLERANCE_S", "-1")
    assert main(["train", "--interactions", str(tmp_path / "w" / "interactions.csv"),
                 "--out", str(tmp_path / "b"), "--no-ranker", "--no-report", "--factors", "4",
                 "--iterations", "2", "--backtest"]) == 2
    out, err = capsys.readouterr()
    (bundle,) = (tmp_path / "b").iterdir()
    assert (bundle / "manifest.json").is_file()
    assert out.splitlines()[-1] == str(bundle)
    assert err.startswith("error: backtest failed: ") and "TAILOR_EVENT_FUTURE_TOLERANCE_S" in err
    assert f"the bundle is written: {bundle}" in err


def _train_backtest(tmp_path):
    from training.cli import main
    from training.demo import DemoConfig
    from training.demo_files import write_demo

    write_demo(tmp_path / "w", DemoConfig(n_users=150, n_items=80, n_days=10, seed=3))
    return main(["train", "--interactions", str(tmp_path / "w" / "interactions.csv"),
                 "--out", str(tmp_path / "b"), "--no-ranker", "--no-report", "--factors", "4",
                 "--iterations", "2", "--backtest"])


def test_a_train_backtest_asks_in_batches_the_servers_limits_take(tmp_path, capsys,
                                                                  monkeypatch):
    # production's environment (the retrain job sources it) lowers the users of a
    # RecommendBatch below the backtest's 500: the loopback server refused the first batch and
    # train ended on a grpc traceback (exit 1) after writing the bundle, its path not printed
    monkeypatch.setenv("TAILOR_LIMITS__BATCH_USERS", "50")
    monkeypatch.setenv("TAILOR_LIMITS", '{"batch_items": 300}')   # 30 users of k=10 a batch
    assert _train_backtest(tmp_path) == 0
    out, _ = capsys.readouterr()
    (bundle,) = (tmp_path / "b").iterdir()
    assert "served backtest" in out and out.splitlines()[-1] == str(bundle)


@pytest.mark.parametrize("env, says", [
    # k=10 a user cannot be asked: refused before the training, naming the variable
    ({"TAILOR_LIMITS__RECOMMEND_K": "5"}, "TAILOR_LIMITS__RECOMMEND_K is 5"),
    ({"TAILOR_LIMITS": '{"batch_items": 9}'}, "TAILOR_LIMITS__BATCH_ITEMS is 9"),
])
def test_a_train_backtest_the_servers_limits_cannot_answer_is_refused_before_training(
        tmp_path, capsys, monkeypatch, env, says):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _train_backtest(tmp_path) == 2
    _, err = capsys.readouterr()
    assert err.startswith("error: --backtest: ") and says in err
    assert not (tmp_path / "b").exists()


def test_a_train_backtest_its_server_refuses_names_the_bundle_it_wrote(tmp_path, capsys,
                                                                       monkeypatch):
    # any status of the backtest's calls (here: every RecommendBatch larger than the server
    # takes) ended on a grpc traceback, exit 1, the written bundle's path never printed
    monkeypatch.setenv("TAILOR_LIMITS__BATCH_REQUEST_BYTES", "64")
    assert _train_backtest(tmp_path) == 2
    out, err = capsys.readouterr()
    (bundle,) = (tmp_path / "b").iterdir()
    assert out.splitlines()[-1] == str(bundle)
    assert err.startswith("error: backtest failed: the backtest's server answered ")
    assert "Traceback" not in err and f"the bundle is written: {bundle}" in err


def test_a_manifest_without_a_hold_out_records_no_figures(tmp_path, capsys):
    # every user one row: no hold-out, yet the manifest recorded every metric as 0.0 with an SE
    # of 0.0, which GetModelStatus served as "model.ndcg@10: 0.0", as if measured
    import json

    from training.cli import main

    rows = _one_row_per_user(tmp_path / "i.csv")
    assert main(["train", "--interactions", str(rows), "--out", str(tmp_path / "b"),
                 "--no-ranker", "--factors", "4", "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "no user has a held-out row: nothing measured" in out
    (bundle,) = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
    metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]
    assert not {"model", "retrieval", "popularity", "se", "segments"} & set(metrics)
    assert metrics["n_eval_users"] == metrics["n_test_users"] == 0
    assert metrics["eval"]["measured"] is False
    assert "nothing measured" in (tmp_path / "b" / "report.html").read_text()


def test_a_demo_world_too_big_for_memory_is_one_error_line(tmp_path, capsys):
    # numpy's _ArrayMemoryError ("Unable to allocate 72.8 TiB ...") came out as a traceback
    from training.cli import main

    assert main(["demo-data", "--out", str(tmp_path / "d"), "--items", "10000000000000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not enough memory: ") and "Traceback" not in err, err


def test_a_demo_world_ending_late_in_2999_trains(tmp_path, capsys):
    from training.cli import main

    world = tmp_path / "d"
    assert main(["demo-data", "--out", str(world), "--users", "30", "--items", "40", "--days",
                 "3", "--end", "2999-12-30"]) == 0
    assert main(["train", "--interactions", str(world / "interactions.csv"), "--out",
                 str(tmp_path / "b"), "--no-ranker", "--no-report", "--factors", "4",
                 "--iterations", "2"]) == 0


@pytest.mark.parametrize("weight", ["1e39", "1e12"])
def test_event_weights_too_large_for_the_als_fit_are_one_error_line(tmp_path, capsys, weight):
    # a weight of 1e39 (inf as float32) or 1e12 (its squares overflow) ended on implicit's
    # "ModelFitError: NaN encountered in factors" traceback, exit 1
    from training.cli import main
    from training.demo import DemoConfig
    from training.demo_files import write_demo

    write_demo(tmp_path / "w", DemoConfig(n_users=200, n_items=300, n_days=10))
    assert main(["train", "--interactions", str(tmp_path / "w" / "interactions.csv"), "--out",
                 str(tmp_path / "b"), "--no-ranker", "--no-report", "--factors", "8",
                 "--iterations", "3", "--threads", "1", "--event-weight",
                 f"purchase={weight}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--event-weight" in err and "Traceback" not in err, err


def test_train_says_which_row_is_served_and_that_the_served_fit_is_a_refit(world_dir, tmp_path,
                                                                          capsys):
    # the table printed model / retrieval / popularity with no word on which one the bundle
    # serves, whether the ranker was kept (only a drop was printed), or that the bundle serves a
    # refit the table did not score ("fits: ... (refit=True)")
    import json

    from training.cli import main

    assert main(["train", "--interactions", str(world_dir / "interactions.csv"), "--out",
                 str(tmp_path / "b"), "--factors", "4", "--iterations", "2", "--no-report"]) == 0
    out = capsys.readouterr().out
    (bundle,) = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
    manifest = json.loads((bundle / "manifest.json").read_text())
    served = [line for line in out.splitlines() if line.startswith("served: ")]
    kept = manifest["ranker"] is not None
    assert len(served) == 1 and ("ranker kept" in served[0]) == kept
    assert ("ranker dropped" in served[0]) != kept
    assert "rows: model = what the bundle serves" in out
    assert f"refit with the same parameters on all {manifest['fits']['served']['rows']} rows" in out


def test_a_segment_without_users_prints_no_score():
    # "returning 0 0.0000 0.0000 0.0000" read as a score of 0 for a segment nobody was in
    from training.evaluate import format_table

    scores = {"recall@10": 0.1, "ndcg@10": 0.05, "map@10": 0.02, "coverage": 1.0}
    empty = {"recall@10": 0.0, "ndcg@10": 0.0}
    metrics = {"model": scores, "retrieval": scores, "popularity": scores, "n_eval_users": 3,
               "segments": {"new": {"n_users": 3, "model": scores, "retrieval": scores,
                                    "popularity": scores},
                            "returning": {"n_users": 0, "model": empty, "retrieval": empty,
                                          "popularity": empty}}}
    lines = {line.split()[0]: line.split()[1:] for line in format_table(metrics).splitlines()}
    assert lines["new"] == ["3", "0.0500", "0.0500", "0.0500"]
    assert lines["returning"] == ["0", "-", "-", "-"]


def test_pushing_a_bundles_root_names_the_bundle_in_it(tmp_path, capsys):
    # `train --out bundles` then `push bundles`: "bundles has no manifest.json: not a bundle
    # directory", with no word that the bundle is one level down
    from training.cli import main

    for version in ("20261201T000000-aaaaaaaa", "20261207T000000-bbbbbbbb"):
        (tmp_path / "bundles" / version).mkdir(parents=True)
        (tmp_path / "bundles" / version / "manifest.json").write_text("{}")
    assert main(["push", str(tmp_path / "bundles"), "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"newest {tmp_path / 'bundles' / '20261207T000000-bbbbbbbb'}: push one" in err


def test_a_segment_without_users_has_no_score_in_the_report_either():
    from training.report import _segments_table

    empty = {"recall@10": 0.0, "ndcg@10": 0.0}
    html = _segments_table({"segments": {"returning": {
        "n_users": 0, "model": empty, "retrieval": empty, "popularity": empty}}})
    assert "<td>returning</td><td>0</td>" + "<td>-</td>" * 6 in html and "0.0000" not in html
