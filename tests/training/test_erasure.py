"""Training without erased users: `training export` hands over tombstones (keyed hashes and
times, never ids), `train` drops the erased users' rows from before their erasure."""
import asyncio
import csv
import json
import os
import time

import numpy as np
import pytest

from clients import TailorClient
from contract.erasure import digest, read_tombstones
from tests.conftest import run_module
from training.erasure import drop_erased
from training.readers import read_interactions


def _rows(path, rows):
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["user_id", "item_id", "timestamp", "event", "value"])
        out.writerows(rows)


def test_rows_before_the_erasure_go_and_new_activity_stays(tmp_path):
    key = b"k" * 32
    _rows(tmp_path / "i.csv", [["gone", "a", 100, "view", 0], ["gone", "b", 200, "click", 0],
                               ["gone", "c", 300, "view", 0], ["stays", "a", 150, "view", 0]])
    rows = read_interactions(tmp_path / "i.csv")
    tombs = {("k1", digest(key, "gone")): 250.0}
    kept, dropped = drop_erased(rows, tombs, [("k0", b"x" * 32), ("k1", key)])
    assert dropped == 2
    assert list(zip(kept["user_id"].to_pylist(), kept["item_id"].to_pylist(),
                    kept["timestamp"].tolist())) == [("gone", "c", 300), ("stays", "a", 150)]
    # Under another key (or none) nothing matches: the list alone does not name anyone.
    assert drop_erased(rows, tombs, [("k1", b"y" * 32)])[1] == 0


@pytest.fixture
def settings(settings, tmp_path):
    settings.secrets_dir = tmp_path / "secrets"
    return settings


async def test_export_hands_tombstones_to_training_which_drops_the_erased_user(
        tailor_server, settings, demo_data, tmp_path):
    items = [r["id"] for r in csv.DictReader(open(demo_data / "items.csv"))][:60]
    target = f"127.0.0.1:{tailor_server.port}"
    events = [{"event_id": f"t-{i}", "user_id": f"user-{i % 30}", "type": "click",
               "item_id": items[i % len(items)], "timestamp": time.time() - 86400 + i} for i in range(1500)]
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(settings.secrets_dir)}

    def flow():
        with TailorClient(target, timeout=60) as client:
            client.track(events)
            run_module("training", "export", "--server", target, "--out", str(tmp_path / "old.csv"))
            client.delete_profile("user-7")
        run_module("training", "export", "--server", target, "--out", str(tmp_path / "new" / "i.csv"))
        # An old export (taken before the erasure) with the newer tombstones: user-7 goes.
        return run_module("training", "train", "--interactions", str(tmp_path / "old.csv"),
                          "--tombstones", str(tmp_path / "new" / "tombstones.csv"),
                          "--items", str(demo_data / "items.csv"), "--out", str(tmp_path / "b"),
                          "--iterations", "2", "--no-ranker", env=env)
    proc = await asyncio.to_thread(flow)
    tomb_file = tmp_path / "new" / "tombstones.csv"
    assert b"user-7" not in tomb_file.read_bytes() and len(read_tombstones(tomb_file)) == 1
    assert "user-7," not in (tmp_path / "new" / "i.csv").read_text()
    assert "user-7," in (tmp_path / "old.csv").read_text()
    assert "50 rows dropped" in proc.stdout
    (bundle,) = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]   # beside it: report.html
    with np.load(bundle / "users.npz") as npz:
        users = set(npz["user_ids"].tolist())
    assert "user-7" not in users and {"user-6", "user-8"} <= users


async def test_a_user_erased_while_the_export_streams_is_in_its_tombstones(
        tailor_server, settings, demo_data, tmp_path, monkeypatch):
    """`training export` wrote tombstones.csv first, then streamed the events: a user erased
    while the events streamed had rows in interactions.csv (read before the erasure) and no
    tombstone beside them, so `train` kept them (and the bundle it made held the erased
    user). The tombstones are read last: every erasure before that point is in the file, and
    train drops the rows of any user it names from before their erasure."""
    import training.progress
    from training.cli import main

    items = [r["id"] for r in csv.DictReader(open(demo_data / "items.csv"))][:60]
    target = f"127.0.0.1:{tailor_server.port}"
    events = [{"event_id": f"s-{i}", "user_id": f"user-{i % 30}", "type": "click",
               "item_id": items[i % len(items)], "timestamp": time.time() - 86400 + i}
              for i in range(1500)]
    real, erased = training.progress.progress, []

    def erasing(iterable, **kw):  # the export's first event read: its user is erased then
        it = iter(iterable)
        if kw.get("desc") == "export":
            first = next(it)
            with TailorClient(target, timeout=60) as client:
                client.delete_profile(first.user_id)
            erased.append(first.user_id)
            yield first
        yield from real(it, **kw)
    monkeypatch.setattr(training.progress, "progress", erasing)

    def flow():
        with TailorClient(target, timeout=60) as client:
            client.track(events)
        return main(["export", "--server", target, "--out", str(tmp_path / "i.csv")])
    assert await asyncio.to_thread(flow) == 0
    (gone,) = erased
    assert f"{gone}," in (tmp_path / "i.csv").read_text()  # streamed before the erasure
    key = tailor_server.secrets["erasure"].key
    tombs = read_tombstones(tmp_path / "tombstones.csv")
    assert [d for (_, d) in tombs] == [digest(key, gone)]


def test_tombstones_under_a_key_the_keyring_lacks_stop_training(tmp_path, monkeypatch, capsys):
    # a keyring without the key the tombstones were written under (another deployment's, a
    # wrong --secrets-dir) recognised no one: every erased user's rows were trained on, and the
    # run said "0 rows dropped" and exited 0
    import base64

    from contract.erasure import write_tombstones
    from training.cli import main

    key = b"k" * 32
    _rows(tmp_path / "i.csv", [["gone", "a", 100, "view", 0], ["gone", "b", 200, "click", 0],
                               ["stays", "a", 150, "view", 0], ["stays", "b", 160, "view", 0]])
    write_tombstones(tmp_path / "tombstones.csv", [("k1", digest(key, "gone"), 250.0)])
    argv = ["train", "--interactions", str(tmp_path / "i.csv"), "--out", str(tmp_path / "b"),
            "--no-ranker", "--no-report", "--factors", "4", "--iterations", "2"]
    other = base64.b64encode(b"o" * 32).decode()
    monkeypatch.setenv("TAILOR_SECRET_ERASURE", f"k2:{other}")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'k1'" in err and "erasure" in err, err
    assert not (tmp_path / "b").exists()
    monkeypatch.setenv("TAILOR_SECRET_ERASURE",
                       f"k2:{other},k1:{base64.b64encode(key).decode()}")
    assert main(argv) == 0
    assert "2 rows dropped" in capsys.readouterr().out


@pytest.fixture
def erased_export(world_dir, tmp_path):
    """The small world's export with tombstones beside it for users 0..99 (erased after every
    row), the environment holding the erasure key, and the rows without those users."""
    import base64
    import shutil

    from contract.erasure import write_tombstones
    key = b"e" * 32
    shutil.copy(world_dir / "interactions.csv", tmp_path / "interactions.csv")
    write_tombstones(tmp_path / "tombstones.csv",
                     [("k1", digest(key, str(u)), 4e9) for u in range(100)])
    env = {**os.environ, "TAILOR_SECRET_ERASURE": f"k1:{base64.b64encode(key).decode()}"}
    with open(world_dir / "interactions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    _rows(tmp_path / "kept.csv", [r for r in rows[1:] if int(r[0]) >= 100])
    return tmp_path, env


def test_the_backtest_drops_the_erased_users_as_train_does(erased_export, world_dir):
    """`training backtest` read the export whole: the 100 erased users' rows were trained on,
    served and scored (2,500-user world: 100 more users scored, their rows in the split), where
    `train` on the same file drops them."""
    from training.backtest import backtest_split
    from training.pipeline import TrainConfig
    from training.readers import load

    tmp, env = erased_export
    out = tmp / "report.json"
    proc = run_module("training", "backtest", "--interactions", str(tmp / "interactions.csv"),
                      "--items", str(world_dir / "items.csv"), "--test-frac", "0.2",
                      "--factors", "8", "--iterations", "2", "--no-ranker", "--no-baselines",
                      "--json", str(out), env=env)
    assert "tombstones: 100 erased users" in proc.stdout
    before, after, _, _, users, _ = backtest_split(
        load(tmp / "kept.csv", world_dir / "items.csv")[0], TrainConfig(), test_frac=0.2)
    split = json.loads(out.read_text())["split"]
    assert (split["rows_before"], split["rows_after"], split["users_scored"]) == (
        len(before), len(after), len(users))


@pytest.mark.parametrize("command", [("training", "cold-items"), ("training.compare_als",)])
def test_the_experiments_drop_the_erased_users_as_train_does(erased_export, world_dir, command):
    tmp, env = erased_export
    proc = run_module(*command, "--interactions", str(tmp / "interactions.csv"),
                      "--items", str(world_dir / "items.csv"), env=env)
    assert "tombstones: 100 erased users" in proc.stdout and " 0 rows dropped" not in proc.stdout


def test_cold_items_on_an_export_whose_users_are_all_erased_says_nothing_is_left(tmp_path):
    """Every row dropped by the tombstones (or none of positive weight): cold-items died with
    numpy's 'a cannot be empty unless no samples are taken'; it now says what train says."""
    from training.cold_items import run_cold_items
    from training.readers import build

    _rows(tmp_path / "i.csv", [["u1", "a", 100, "email_sent", 0], ["u2", "b", 200, "email_sent", 0]])
    inter, catalog = build(read_interactions(tmp_path / "i.csv"))
    with pytest.raises(ValueError, match="no row has a positive event weight: 2 rows read"):
        run_cold_items(inter, catalog)
