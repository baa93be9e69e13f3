"""A profile meta record damaged after the read that let a user's event or decision in, and
read again later for a batch of users: the bounce and complaint listener (its outbox entry's
replay) and the campaigns writer's re-check at the commit. One damaged record fails its own
user only: before, the listener failed for every user of the batch (each replay again, every
bounced address left off the list) and the writer's transaction for every decision queued
with it."""
import time

import pytest_asyncio
from prometheus_client import REGISTRY

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from tests.conftest import serving
from tests.server.test_contact import consent, spec
from tests.server.test_damaged_profiles import damage


def damaged(use: str) -> float:
    return REGISTRY.get_sample_value("tailor_profile_records_damaged_total",
                                     {"record": "meta", "use": use}) or 0.0


@pytest_asyncio.fixture(scope="module")
async def served(tmp_path_factory):
    """(server, campaigns stub, profiles stub): a real server, no bundle, sealed store."""
    from server.config import Settings
    tmp = tmp_path_factory.mktemp("damaged-metas")
    async with serving(Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0,
                                lmdb_sync=False, secrets_dir=tmp / "secrets")) as (server, ch):
        yield server, pb_grpc.CampaignServiceStub(ch), ppb_grpc.ProfileServiceStub(ch)


async def test_a_replayed_bounce_batch_lists_every_address_but_the_damaged_users(
        served, monkeypatch):
    server, _, profiles = served
    users = ["bounce-ok-1", "bounce-bad", "bounce-ok-2"]
    for u in users:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=u, attributes={"email": f"{u}@example.org"}))

    async def gone(*a, **kw):  # the process died after the batch's commit: its entry stays
        raise OSError("killed")
    with monkeypatch.context() as patch:
        patch.setattr(server.suppressions, "on_events", gone)
        got = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
            event_id=f"b-{u}", user_id=u, type="email_bounce", timestamp=time.time() - 1)
            for u in users]))
    assert got.accepted == 3
    damage(server.store, "bounce-bad", "meta")
    before = damaged("suppress")
    await server.profiles.replay_outbox(older_than=0)
    sup = server.suppressions
    with server.store.read() as txn:
        listed = {u: sup.store.table("suppression").get(
            txn, sup.lookup_keys("email", f"{u}@example.org")[0]) is not None for u in users}
    assert listed == {"bounce-ok-1": True, "bounce-bad": False, "bounce-ok-2": True}
    assert await server.profiles.replay_outbox(older_than=0) == 0  # its entry cleared
    assert damaged("suppress") == before + 1


async def test_a_meta_record_damaged_before_the_writers_recheck_suppresses_its_decision_alone(
        served):
    server, campaigns_stub, profiles = served
    await campaigns_stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(cid="recheck")))
    for u in ("recheck-bad", "recheck-ok"):
        await consent(profiles, u, "email", True)
    campaigns = server.campaigns
    bad = campaigns.decide("recheck", "recheck-bad", {})  # read: opted in; its record queued
    ok = campaigns.decide("recheck", "recheck-ok", {})
    damage(server.store, "recheck-bad", "meta")  # before the writer takes the records
    before = damaged("decision")
    got = {"bad": (await bad.logged()).reason, "ok": (await ok.logged()).reason}
    assert got == {"bad": "profile_damaged", "ok": ""}
    assert damaged("decision") == before + 1
