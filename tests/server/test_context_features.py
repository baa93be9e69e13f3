"""Request-context ranker features in serving (issue 19): the request's channel and UTC daypart
reach the ranker of a bundle trained with ``--context-features``, and only of such a bundle."""
import json
import shutil

import numpy as np
import pytest
from scipy import stats

from kernels.context import CHANNELS, daypart
from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc
from server.models import BundleInvalid, load_bundle
from server.recommend import RecQuery
from server.recommend.handler import bundle_histories
from server.recommend.pipeline import recommend_batch
from server.recommend.user_cache import UserCache
from tests.conftest import run_module, train_bundle
from training.demo import CATEGORIES
from training.demo_tastes import ContextTastes

SEED, STRENGTH = 7, 2.0
TASTES_WORLD = ["--users", "2500", "--items", "200", "--days", "30", "--seed", str(SEED),
                "--context-tastes", str(STRENGTH)]
# small and fast; the ranker must still beat retrieval on its validation users or training
# drops it
FAST = ["--factors", "16", "--candidates", "50", "--ranker-users", "6000", "--eval-users", "3000",
        "--drift-users", "200", "--no-report", "--context-features"]
MONDAY_9H, SATURDAY_21H = 1_701_680_400, 1_702_155_600  # 2023-12-04 09:00, 2023-12-09 21:00 UTC


@pytest.fixture(scope="session")
def tastes_bundle(tmp_path_factory):
    data = tmp_path_factory.mktemp("tastes-data")
    run_module("training", "demo-data", "--out", str(data), *TASTES_WORLD)
    return train_bundle(tmp_path_factory.mktemp("tastes-bundles"), data, *FAST)


@pytest.fixture(scope="session")
def tastes(tastes_bundle):
    """The world's channel tilt per category code of the bundle (web, app)."""
    names = load_bundle(tastes_bundle).items["category_names"].tolist()
    world = ContextTastes(SEED, len(CATEGORIES), STRENGTH)
    return world.channel[:, [CATEGORIES.index(n) for n in names]]


@pytest.fixture
def settings(settings, tastes_bundle):
    return settings.model_copy(update={"bundle": tastes_bundle})


def _users(bundle, n=60):
    lengths = np.diff(bundle.users["indptr"])
    return bundle.users["user_ids"][np.argsort(-lengths, kind="stable")[:n]].astype(str).tolist()


def _rows(bundle, user, channel="", now=MONDAY_9H, cache=None):
    q = RecQuery(user, 10, channel=channel)
    return recommend_batch(bundle, [q], bundle_histories, now=now, cache=cache)[0].rows.tolist()


def test_the_bundle_lists_the_context_features_and_carries_their_tables(tastes_bundle):
    manifest = json.loads((tastes_bundle / "manifest.json").read_text())
    assert manifest["ranker"]["features"][-2:] == ["channel_lift", "daypart_lift"]
    assert manifest["context"]["file"] in manifest["files"]
    bundle = load_bundle(tastes_bundle)
    assert bundle.context.channel_lift.shape == (len(CHANNELS), len(bundle.category_code))


def test_the_fitted_channel_lift_follows_the_worlds_tastes(tastes_bundle, tastes):
    lift = load_bundle(tastes_bundle).context.channel_lift
    # web minus app: the world's tilt difference and the fitted lift difference agree in sign
    fitted, truth = lift[0] - lift[1], tastes[0] - tastes[1]
    assert np.corrcoef(fitted, truth)[0, 1] > 0.8


def test_channel_changes_the_order_towards_that_channels_categories(tastes_bundle, tastes):
    bundle = load_bundle(tastes_bundle)
    cat, tilt = bundle.item_category, tastes[0] - tastes[1]  # > 0: the world favours it on web
    changed, shift = 0, []
    for user in _users(bundle, 200):
        web, app = _rows(bundle, user, "web"), _rows(bundle, user, "app")
        changed += web != app
        shift.append(tilt[cat[web]].mean() - tilt[cat[app]].mean())
    # same categories in another order: a difference of rounding only (either sign), no shift
    shift = np.where(np.abs(shift) < 1e-9, 0.0, shift)
    assert changed >= 50
    # a channel the ranker ignored, or read backwards, would move as many users away from the
    # channel's categories as towards them: a one-sided sign test (a fixed ratio of the two was
    # too tight for a ranker trained on another CPU's floating point: 42 against 9 here)
    toward, away = int((shift > 0).sum()), int((shift < 0).sum())
    assert toward >= 20, (toward, away)
    assert stats.binomtest(toward, toward + away, alternative="greater").pvalue < 1e-3, (toward, away)


def test_the_hour_of_week_changes_the_order(tastes_bundle):
    bundle = load_bundle(tastes_bundle)
    assert daypart(MONDAY_9H) != daypart(SATURDAY_21H)
    changed = sum(_rows(bundle, u, "web", MONDAY_9H) != _rows(bundle, u, "web", SATURDAY_21H)
                  for u in _users(bundle, 30))
    assert changed >= 10


def test_the_user_cache_never_serves_one_contexts_ranking_to_another(tastes_bundle):
    bundle, cache = load_bundle(tastes_bundle), UserCache(100)
    for user in _users(bundle, 20):
        for channel, now in (("web", MONDAY_9H), ("app", MONDAY_9H), ("app", SATURDAY_21H),
                             ("web", MONDAY_9H)):
            assert _rows(bundle, user, channel, now, cache) == _rows(bundle, user, channel, now)


def test_a_bundle_without_context_features_ignores_channel_and_hour(demo_bundle):
    bundle, cache = load_bundle(demo_bundle), UserCache(100)
    assert bundle.context is None
    user = _users(bundle, 1)[0]
    first = _rows(bundle, user, "web", MONDAY_9H, cache)
    entry = cache.lookup(bundle, [user], *_hist(bundle, user))[0]
    rows, scores, ctx = entry.ranked
    assert ctx is None and entry.scores_for(rows) is scores  # cached without a context key
    for channel, now in (("app", MONDAY_9H), ("email", SATURDAY_21H), ("", SATURDAY_21H)):
        assert _rows(bundle, user, channel, now) == first


def _hist(bundle, user):
    from server.recommend.pipeline import _history_arrays
    return _history_arrays(bundle, bundle_histories(bundle, [user]))


async def test_served_recommend_follows_the_requests_channel(channel, tastes_bundle):
    bundle = load_bundle(tastes_bundle)
    stub = pb_grpc.RecommendationServiceStub(channel)
    users = _users(bundle, 30)
    changed = 0
    for user in users:  # twice per channel: the second answers come through the user cache
        replies = [await stub.Recommend(pb.RecommendRequest(user_id=user, k=10, channel=c))
                   for c in ("web", "app", "web", "app")]
        ids = [[i.item_id for i in r.items] for r in replies]
        assert ids[0] == ids[2] and ids[1] == ids[3]
        changed += ids[0] != ids[1]
    assert changed >= 8


@pytest.fixture
def no_context_file(tastes_bundle, tmp_path):
    dst = tmp_path / tastes_bundle.name
    shutil.copytree(tastes_bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    del manifest["context"]
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_a_ranker_reading_context_without_its_tables_is_refused(no_context_file):
    with pytest.raises(BundleInvalid, match="context"):
        load_bundle(no_context_file)


def test_context_tables_that_do_not_fit_the_catalog_are_refused(tastes_bundle, tmp_path):
    import hashlib
    dst = tmp_path / tastes_bundle.name
    shutil.copytree(tastes_bundle, dst)
    np.savez(dst / "context.npz", channel_lift=np.zeros((3, 2), np.float32),
             daypart_lift=np.zeros((8, 2), np.float32))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["context.npz"] = hashlib.sha256((dst / "context.npz").read_bytes()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleInvalid, match="channel_lift"):
        load_bundle(dst)


def test_cached_scores_are_kept_with_their_context_key():
    from server.recommend.user_cache import CachedUser
    entry = CachedUser(np.zeros(3, np.int64), np.ones(3, np.float32), np.zeros(4, np.float32))
    rows, scores = np.array([4, 2, 9]), np.array([0.3, 0.2, 0.1], np.float32)
    entry.keep_scores(rows, scores, (0, 1))
    assert entry.scores_for(rows, (0, 1)) is scores
    assert entry.scores_for(rows, (1, 1)) is None and entry.scores_for(rows, None) is None
    entry.keep_scores(rows, scores)  # a bundle without context features: key None
    assert entry.scores_for(rows) is scores


async def test_served_recommend_of_a_bundle_without_context_ignores_the_channel(settings,
                                                                               demo_bundle):
    import grpc

    from server.app import TailorServer
    server = TailorServer(settings.model_copy(update={"bundle": demo_bundle}))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            stub = pb_grpc.RecommendationServiceStub(ch)
            for user in _users(load_bundle(demo_bundle), 10):
                replies = [await stub.Recommend(pb.RecommendRequest(user_id=user, k=10, channel=c))
                           for c in ("web", "app", "email", "")]
                assert not replies[0].cold_start
                lists = [[(i.item_id, i.score) for i in r.items] for r in replies]
                assert lists[1:] == lists[:1] * 3
    finally:
        await server.stop(grace=0.5)


# --- trained from the impression log (`train --context-features --impressions`) ---------------

@pytest.fixture(scope="session")
def impressions_bundle(tmp_path_factory):
    data = tmp_path_factory.mktemp("impressions-data")
    run_module("training", "demo-data", "--out", str(data), *TASTES_WORLD,
               "--impressions-per-user", "6")
    return train_bundle(tmp_path_factory.mktemp("impressions-bundles"), data, *FAST,
                        "--impressions", str(data / "impressions.jsonl"))


def test_a_bundle_trained_from_impressions_names_its_source(impressions_bundle, tastes_bundle):
    manifest = json.loads((impressions_bundle / "manifest.json").read_text())
    assert manifest["context"]["source"] == "impressions"
    assert manifest["context"]["shown"] > manifest["context"]["taken"] > 0
    assert manifest["ranker"]["features"][-2:] == ["channel_lift", "daypart_lift"]
    assert json.loads((tastes_bundle / "manifest.json").read_text())["context"]["source"] == "events"


def test_the_impression_channel_lift_follows_the_worlds_tastes(impressions_bundle, tastes):
    lift = load_bundle(impressions_bundle).context.channel_lift
    assert np.corrcoef(lift[0] - lift[1], tastes[0] - tastes[1])[0, 1] > 0.8
    assert np.abs(lift[2]).max() < 1e-6  # the simulated log has no email requests: lift 0


async def test_the_server_serves_a_bundle_trained_from_impressions(impressions_bundle, tmp_path):
    from tests.conftest import server_settings, serving
    users = _users(load_bundle(impressions_bundle), 30)
    async with serving(server_settings(tmp_path, impressions_bundle)) as (_, ch):
        stub = pb_grpc.RecommendationServiceStub(ch)
        changed = 0
        for user in users:
            replies = [await stub.Recommend(pb.RecommendRequest(user_id=user, k=10, channel=c))
                       for c in ("web", "app")]
            assert all(len(r.items) == 10 and not r.cold_start for r in replies)
            changed += [i.item_id for i in replies[0].items] != [i.item_id for i in replies[1].items]
    assert changed >= 8


async def test_training_reads_the_servers_join_with_and_without_request_id(tailor_server, channel,
                                                                           tastes_bundle, tmp_path):
    """The labels training learns from are the server's feedback join, exported: a click naming
    its request joins that answer at its position; one without joins the latest answer that
    showed the item (both answers show the same list: one user, one channel, 10 ms apart, so one
    hour of the week whatever the clock says; the order of the two in the export is their time)."""
    import asyncio
    import time

    from protos.tailor.v1 import profile_pb2 as ppb
    from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
    from training.impression_log import read_impressions
    rec, profiles = pb_grpc.RecommendationServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)
    bundle = load_bundle(tastes_bundle)
    user = _users(bundle, 1)[0]
    first = await rec.Recommend(pb.RecommendRequest(user_id=user, k=10, channel="web"))
    await asyncio.sleep(0.01)
    second = await rec.Recommend(pb.RecommendRequest(user_id=user, k=10, channel="web"))
    shown = [i.item_id for i in first.items]
    assert shown == [i.item_id for i in second.items] and first.request_id != second.request_id
    other = _users(bundle, 2)[1]  # one answer on another channel: each record keeps its own
    await rec.Recommend(pb.RecommendRequest(user_id=other, k=10, channel="app"))
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[
        ppb.Event(event_id="j1", user_id=user, type="click", item_id=shown[2],
                  request_id=first.request_id, timestamp=time.time()),
        ppb.Event(event_id="j2", user_id=user, type="click", item_id=shown[4],
                  timestamp=time.time()),
        # a profile, so the export names `other` by id (a view joins nothing)
        ppb.Event(event_id="j3", user_id=other, type="view", item_id=shown[0],
                  timestamp=time.time())]))
    out = tmp_path / "export" / "interactions.csv"
    await asyncio.to_thread(run_module, "training", "export", "--server",
                            f"127.0.0.1:{tailor_server.port}", "--out", str(out), "--impressions")
    items = bundle.items["item_ids"].astype(str)
    imps = read_impressions(out.parent / "impressions.jsonl", np.array([user, other]), items)
    assert imps.channel[imps.user == 1].tolist() == [CHANNELS.index("app")]
    order = np.argsort(imps.ts, kind="stable")
    order = order[imps.user[order] == 0]  # the joined user's two answers, oldest first
    assert imps.channel[order].tolist() == [CHANNELS.index("web")] * 2
    labels = [imps.positive[imps.indptr[r]:imps.indptr[r + 1]].tolist() for r in order]
    assert labels == [[p == 2 for p in range(10)], [p == 4 for p in range(10)]]
    assert [items[i] for i in imps.item[imps.indptr[order[0]]:imps.indptr[order[0] + 1]]] == shown
