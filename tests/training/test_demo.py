import hashlib
from datetime import UTC

import numpy as np
import pyarrow.csv as pacsv

from training.demo import CATEGORIES, DemoConfig
from training.demo_files import write_demo
from training.events import EVENTS

TINY = DemoConfig(n_users=400, n_items=300, n_days=14, seed=3, chunk_users=150)


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    write_demo(tmp_path / "a", TINY)
    write_demo(tmp_path / "b", TINY)
    write_demo(tmp_path / "c", DemoConfig(**{**TINY.__dict__, "seed": 4}))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    a, c = _digest(tmp_path / "a"), _digest(tmp_path / "c")
    assert a["interactions.csv"] != c["interactions.csv"]


def test_defaults_meet_documented_minimums():
    cfg = DemoConfig()
    assert cfg.n_items >= 5_000 and cfg.n_users >= 50_000 and cfg.n_days >= 60
    assert len(CATEGORIES) >= 12


def test_world_has_funnels_skew_and_ground_truth(world_dir):
    rows = pacsv.read_csv(world_dir / "interactions.csv").to_pydict()
    events = np.array(rows["event"])
    counts = {e: int((events == e).sum()) for e in EVENTS[:7]}
    assert all(counts[e] > 0 for e in EVENTS[:7]), counts
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"]
    assert counts["email_sent"] > counts["email_open"] > counts["email_click"]
    value = np.array(rows["value"])
    assert (value[events == "purchase"] > 0).all() and (value[events == "view"] == 0).all()
    per_item = np.sort(np.bincount(np.array(rows["item_id"])))[::-1]
    assert per_item[: len(per_item) // 10].sum() > 0.3 * per_item.sum()   # popularity skew
    hours = (np.array(rows["timestamp"]) % 86_400) // 3_600
    by_hour = np.bincount(hours, minlength=24)
    assert by_hour[18:22].sum() > 3 * by_hour[1:5].sum()                   # evening peak
    ts = np.array(rows["timestamp"])
    assert (ts.max() - ts.min()) / 86_400 > 25
    gt = np.load(world_dir / "ground_truth.npz")
    assert gt["item_vec"].shape[0] == gt["item_category"].shape[0]
    assert gt["user_taste"].shape[0] == len(set(rows["user_id"]))


def test_events_per_user_makes_long_histories(tmp_path):
    from training.cli import main

    main(["demo-data", "--out", str(tmp_path / "long"), "--users", "600", "--items", "300",
          "--events-per-user", "120"])
    users = pacsv.read_csv(tmp_path / "long" / "interactions.csv")["user_id"].to_numpy()
    per_user = np.bincount(users)
    assert 108 <= per_user.mean() <= 132 and np.median(per_user) >= 60


def test_end_date_sets_the_last_day(tmp_path):
    from datetime import datetime

    from training.cli import main

    main(["demo-data", "--out", str(tmp_path / "w"), "--users", "300", "--items", "100",
          "--days", "20", "--end", "2026-11-30"])
    ts = pacsv.read_csv(tmp_path / "w" / "interactions.csv")["timestamp"].to_numpy()
    end = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    # sessions start before the end; a late session's funnel may spill over by minutes
    assert end - 86_400 <= ts.max() < end + 3_600 and ts.min() >= end - 21 * 86_400
    assert ts.min() < end - 18 * 86_400


def test_contact_truth_is_an_extra_file_that_changes_nothing_else(tmp_path):
    write_demo(tmp_path / "plain", TINY)
    info = write_demo(tmp_path / "contact", TINY, contact=True)
    plain, contact = _digest(tmp_path / "plain"), _digest(tmp_path / "contact")
    assert set(contact) - set(plain) == {"contact_truth.npz"}
    assert all(contact[name] == digest for name, digest in plain.items())
    truth = np.load(info["contact_truth"])
    assert truth["tz_offset_min"].shape == (TINY.n_users,)
    assert truth["channel_rate"].shape == (TINY.n_users, 3)
    assert ((truth["preferred_hour"] >= 0) & (truth["preferred_hour"] < 24)).all()
    best = truth["channel_rate"].argmax(axis=1)
    assert (best == truth["preferred_channel"]).mean() > 0.9  # the boost makes it the best


def test_a_run_stopped_midway_leaves_no_interactions_file(tmp_path, monkeypatch):
    # interactions.csv was written in place chunk by chunk after items.csv: a bootstrap
    # killed in its second chunk left both files, and the next bootstrap trained on the first
    # chunk's users only (or failed for good on the cut last line)
    import pytest

    import training.demo_files as demo_files

    real = demo_files.user_events

    def stopped(cfg, world, chunk, *args):
        if chunk == 1:
            raise KeyboardInterrupt
        return real(cfg, world, chunk, *args)

    monkeypatch.setattr(demo_files, "user_events", stopped)
    cfg = DemoConfig(n_users=60, n_items=50, n_days=5, chunk_users=30)
    with pytest.raises(KeyboardInterrupt):
        write_demo(tmp_path / "demo", cfg)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == []
    monkeypatch.setattr(demo_files, "user_events", real)
    info = write_demo(tmp_path / "demo", cfg)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "ground_truth.npz", "interactions.csv", "items.csv"]
    assert info["interactions"] == str(tmp_path / "demo" / "interactions.csv")
    users = pacsv.read_csv(tmp_path / "demo" / "interactions.csv")["user_id"].to_pylist()
    assert max(users) >= 30   # the second chunk's users are there


def test_a_world_that_would_end_after_the_year_3000_is_refused(tmp_path):
    """`--days 400000` from the default start wrote a world whose later rows train refused
    ('32505094813 is after the year 3000 as unix seconds (269817 rows): milliseconds?'):
    refused before anything is written, naming --days."""
    from tests.conftest import run_module
    proc = run_module("training", "demo-data", "--out", str(tmp_path / "w"), "--users", "3",
                      "--items", "5", "--days", "400000", check=False)
    assert proc.returncode == 2 and "--days 400000" in proc.stderr and "year 3000" in proc.stderr
    assert not (tmp_path / "w").exists()
