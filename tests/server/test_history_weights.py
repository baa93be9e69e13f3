"""Live histories follow the weights and half-life in the served bundle's manifest, and profiles
stored before the feature layout kept per-type amounts (version 1) stay readable."""
import json
import time
from pathlib import Path

import grpc
import lmdb
import numpy as np
import pytest
import pytest_asyncio

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.store.keys import FEATURES_SUFFIX, layout_key
from tests.conftest import train_bundle

DAY = 86400.0
# Written by the server before this change (layout version 1) from these events at
# T0 = 1.7e9 s: view "1", purchase "2" (30.0), rating "3" (4.0), add_to_cart "1", view "4",
# 100 s apart. Version 1 summed the default weights per item: 1 + 4, 8, 1 (the rating value
# was ignored), 1.
V1_RECORD = Path(__file__).parent / "data" / "profile_state_v1.bin"
V1_WEIGHTS = {"1": 5.0, "2": 8.0, "3": 1.0, "4": 1.0}
V1_TS = {"1": 1.7e9 + 300, "2": 1.7e9 + 100, "3": 1.7e9 + 200, "4": 1.7e9 + 400}
BUNDLE_WEIGHTS = {"view": 1.5, "purchase": 20.0, "rating": 3.0}
HALF_LIFE_DAYS = 5.0


@pytest.fixture(scope="module")
def reweighted_bundle(demo_data, tmp_path_factory) -> Path:
    weights = [f"--event-weight={k}={v}" for k, v in BUNDLE_WEIGHTS.items()]
    return train_bundle(tmp_path_factory.mktemp("reweighted"), demo_data, "--factors", "16",
                        "--half-life-days", str(HALF_LIFE_DAYS), "--no-ranker", *weights)


@pytest_asyncio.fixture
async def server(tmp_path, reweighted_bundle):
    from server.app import TailorServer
    from server.config import Settings
    settings = Settings(port=0, data_dir=tmp_path / "data", bundle=reweighted_bundle,
                        grace_seconds=1.0, lmdb_sync=False, bundle_poll_seconds=0.1,
                        secrets_dir=tmp_path / "secrets")
    # A data dir of that time: the record under the raw id (key version 1, re-keyed and
    # encrypted at open), in layout 1 of the `profile_state` kind (it predates the appended
    # event types too), stamped so opening it migrates the record.
    settings.store_dir.mkdir(parents=True)
    env = lmdb.open(str(settings.store_dir), max_dbs=16)
    with env.begin(write=True) as txn:
        txn.put(b"legacy" + FEATURES_SUFFIX, V1_RECORD.read_bytes(), db=env.open_db(b"profiles", txn=txn))
        txn.put(layout_key("profile_state"), b"1", db=env.open_db(b"meta", txn=txn))
    env.close()
    tailor = TailorServer(settings)
    await tailor.start()
    yield tailor
    await tailor.stop(grace=0.5)


def test_the_bundle_records_the_weights_it_was_trained_with(reweighted_bundle):
    history = json.loads((reweighted_bundle / "manifest.json").read_text())["history"]
    assert history["half_life_days"] == HALF_LIFE_DAYS
    assert {k: history["event_weights"][k] for k in BUNDLE_WEIGHTS} == BUNDLE_WEIGHTS


async def track(server, events) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await pb_grpc.ProfileServiceStub(channel).TrackEvents(pb.TrackEventsRequest(
            events=[pb.Event(event_id=e, user_id=u, type=t, item_id=i, timestamp=ts, value=v)
                    for e, u, t, i, ts, v in events]))
    assert reply.accepted == len(events), reply.rejected


async def test_stored_profiles_stay_readable_and_live_items_take_the_bundle_weights(server):
    now = time.time()
    await track(server, [("n1", "legacy", "purchase", "5", now - 300, 30.0),
                         ("n2", "legacy", "rating", "6", now - 200, 2.0),
                         ("n3", "legacy", "view", "1", now - 100, 0.0)])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        profile = await pb_grpc.ProfileServiceStub(channel).GetProfile(
            pb.GetProfileRequest(user_id="legacy"))
    assert profile.features.counts["purchase/web"] == 2.0  # one stored, one new
    raw = {**V1_WEIGHTS, "5": 20.0, "6": 2.0 * 3.0, "1": V1_WEIGHTS["1"] + 1.5}
    ts = {**V1_TS, "5": now - 300, "6": now - 200, "1": now - 100}
    got = {r.item_id: (r.weight, r.timestamp) for r in profile.recent_items}
    assert set(got) == set(raw)
    t_last = max(ts.values())
    for item, weight in raw.items():
        decay = 2.0 ** (-(t_last - ts[item]) / (HALF_LIFE_DAYS * DAY))
        assert got[item][0] == pytest.approx(weight * decay, rel=1e-6), item
        assert got[item][1] == pytest.approx(ts[item])


async def test_the_encoder_history_uses_the_bundle_weights(server):
    now = time.time()
    # Both events inside the session (so the background cap leaves them alone): each weighs
    # w * (2^(-age/half-life) + 2^(-age/long half-life)), age against `now` (profiles.history).
    await track(server, [("h1", "fresh", "purchase", "7", now - 60, 10.0),
                         ("h2", "fresh", "rating", "8", now, 4.0)])
    bundle = server.registry.active
    (rows, weights), = server.profiles.history_of(bundle, ["fresh"], now=now)
    assert bundle.items["item_ids"][rows].tolist() == ["7", "8"]
    long_s = server.settings.history_long_half_life_days * DAY
    decay = 2.0 ** (-60 / (HALF_LIFE_DAYS * DAY)) + 2.0 ** (-60 / long_s)
    np.testing.assert_allclose(weights, [20.0 * decay, 4.0 * 3.0 * 2.0], rtol=1e-5)
