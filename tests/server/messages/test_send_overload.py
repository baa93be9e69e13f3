"""A SendCampaign job under the shedding bound (`limits.batch_queue_seconds`): its decisions
and its templates' recommendations queue behind its own commits (up to `send_compose_ahead`
at once) and are never refused as overload: the job was accepted, and a recipient settled
failed `Overloaded` would never get its message."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.limits import Limits

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done

USERS = [f"o{i}" for i in range(120)]
FEW = USERS[:30]


@pytest.fixture
def settings(settings, sink):
    settings.limits = Limits(batch_queue_seconds=0.001)  # each decision commit takes longer
    return relayed(settings, sink, send_connections=1)


async def test_a_send_job_is_not_shed_for_its_own_queued_decisions(
        tailor_server, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, USERS)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=USERS, rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id, timeout=60)
    assert (done.sent, dict(done.failed_by_reason), done.pending) == (len(USERS), {}, 0)


async def test_a_send_job_records_its_sends_while_tracked_events_are_shed(
        tailor_server, sink, campaigns, profiles, messaging):
    """Events tracked past the bound beside the job: its sent events (`record_sent`, a lane's
    `Delivery.hand`) are the events of messages that went, never refused. Before, one refused
    stopped the job ('send ... stopped: Overloaded', resumed only at the next start) and its
    batch of sent events was dropped."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, FEW)  # each send's event queues behind a long commit
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=FEW, rate_per_second={"email": 40}))
    now, refused = time.time(), []

    def events(name: str, n: int) -> ppb.TrackEventsRequest:
        return ppb.TrackEventsRequest(events=[ppb.Event(
            event_id=f"{name}-{j}", user_id=f"load{j % 500}", type="view", item_id=str(j % 50),
            timestamp=now - j) for j in range(n)])

    async def small(name: str, after: float = 0.0):
        await asyncio.sleep(after)
        try:
            await profiles.TrackEvents(events(name, 1), timeout=60)
        except grpc.aio.AioRpcError as err:
            refused.append(err.code())
    rounds = 0
    while rounds < 40 and not (await messaging.GetSendProgress(
            mpb.GetSendProgressRequest(send_id=started.send_id))).done:
        # a long commit with a small call queued behind it: overloaded while it commits (a
        # call arriving 5 ms later is refused)
        big = profiles.TrackEvents(events(f"big{rounds}", 10_000), timeout=60)
        await asyncio.gather(big, small(f"small{rounds}"), small(f"probe{rounds}", 0.005))
        rounds += 1
    assert refused  # the load was shed
    done = await until_done(messaging, started.send_id, timeout=60)
    assert (done.sent, dict(done.failed_by_reason), done.pending) == (len(FEW), {}, 0)
    sent = set()
    async for ev in profiles.ExportEvents(ppb.ExportEventsRequest(), timeout=60):
        if ev.type == "email_sent":
            sent.add(ev.user_id)
    assert sent == set(FEW)
