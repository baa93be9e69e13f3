"""Served backtest: the scoring function on a hand-computed case, the split, and one real run."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.backtest import cold_share, parse_cutoff, score, split_rows
from training.metrics import bootstrap_se

from .conftest import SMALL, make_interactions

ROOT = Path(__file__).resolve().parents[2]


def _csr(sets):
    indptr = np.r_[0, np.cumsum([len(s) for s in sets])].astype(np.int64)
    return indptr, np.array([i for s in sets for i in sorted(s)], np.int32)


def test_score_on_a_hand_computed_case():
    test = _csr([{3, 7}, {1}, set(), {9}])          # later items of users 0..3
    seen = _csr([{5}, {2, 4}, {0}, set()])           # items seen before the cutoff
    recs = np.array([[5, 3, 8, 7, -1],               # hits at ranks 2 and 4, one seen item (5)
                     [2, 4, 6, 0, 8],                # no hit, two seen items
                     [0, 1, 2, 3, 4],                # user 2 has no later items: not scored
                     [9, -1, -1, -1, -1]])           # hit at rank 1
    m = score(recs, np.array([0, 1, 2, 3]), test, seen, n_items=20, k=5)
    ndcg0 = (1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3))
    assert m["n_users"] == 3
    assert m["recall@5"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["ndcg@5"] == pytest.approx((ndcg0 + 0 + 1) / 3)
    assert m["map@5"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 0 + 1) / 3)
    assert m["mrr@5"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert m["seen_share"] == pytest.approx(3 / 10)   # 5, 2, 4 among 4 + 5 + 1 filled slots
    assert m["coverage"] == pytest.approx(len({5, 3, 8, 7, 2, 4, 6, 0, 9}) / 20)
    assert m["ndcg@5_se"] == pytest.approx(bootstrap_se(np.array([ndcg0, 0.0, 1.0])))
    assert 0 < m["ndcg@5_se"] < 0.5
    assert m["n_users_new"] == 3   # no later item was seen before: the same figures
    assert m["ndcg@5_new"] == pytest.approx(m["ndcg@5"])


def test_new_only_scoring_drops_items_seen_before():
    test = _csr([{3, 5}, {2}])
    seen = _csr([{5}, {2, 4}])   # user 0 saw 5 before; user 1's only later item is a repeat
    recs = np.array([[5, 3, 1], [2, 0, 1]])
    m = score(recs, np.array([0, 1]), test, seen, n_items=10, k=3)
    assert m["n_users_new"] == 1 and m["ndcg@3_new"] == pytest.approx(1 / np.log2(3))
    assert m["recall@3"] == pytest.approx(1.0) and m["seen_share"] == pytest.approx(2 / 6)


def test_cold_share_counts_the_filled_slots_of_items_nobody_touched_before():
    cold = np.array([True, False, True, False])
    assert cold_share(np.array([[0, 1, -1], [2, 2, 3]]), cold) == pytest.approx(3 / 5)
    assert cold_share(np.full((2, 3), -1), cold) == 0.0


def test_bootstrap_se_matches_the_normal_approximation():
    values = np.random.default_rng(1).random(4000)
    expected = values.std(ddof=1) / np.sqrt(values.shape[0])
    assert bootstrap_se(values) == pytest.approx(expected, rel=0.1)
    assert bootstrap_se(np.ones(50)) == 0.0


def test_split_by_cutoff_and_by_fraction():
    rows = [("a", "x", 10), ("a", "y", 20), ("a", "z", 30), ("a", "w", 40, "email_sent"),
            ("b", "x", 25), ("c", "y", 35)]
    inter = make_interactions(rows)
    before, after = split_rows(inter, cutoff=parse_cutoff("25"))
    assert before.ts.tolist() == [10, 20] and sorted(after.ts.tolist()) == [25, 30, 35]
    before, after = split_rows(inter, test_frac=0.34)   # a: 3 weighted rows -> last 1 held out
    assert sorted(after.ts.tolist()) == [30] and len(before) == 4
    assert parse_cutoff("2023-11-15") == 1_700_006_400


def test_backtest_cli_serves_a_real_bundle(world_dir, tmp_path):
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "backtest", "--interactions",
         str(world_dir / "interactions.csv"), "--items", str(world_dir / "items.csv"),
         "--cutoff", str(SMALL.start + 24 * 86_400), "--factors", "16", "--iterations", "5",
         "--no-ranker", "--ease-lambda", "200", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    served = report["methods"]["tailor (served)"]
    split = report["split"]
    assert served["n_users"] == split["users_scored"] > 1000 and split["users_unknown"] > 0
    # users first active after the cutoff are unknown to the bundle: the server answers cold
    assert served["cold_start"] == split["users_unknown"]
    # the backtest serves with every seen item excluded for good (FULL_SEEN_FILTERING)
    assert served["seen_share"] == 0.0
    assert all(0.0 <= m["cold_share"] <= 1.0 for m in report["methods"].values())
    assert served["ndcg@10"] > 2 * report["methods"]["popularity"]["ndcg@10"]
    assert set(report["methods"]) >= {"popularity", "implicit-als", "ease"}
    assert report["manifest"]["fits"]["served"]["refit"] is True
    assert "tailor (served)" in proc.stdout


@pytest.mark.parametrize("cutoff, problem", [("5", "no rows before the split"),
                                             ("50", "no user has rows after the split")])
def test_a_cutoff_outside_the_data_is_refused(cutoff, problem):
    # before the first row: IndexError deep in the pipeline; after the last: a served
    # "ndcg@10 = 0.0000" over 0 users, as if the model had scored nothing
    from training.backtest import run_backtest
    from training.pipeline import TrainConfig

    inter = make_interactions([("a", "x", 10), ("a", "y", 20), ("b", "x", 25), ("c", "y", 35)])
    with pytest.raises(ValueError, match=problem) as err:
        run_backtest(inter, None, TrainConfig(), cutoff=parse_cutoff(cutoff), baselines=False)
    assert "rows span 10 .. 35" in str(err.value)


def test_a_server_that_does_not_start_is_one_error_naming_why(tmp_path, monkeypatch):
    # a RuntimeError traceback pointed at server.log inside the temporary directory that was
    # deleted on the way out: the reason was lost
    from training.backtest import _Server

    monkeypatch.setenv("TAILOR_EVENT_FUTURE_TOLERANCE_S", "-1")
    with pytest.raises(OSError, match=r"server exited 2 .*TAILOR_EVENT_FUTURE_TOLERANCE_S"):
        _Server(tmp_path, tmp_path / "no-bundle", timeout=60)


def test_the_backtests_server_does_not_take_the_production_servers_listeners(
        tmp_path, monkeypatch, demo_bundle):
    # run beside a production server with its environment (an EnvironmentFile, a sourced
    # .env): the loopback server took its metrics and public ports (in use: it exited), its
    # auth config (every backtest call refused) and its host; retrain and backtest failed
    import socket

    from training.backtest import _Server

    with socket.socket() as busy, socket.socket() as public:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        public.bind(("127.0.0.1", 0))
        public.listen()
        monkeypatch.setenv("TAILOR_METRICS_PORT", str(busy.getsockname()[1]))
        monkeypatch.setenv("TAILOR_PUBLIC_HTTP_PORT", str(public.getsockname()[1]))
        monkeypatch.setenv("TAILOR_PUBLIC_URL", "https://shop.example")
        monkeypatch.setenv("TAILOR_AUTH_CONFIG", str(tmp_path / "auth.toml"))  # not here
        monkeypatch.setenv("tailor_host", "0.0.0.0")
        server = _Server(tmp_path, demo_bundle, timeout=120)
        server.stop()


def test_the_backtests_server_does_not_take_the_production_servers_delivery_settings(
        tmp_path, monkeypatch, demo_bundle):
    # a production environment with a plain SMTP relay on the LAN and --insecure: the loopback
    # server (INSECURE not inherited) exited 2 on the relay, as it would on a webhook URL
    # without its keyring or a DKIM key that is not on this host; it sends no messages
    from training.backtest import _Server

    monkeypatch.setenv("TAILOR_SMTP_HOST", "10.1.2.3")
    monkeypatch.setenv("TAILOR_SMTP_SECURITY", "none")
    monkeypatch.setenv("TAILOR_SMTP_PASSWORD", "relay-secret")
    monkeypatch.setenv("TAILOR_INSECURE", "1")
    monkeypatch.setenv("TAILOR_SMS_WEBHOOK_URL", "https://sms.example/send")
    monkeypatch.setenv("tailor_dkim_key_file", str(tmp_path / "dkim.pem"))   # not here
    monkeypatch.setenv("TAILOR_DKIM_SELECTOR", "s1")
    monkeypatch.setenv("TAILOR_DKIM_DOMAIN", "shop.example")
    server = _Server(tmp_path, demo_bundle, timeout=120)
    server.stop()


def test_every_delivery_setting_is_left_out_of_the_backtests_server():
    from server.config import Settings
    from training.backtest import NOT_INHERITED

    delivery = {f"TAILOR_{name.upper()}" for name in Settings.model_fields
                if name.startswith(("smtp_", "dkim_")) or name.endswith("_webhook_url")}
    assert {"TAILOR_SMTP_HOST", "TAILOR_DKIM_KEY_FILE", "TAILOR_PUSH_WEBHOOK_URL"} <= delivery
    assert delivery <= NOT_INHERITED


def test_users_the_servers_api_cannot_name_are_left_out_not_a_traceback():
    # one user id over the server's 128 bytes (training reads any): RecommendBatch refused the
    # whole batch, and the backtest (and retrain's comparison) ended on a grpc traceback
    from training.backtest import backtest_split
    from training.pipeline import TrainConfig

    long_id = "x" * 200
    inter = make_interactions([("a", "x", 10), ("a", "y", 20), (long_id, "x", 15),
                               (long_id, "y", 25), ("b", "x", 12), ("b", "z", 30)])
    *_, users, unaskable = backtest_split(inter, TrainConfig(), test_frac=0.5)
    assert inter.user_ids[users].tolist() == ["a", "b"] and unaskable == 1


def test_an_entry_the_server_refuses_is_one_miss_not_the_run(tmp_path, demo_bundle, caplog):
    # one entry the server refuses (an id it cannot name, a user its canary refuses) failed
    # the whole RecommendBatch, and the backtest (or retrain's comparison) with it
    from training.backtest import serve_recommendations

    with np.load(demo_bundle / "users.npz") as u, np.load(demo_bundle / "items.npz") as i:
        users, items = u["user_ids"][:2].tolist(), i["item_ids"].tolist()
    item_row = {iid: row for row, iid in enumerate(items)}
    with caplog.at_level("WARNING", logger="tailor.training.backtest"):
        recs, cold = serve_recommendations(tmp_path, demo_bundle,
                                           [users[0], "bad\x01id", users[1]], item_row)
    assert (recs[[0, 2]] >= 0).all() and (recs[1] == -1).all() and not cold.any()
    assert "1 of 3 users got no answer (INVALID_ARGUMENT: 1)" in caplog.text
    assert "bad" not in caplog.text


def test_an_ease_baseline_too_large_for_the_machine_is_refused_before_training(monkeypatch):
    """EASE holds dense n_items x n_items matrices (34 bytes a pair at its peak): on a 30,000-item
    demo world (6 GB address space) the backtest trained and served, then died of a MemoryError
    in EASE, its report lost; a 1M-item catalog needs 34 TB. Refused before training, naming
    the estimate and --no-baselines."""
    from training.backtest import run_backtest
    from training.ease import check_fits, fit_bytes
    from training.pipeline import TrainConfig

    def trained(*_a, **_k):
        raise AssertionError("trained before the EASE baseline was checked")
    monkeypatch.setattr("training.pipeline.train", trained)
    rows = [(f"u{u}", f"i{i}", 100 * u + i) for u in range(4) for i in range(3)]
    inter = make_interactions(rows, [f"i{i}" for i in range(1_000_000)])
    with pytest.raises(ValueError, match=r"EASE baseline on 1,000,000 items needs about "
                                         r"34,000\.0 GB .*--no-baselines"):
        run_backtest(inter, None, TrainConfig(), test_frac=0.5)
    assert fit_bytes(4000) == 34 * 4000 ** 2
    check_fits(4000)   # 0.5 GB: fits any machine that runs these tests


def test_the_report_sets_served_against_offline_not_against_another_hold_out():
    """The last line set the bundle's manifest NDCG@10 (its own hold-out inside the rows before
    the split) beside the served one as if one measured the other (demo world: 0.1308 against
    0.1194, where the same bundle offline on the same rows scored 0.1203): the served figure is
    compared with the offline one, in SE, and the manifest's says which rows it is from."""
    from training.backtest import format_backtest

    cols = dict.fromkeys(("recall@10", "map@10", "mrr@10", "coverage", "seen_share",
                          "cold_share", "ndcg@10_new"), 0.0)
    report = {"methods": {"tailor (served)": {**cols, "ndcg@10": 0.1194, "ndcg@10_se": 0.0042},
                          "tailor (offline)": {**cols, "ndcg@10": 0.1203, "ndcg@10_se": 0.0042}},
              "served_vs_offline": {"ndcg@10": -0.0009, "se": 0.0042},
              "manifest": {"metrics": {"model": {"ndcg@10": 0.1308}, "n_eval_users": 1980}},
              "split": {"users_scored": 1997, "users_unknown": 0, "rows_before": 50595,
                        "rows_after": 11732}}
    text = format_backtest(report)
    assert "ndcg@10 0.1194 vs 0.1203, -0.2 SE" in text
    assert "0.1308 on 1980 users: its own hold-out" in text and "not these rows" in text


def test_the_ease_check_counts_the_address_space_limit_not_only_the_machine():
    """Under `ulimit -v` 4 GB on a 25 GB machine, check_fits passed a 12,000-item catalog (4.9 GB
    estimated) whose fit then died 'Unable to allocate 1.07 GiB' (after the training and the
    served run, in a backtest). The limit the process runs under is the one counted."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
    code = "from training.ease import check_fits; check_fits(12_000, 'backtest')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=120, preexec_fn=limited)
    assert proc.returncode != 0
    assert "12,000 items needs about 4.9 GB" in proc.stderr, proc.stderr[-2000:]
    assert "the address-space limit's (ulimit -v) 4.3 GB" in proc.stderr, proc.stderr[-2000:]


def test_served_against_offline_is_in_the_se_of_the_paired_difference():
    """The report divided the served-offline gap by the served figure's own SE, though both are
    scored on the same users: on the demo world '-0.7 SE' where the per-user difference's SE
    made it -1.9 (0.0017 against 0.0048), a systematic serving loss read as noise. The gap is
    in the paired SE."""
    from training.backtest import format_backtest, paired_gap, score

    rng = np.random.default_rng(0)
    n = 2000
    test = (np.arange(n + 1, dtype=np.int64), np.zeros(n, np.int64))  # item 0 later, for all
    served = np.tile(np.arange(1, 11), (n, 1))
    hit = rng.random(n) < 0.5
    served[hit, rng.integers(0, 10, hit.sum())] = 0   # half the users find it, at any rank
    offline = served.copy()
    worse = hit & (rng.random(n) < 0.1) & (served[:, 0] != 0)
    offline[worse] = np.roll(served[worse], -1, axis=1)  # a tenth of them one rank higher
    users = np.arange(n)
    seen = (np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    a, b = (score(r, users, test, seen, 11) for r in (served, offline))
    versus = paired_gap(served, offline, users, test)
    assert versus["ndcg@10"] == pytest.approx(a["ndcg@10"] - b["ndcg@10"])
    assert versus["se"] < a["ndcg@10_se"] / 4
    cols = dict.fromkeys(("recall@10", "map@10", "mrr@10", "coverage", "seen_share",
                          "cold_share", "ndcg@10_new", "ndcg@10_se"), 0.0)
    report = {"methods": {"tailor (served)": {**cols, **a}, "tailor (offline)": {**cols, **b}},
              "served_vs_offline": versus, "manifest": {"metrics": {}},
              "split": {"users_scored": n, "users_unknown": 0, "rows_before": 1,
                        "rows_after": 1}}
    gap = versus["ndcg@10"] / versus["se"]
    assert f", {gap:+.1f} SE (the SE of the per-user difference" in format_backtest(report)


def test_relative_paths_name_the_callers_directory_not_the_servers(tmp_path, monkeypatch,
                                                                    demo_bundle):
    # `retrain --serving-bundle bundles/v` (or a relative --work-dir): the loopback server runs
    # from the repo root, where the path named nothing; retrain exported and trained, then
    # failed "bundle rejected: manifest.json: missing"
    from training.backtest import _Server

    shutil.copytree(demo_bundle, tmp_path / "bundles" / demo_bundle.name)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    server = _Server(Path("data"), Path("bundles") / demo_bundle.name, timeout=120)
    server.stop()
