"""Drift through a real server: PSI stays low for traffic like training's and rises above the
threshold when live histories concentrate in one category (issue 19).

The bundle is trained on a demo world that ends today: the server weighs histories against the
clock (`server.profiles.history`), so the training users of a world years old have histories
decayed far below training's weights, and their retrieval scores really have drifted.
"""
import asyncio
import json
import logging
import shutil
import time
from datetime import UTC, datetime

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from protos.tailor.v1 import model_admin_pb2 as admin_pb
from protos.tailor.v1 import model_admin_pb2_grpc as admin_grpc
from protos.tailor.v1 import profile_pb2 as prof_pb
from protos.tailor.v1 import profile_pb2_grpc as prof_grpc
from protos.tailor.v1 import recommendation_pb2 as rec_pb
from protos.tailor.v1 import recommendation_pb2_grpc as rec_grpc
from server.app import TailorServer
from server.config import Settings
from tests.conftest import SMALL_WORLD, run_module, train_bundle

THRESHOLD = 0.2


@pytest.fixture(scope="module")
def todays_bundle(tmp_path_factory):
    data = tmp_path_factory.mktemp("drift-data")
    today = datetime.now(UTC).date().isoformat()
    run_module("training", "demo-data", "--out", str(data), *SMALL_WORLD, "--end", today)
    return train_bundle(tmp_path_factory.mktemp("drift-bundles"), data, "--no-report")


@pytest.fixture
def settings(tmp_path, todays_bundle):
    # reports on demand only (no periodic check), PSI counted from 100 live values
    return Settings(port=0, data_dir=tmp_path / "data", bundle=todays_bundle, grace_seconds=1.0,
                    lmdb_sync=False, secrets_dir=tmp_path / "secrets", drift_min_count=100,
                    drift_check_seconds=3600.0, drift_psi_warning=THRESHOLD)


@pytest.fixture(scope="module")
def manifest(todays_bundle):
    return json.loads((todays_bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def catalog(todays_bundle):
    with np.load(todays_bundle / "users.npz") as npz:
        users = [str(u) for u in npz["user_ids"]]
    with np.load(todays_bundle / "items.npz") as npz:
        return {"users": users, "item_ids": [str(i) for i in npz["item_ids"]],
                "category": npz["category"].astype(int)}


async def _recommend(channel, user_ids, k=10):
    stub = rec_grpc.RecommendationServiceStub(channel)
    for start in range(0, len(user_ids), 50):
        batch = [rec_pb.RecommendRequest(user_id=u, k=k) for u in user_ids[start:start + 50]]
        await stub.RecommendBatch(rec_pb.RecommendBatchRequest(requests=batch))


async def _report(channel):
    return await admin_grpc.ModelAdminServiceStub(channel).GetDriftReport(
        admin_pb.GetDriftReportRequest())


def _psi(report) -> dict:
    return {f.name: round(f.psi, 4) for f in report.features}


async def test_traffic_like_trainings_stays_below_the_threshold(channel, catalog, manifest):
    assert manifest["drift"]["features"]  # the training job wrote a reference
    before = await _report(channel)
    assert before.status == "ok" and all(f.status == "no traffic" for f in before.features)
    users = list(np.random.default_rng(1).choice(catalog["users"], 400, replace=False))
    await _recommend(channel, users)
    report = await _report(channel)
    assert report.version == manifest["version"] and report.threshold == THRESHOLD
    counted = [f for f in report.features if f.status in ("ok", "drift")]
    assert {f.name for f in counted} >= {"history_len", "history_category",
                                         "recommendation_category", "retrieval_score"}
    assert report.status == "ok", _psi(report)
    assert all(f.psi < THRESHOLD for f in counted), _psi(report)
    hist_len = next(f for f in report.features if f.name == "history_len")
    assert hist_len.live_count == 400  # one value per warm user
    assert sum(hist_len.live_share) == pytest.approx(1.0)


async def test_one_category_histories_raise_psi_above_the_threshold(
        tailor_server, channel, catalog, caplog):
    caplog.set_level(logging.INFO, logger="tailor.drift")
    cat = int(np.bincount(catalog["category"]).argmax())
    items = [i for i, c in zip(catalog["item_ids"], catalog["category"]) if c == cat][:40]
    users = [f"drift-shifted-{n}" for n in range(300)]
    now = time.time()
    events = [prof_pb.Event(event_id=f"{u}-{j}", user_id=u, type="view", item_id=items[(n + j) % 40],
                            timestamp=now - 60 + j)
              for n, u in enumerate(users) for j in range(12)]
    profiles = prof_grpc.ProfileServiceStub(channel)
    for start in range(0, len(events), 500):
        reply = await profiles.TrackEvents(prof_pb.TrackEventsRequest(events=events[start:start + 500]))
        assert reply.accepted == len(events[start:start + 500])
    await _recommend(channel, users)
    report = await _report(channel)
    psi = {f.name: f for f in report.features}
    assert report.status == "drift", _psi(report)
    assert psi["history_category"].status == "drift" and psi["history_category"].psi > 1.0
    assert psi["history_category"].live_share[cat] == pytest.approx(1.0)
    assert psi["recommendation_category"].psi >= THRESHOLD, _psi(report)
    # the gauge holds the same figure; the warning names the feature, never a user
    gauge = REGISTRY.get_sample_value("tailor_drift_psi", {"version": report.version,
                                                            "feature": "history_category"})
    assert gauge == pytest.approx(psi["history_category"].psi)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("history_category" in m and report.version in m for m in warned), warned
    assert not any("drift-shifted" in r.getMessage() for r in caplog.records)
    # the CLI prints the same report
    out = await asyncio.to_thread(run_module, "clients", "model", "drift", "--server",
                                  f"127.0.0.1:{tailor_server.port}")
    printed = json.loads(out.stdout)
    assert printed["status"] == "drift" and printed["version"] == report.version


async def test_requests_filtered_to_categories_count_for_their_histories_only(
        channel, catalog, todays_bundle):
    """A category page's Recommend (`categories`) answers from those categories: its answers
    and candidates say what the filter asked for, not how the users drifted. Counted, the same
    users and bundle with a two-category filter read PSI 7.5 on recommendation_category and 3.0
    on retrieval_score (0.03 and 0.3 unfiltered): every feature of the model warned."""
    with np.load(todays_bundle / "items.npz") as npz:
        names = [str(c) for c in npz["category_names"]][:2]
    users = list(np.random.default_rng(2).choice(catalog["users"], 300, replace=False))
    stub = rec_grpc.RecommendationServiceStub(channel)
    for start in range(0, len(users), 50):
        await stub.RecommendBatch(rec_pb.RecommendBatchRequest(requests=[
            rec_pb.RecommendRequest(user_id=u, k=10, categories=names)
            for u in users[start:start + 50]]))
    rows = {f.name: f for f in (await _report(channel)).features}
    assert rows["history_len"].live_count == 300 and rows["history_category"].live_count > 300
    for name in ("recommendation_category", "retrieval_score", "ranker_score"):
        assert rows[name].live_count == 0 and rows[name].status == "no traffic", _psi(await _report(channel))
    await _recommend(channel, users[:50])  # the same users unfiltered: counted in full
    rows = {f.name: f for f in (await _report(channel)).features}
    assert rows["history_len"].live_count == 350 and rows["recommendation_category"].live_count == 500


@pytest.mark.parametrize("strip, enabled, status", [(True, True, "no reference"),
                                                    (False, False, "disabled")])
async def test_a_bundle_without_a_reference_still_serves_and_says_so(
        tmp_path, todays_bundle, catalog, strip, enabled, status):
    bundle = tmp_path / "bundles" / todays_bundle.name
    shutil.copytree(todays_bundle, bundle)
    if strip:  # a bundle written before drift references (the manifest lists no hash of itself)
        manifest = json.loads((bundle / "manifest.json").read_text())
        del manifest["drift"]
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", bundle=bundle,
                                   grace_seconds=1.0, lmdb_sync=False,
                                   secrets_dir=tmp_path / "secrets", drift_enabled=enabled))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await _recommend(channel, catalog["users"][:20])
            report = await _report(channel)
    finally:
        await server.stop(grace=0.5)
    assert report.status == status and not report.features
