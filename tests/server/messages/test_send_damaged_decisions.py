"""A SendCampaign job resumed after a crash (its decisions logged, its records still pending)
whose one logged decision record is damaged (tests/server/test_damaged_contacts.py's
`damage_record`): that recipient is settled suppressed `decision_record_damaged` and not
decided again (its first message may have gone), every other one is sent its logged decision.
Before, reading the logged decisions raised for the whole batch: the job stopped at every start
and none of its recipients was sent."""
import asyncio
import subprocess
import time

import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from server.store.keys import decision_key
from tests.server.test_damaged_contacts import damage_record

from .conftest import email_spec, relayed
from .test_send_campaign import audience

USERS = [f"r{i}" for i in range(6)]
BAD = 2
SEND = "send-crashed"


@pytest.fixture(params=[True, False], ids=["sealed", "plain"])
def settings(settings, sink, request):
    return relayed(settings, sink, encrypt_at_rest=request.param)


async def crashed_job(server, decided: bool = True) -> list[str]:
    """A job of `USERS` whose owner died after logging every decision (as the job does,
    `decide_and_render` under the ids it fixes; `decided` False: before deciding any) and
    before its records said `ready`; its decision ids."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has: the owner that died
    jobs = server.sends
    job, _ = jobs.records.create(SEND, "mail", USERS, {"email": 1000.0}, {}, gone.pid)
    ids = [server.campaigns.fixed_decision_id(job["started"], f"{SEND}:{seq}")
           for seq in range(len(USERS))]
    for u, d in zip(USERS, ids if decided else ()):
        await jobs.composer.decide_and_render("mail", u, {}, decision_id=d, delivered=True)
    return ids


async def ended(server, timeout: float = 10.0) -> mpb.SendProgress:
    """The job's progress once its run ended (finished, or stopped by an error)."""
    await asyncio.sleep(0.05)
    deadline = time.time() + timeout
    while SEND in server.sends._running and time.time() < deadline:
        await asyncio.sleep(0.05)
    return await server.sends.progress(SEND)


async def test_a_resumed_send_settles_the_recipient_whose_logged_decision_is_damaged(
        tailor_server, sink, campaigns, profiles):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, USERS)
    ids = await crashed_job(tailor_server)
    damage_record(tailor_server.store, "decisions", decision_key(USERS[BAD], ids[BAD]))
    await tailor_server.sends.resume()  # the next start
    done = await ended(tailor_server)
    assert (done.sent, done.suppressed, done.failed, done.finished_at > 0) == \
        (5, {"decision_record_damaged": 1}, {}, True)
    assert sorted(r[0] for _, r, _ in sink.arrived) == \
        sorted(f"{u}@example.com" for i, u in enumerate(USERS) if i != BAD)
    logged = [d async for d in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True, include_suppressed=True))]
    # the others' logged decisions were sent (none decided again); the damaged one was not
    # decided again either (a new decision under its id would have replaced the record)
    assert sorted((d.user_id, d.decision_id) for d in logged) == \
        sorted((u, d) for i, (u, d) in enumerate(zip(USERS, ids)) if i != BAD)


async def test_a_message_rendered_again_whose_decision_record_is_damaged_is_not_sent(
        tailor_server, sink, campaigns, profiles, messaging, channel, demo_bundle):
    """A ready message showing an item removed from the catalog since is rendered again from
    its logged decision before it goes; that record damaged meanwhile, it was settled failed
    `error` (an ERROR "rendering again failed" naming the decoder's exception). It is settled
    suppressed `decision_record_damaged`, as the resumed job settles it."""
    from protos.tailor.v1 import catalog_pb2 as capb
    from protos.tailor.v1 import catalog_pb2_grpc

    from .test_send_campaign import showing_the_top_item, until_done
    top = await showing_the_top_item(campaigns, demo_bundle)
    await audience(profiles, ["x1", "x2"])
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(  # x2 goes 2 s later
        campaign_id="mail", user_ids=["x1", "x2"], rate_per_second={"email": 0.5}))
    await asyncio.to_thread(sink.wait_for, 1)
    (x2,) = [r for r in tailor_server.sends.records.recipients(started.send_id, False)
             if r.user == "x2"]
    assert x2.state == "ready"
    damage_record(tailor_server.store, "decisions", decision_key("x2", x2.decision))
    await catalog_pb2_grpc.CatalogServiceStub(channel).RemoveItems(
        capb.RemoveItemsRequest(item_ids=[top]))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, dict(done.suppressed_by_reason), dict(done.failed_by_reason)) == \
        (1, {"decision_record_damaged": 1}, {})
    assert [r[0] for _, r, _ in sink.arrived] == ["x1@example.com"]
