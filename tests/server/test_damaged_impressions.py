"""One damaged impression (a record of the `impressions` table whose head no longer matches its
bytes, on disk or by a bad restore) fails its own user's access export only, with a clear
FAILED_PRECONDITION (the export may leave nothing out); ExportImpressions leaves it out and goes
on. Before, both failed whole (INTERNAL): the export of every other user with it."""
import asyncio
import time

import grpc
import pytest_asyncio
from prometheus_client import REGISTRY

from protos.tailor.v1 import model_admin_pb2 as apb
from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.store.table import Table
from tests.conftest import minted, server_settings, serving

HIT, OTHER = "impressions-damaged-a", "impressions-damaged-b"


@pytest_asyncio.fixture(scope="module")
async def secured_server(tmp_path_factory, demo_bundle):
    """(server, channel, call metadata): one real server of the demo bundle whose caller holds
    every role an access export needs."""
    tmp = tmp_path_factory.mktemp("damaged-impressions")
    path, tokens = minted(tmp, {"all": ["tracker", "admin", "pii-reader", "decider"]})
    settings = server_settings(tmp, demo_bundle).model_copy(update={"auth_config": path})
    async with serving(settings) as (server, channel):
        yield server, channel, (("authorization", f"Bearer {tokens['all']}"),)


def damage_impression(log, user_id: str, request_id: str) -> None:
    """Flip a byte of the item count in the head of the user's impression of `request_id`
    (`records.HEAD`: offset 10), below the log, as a disk or a bad restore would."""
    t = log.store.table("impressions")
    with log.store.read() as txn:
        (key,) = [bytes(k) for k, _ in t.scan_prefix(txn, log.user_prefix(user_id))
                  if bytes(k).endswith(request_id.encode())]

    def fn(txn):
        (stored,) = Table.get_many(t, txn, [key])
        Table.put(t, txn, key, stored[:10] + bytes([stored[10] ^ 0xA5]) + stored[11:])
    log.store.write(fn)


def sample(use: str) -> float:
    return REGISTRY.get_sample_value("tailor_records_damaged_total",
                                     {"record": "impression", "use": use}) or 0.0


async def test_a_damaged_impression_fails_its_users_export_only(secured_server):
    server, channel, meta = secured_server
    rec = rpb_grpc.RecommendationServiceStub(channel)
    profiles, admin = ppb_grpc.ProfileServiceStub(channel), apb_grpc.ModelAdminServiceStub(channel)
    shown = {u: [(await rec.Recommend(rpb.RecommendRequest(user_id=u, k=3),
                                     metadata=meta)).request_id
                 for _ in range(2)] for u in (HIT, OTHER)}
    await server.impressions.log.flushed()
    damage_impression(server.impressions.log, HIT, shown[HIT][0])
    before = {use: sample(use) for use in ("export", "log_export")}

    exported = {r.request_id async for r in admin.ExportImpressions(
        apb.ExportImpressionsRequest(), metadata=meta)}
    assert {*shown[HIT][1:], *shown[OTHER]} <= exported and shown[HIT][0] not in exported
    try:
        await profiles.ExportProfile(ppb.ExportProfileRequest(user_id=HIT), metadata=meta)
        raise AssertionError("the export of a damaged impression's user went")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert f"(the answer to request {shown[HIT][0]!r}) is damaged" in err.details()
        assert HIT not in err.details()
    other = await profiles.ExportProfile(ppb.ExportProfileRequest(user_id=OTHER),
                                        metadata=meta)
    assert all(r in other.document for r in shown[OTHER])
    assert {use: sample(use) for use in before} == {"export": before["export"] + 1,
                                                    "log_export": before["log_export"] + 1}


async def test_a_damaged_impression_is_passed_over_by_the_join_of_its_users_batch(
        secured_server):
    """A click naming a request whose impression is damaged joins nothing (the impression's
    outcomes unknown); every other click of the batch joins. Before, reading it raised in the
    join: the whole batch's join failed in its write, then at each retry after it (a
    traceback each), and no click of the batch was joined."""
    server, channel, meta = secured_server
    rec, profiles = rpb_grpc.RecommendationServiceStub(channel), ppb_grpc.ProfileServiceStub(
        channel)
    users = ["join-damaged-a", "join-damaged-b"]
    answers = {u: await rec.Recommend(rpb.RecommendRequest(user_id=u, k=3), metadata=meta)
               for u in users}
    log = server.impressions.log
    await log.flushed()
    damage_impression(log, users[0], answers[users[0]].request_id)
    before = sample("join")
    got = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=f"click-{u}", user_id=u, type="click", item_id=a.items[0].item_id,
        request_id=a.request_id, position=1, timestamp=time.time()) for u, a in answers.items()]),
        metadata=meta)
    assert got.accepted == 2
    for _ in range(50):  # a join that failed in the write is tried again after the commit
        clicks = [imp.clicks for _, imp in await asyncio.to_thread(log.of_user, users[1])]
        if clicks == [1]:
            break
        await asyncio.sleep(0.1)
    assert clicks == [1]
    assert sample("join") == before + 1
