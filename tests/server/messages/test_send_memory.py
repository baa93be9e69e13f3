"""A SendCampaign job keeps no message body in memory beyond the one it is handing over: a
message deferred by quiet hours waits as its record on disk, and a settled one is let go (a real
server, relay and store; the memory the job holds is traced)."""
import asyncio
import gc
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done

BODY = "<p>{{ \"y\" * 200000 }}</p>"  # a 200 kB email (a template under the content limit)
SIZE = 200_000
"""Large enough that what the job holds shows above the rest of the process's allocations in
the traced window (every thread's: one 3.8 MB buffer of the store's, made once, fell in it
once in a whole-directory run and failed the bound of 20 kB bodies)."""
N = 60


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


async def test_deferred_and_sent_messages_are_not_held_in_memory(
        tailor_server, sink, campaigns, profiles, messaging):
    """The job kept every deferred message's flattened body in its heap until its send_at (a
    large audience in quiet hours: ~1 GB in one worker), and every settled recipient's body
    until the job ended (its list of recipients). A deferred message keeps only its address; its
    body is read back from its record when it is due; a settled one keeps none."""
    now = datetime.now(UTC)
    spec = email_spec(html=BODY)
    spec.quiet_hours.CopyFrom(cpb.QuietHours(  # now in UTC; day in Dhaka (UTC+6, no DST)
        start=(now - timedelta(hours=1)).strftime("%H:%M"),
        end=(now + timedelta(hours=1)).strftime("%H:%M"), action="defer"))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    awake, asleep = [f"a{i}" for i in range(N)], [f"s{i}" for i in range(N)]
    await audience(profiles, awake + asleep)
    for u in awake:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=u, attributes={"timezone": "Asia/Dhaka"}))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=awake + asleep, rate_per_second={"email": 1000}))
        deadline = time.time() + 60
        while len(sink.arrived) < N and time.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the sleepers are composed and wait
        got = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=started.send_id))
        assert (got.sent, got.pending, got.done) == (N, N, False)
        assert len(sink.arrived) == N
        sink.mails.clear()  # the relay's copies (in this process too)
        sink.raw.clear()
        sink.arrived.clear()  # (its Message-ID headers hold their parse trees)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held < N * SIZE / 2, held  # 2 N bodies on main


async def test_a_deferred_message_goes_with_its_stored_body(
        tailor_server, sink, campaigns, profiles, messaging):
    """The body a deferred message is read back with is the one composed (a job resumed as
    well: the records are its only copy)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(html=BODY)))
    await audience(profiles, ["b1", "b2"])
    jobs = tailor_server.sends
    defer = jobs.composer.decide_and_render

    async def deferred(*args, **kw):  # the contact policy defers it one second
        msg, recipient = await defer(*args, **kw)
        msg.send_at = time.time() + 1.0
        return msg, recipient

    jobs.composer.decide_and_render = deferred
    try:
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=["b1", "b2"], rate_per_second={"email": 1000}))
        done = await until_done(messaging, started.send_id)
    finally:
        del jobs.composer.decide_and_render
    assert (done.sent, done.pending) == (2, 0)
    assert sorted(r[0] for _, r, _ in sink.arrived) == ["b1@example.com", "b2@example.com"]
    assert all("y" * 20_000 in m.get_body(("html",)).get_content() for m in sink.mails)
