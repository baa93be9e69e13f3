"""`python -m training retrain` against a real server: export, train, compare on the rows the
serving bundle never saw, and push as a canary only when not worse."""
import asyncio
import csv
import json
import shutil
import time

import numpy as np
import pytest

from clients import TailorClient
from tests.conftest import run_module, train_bundle

# Smaller than the shared demo world: every event is tracked, exported and trained on twice per
# test, and a few hundred users on each side of the cutoff are plenty to score NDCG@10 on.
RETRAIN_WORLD = ["--users", "600", "--items", "300", "--days", "30", "--seed", "7"]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo world these tests export and retrain on (shadows the shared, larger one)."""
    data = tmp_path_factory.mktemp("retrain-world")
    run_module("training", "demo-data", "--out", str(data), *RETRAIN_WORLD)
    return data


@pytest.fixture(scope="module")
def history(demo_data, tmp_path_factory):
    """The demo events moved so the newest is a day old (inside the server's retention), and a
    serving bundle trained on the events of the first 80% of that time (retrieval only: quick)."""
    root = tmp_path_factory.mktemp("retrain")
    with open(demo_data / "interactions.csv") as fh:
        rows = list(csv.DictReader(fh))
    ts = np.array([int(r["timestamp"]) for r in rows])
    shift = int(time.time()) - 86400 - int(ts.max())
    cut = int(np.quantile(ts, 0.8))
    early = root / "early"
    early.mkdir()
    shutil.copy(demo_data / "items.csv", early / "items.csv")
    with open(early / "interactions.csv", "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows({**r, "timestamp": int(r["timestamp"]) + shift} for r in rows
                      if int(r["timestamp"]) < cut)
    events = [{"event_id": f"e{i}", "user_id": r["user_id"], "item_id": r["item_id"],
               "type": r["event"], "value": float(r["value"] or 0),
               "timestamp": int(r["timestamp"]) + shift} for i, r in enumerate(rows)]
    return train_bundle(root / "bundles", early, "--no-ranker"), events


@pytest.fixture
def settings(tmp_path, history):
    """The shared fixture's settings, serving the early bundle (and not training another)."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", bundle=history[0], grace_seconds=1.0,
                    lmdb_sync=False, bundle_poll_seconds=0.1, secrets_dir=tmp_path / "secrets")


def _report(stdout: str) -> dict:
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])[0]


async def _retrain(tailor_server, history, demo_data, tmp_path, *options, events=None):
    """`retrain` once the server holds `events` (default: all of `history`'s)."""
    target = f"127.0.0.1:{tailor_server.port}"
    events = history[1] if events is None else events

    def flow():
        with TailorClient(target, timeout=120) as client:
            assert client.track(events).accepted == len(events)
        return run_module("training", "retrain", "--server", target, "--work-dir",
                          str(tmp_path / "loop"), "--serving-bundle", str(history[0]),
                          "--items", str(demo_data / "items.csv"), *options, check=False)
    return await asyncio.to_thread(flow)


pytestmark = pytest.mark.timeout(900)  # two trainings and two servers on a shared machine


async def test_retrain_refuses_a_worse_bundle(tailor_server, history, demo_data, tmp_path):
    proc = await _retrain(tailor_server, history, demo_data, tmp_path,
                          "--factors", "2", "--iterations", "1", "--no-ranker")
    assert proc.returncode == 3, proc.stderr[-2000:]
    report = _report(proc.stdout)
    assert report["rows_after"] > 0 and report["users_scored"] > 100
    assert report["candidate"]["ndcg@10"] < report["serving"]["ndcg@10"]
    assert "refused" in proc.stderr
    status = tailor_server.registry
    assert status.canary is None and status.available_versions() == [history[0].name]


async def test_retrain_pushes_a_bundle_no_worse_as_a_canary(tailor_server, history, demo_data,
                                                            tmp_path):
    # the serving bundle's own options on the same rows: the same model up to thread timing
    proc = await _retrain(tailor_server, history, demo_data, tmp_path, "--no-ranker",
                          "--tolerance", "0.01", "--canary", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = _report(proc.stdout)
    assert abs(report["candidate"]["ndcg@10"] - report["serving"]["ndcg@10"]) < 0.01
    canary = tailor_server.registry.canary
    assert canary is not None and canary.split.share == pytest.approx(0.10)
    assert canary.bundle.version != history[0].name


def _cutoff(bundle) -> int:
    return json.loads((bundle / "manifest.json").read_text())["data"]["cutoff"]


@pytest.mark.parametrize("side", ["after", "before"])
async def test_retrain_with_events_on_one_side_of_the_cutoff_only_says_what_to_do(
        tailor_server, history, demo_data, tmp_path, side):
    """A serving bundle trained on files never tracked into the server (the demo world's, as
    after `make serve` or `demo-data` + `train` + `push`), then today's events tracked: before,
    the run ended 'no events on both sides of the serving bundle's cutoff 1702598959: 0 before,
    14682 after; nothing to compare on', saying neither why nor what to do. The same when the
    server holds only what the bundle was trained on. Nothing is trained, nothing pushed."""
    cutoff = _cutoff(history[0])
    events = [e for e in history[1] if (e["timestamp"] > cutoff) == (side == "after")]
    proc = await _retrain(tailor_server, history, demo_data, tmp_path, "--no-ranker",
                          events=events)
    assert proc.returncode == 1, proc.stderr[-2000:]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cutoff + 1))
    if side == "after":
        assert f"holds 0 weighted events before the serving bundle's data cutoff ({when}) and " \
               f"{len(events)} after it" in proc.stderr
        assert "Track them first (`python -m clients track`" in proc.stderr
    else:
        assert f"before the serving bundle's data cutoff ({when}) and none after it" in proc.stderr
        assert "Track new events" in proc.stderr
    assert "bundle written" not in proc.stderr and tailor_server.registry.canary is None
