"""A cancelled job's runner settles its recipients in chunks: a write failing midway (a full
disk; the job resumes at the next start) leaves none of the settled chunks' decisions pending
(a real relay on loopback, a real store; the failure injected into one write)."""
import asyncio
import time

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from server.messages import cancelling

from .conftest import email_spec
from .test_cancel_send import cancel, pending
from .test_compose_deferred import deferred, sent_events, settings  # noqa: F401
from .test_send_campaign import audience, until_done


async def test_a_cancel_whose_settling_stops_midway_withdraws_what_it_settled(
        tailor_server, sink, campaigns, profiles, messaging, monkeypatch):
    """The decisions were withdrawn once every chunk was written: a failure after the first
    chunk left its 2 recipients settled `cancelled` and their decisions pending for good
    (counted by the frequency caps; the resumed job no longer saw them)."""
    users = [f"k{i}" for i in range(5)]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, users)
    records = tailor_server.sends.records
    with deferred(tailor_server, 30.0):
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}))
        deadline = time.time() + 10
        while time.time() < deadline and not all(
                r.state == "ready" for r in records.recipients(started.send_id, False)):
            await asyncio.sleep(0.05)
    monkeypatch.setattr(cancelling, "SETTLE_CHUNK", 2)
    update, writes = records.update, []

    def failing(send_id, recipients):
        writes.append(len(recipients))
        if len(writes) == 2:
            raise OSError("no space left on device")
        return update(send_id, recipients)
    records.update = failing
    await cancel(messaging, started.send_id)
    deadline = time.time() + 10
    while time.time() < deadline and started.send_id in tailor_server.sends._running:
        await asyncio.sleep(0.05)
    del records.update
    assert writes == [2, 2]  # the first chunk written, the second failed
    await tailor_server.sends.resume()  # the next start
    done = await until_done(messaging, started.send_id, 10)
    assert (done.sent, dict(done.suppressed_by_reason)) == (0, {"cancelled": 5})
    assert await pending(campaigns) == []
    assert sink.arrived == [] and await sent_events(profiles) == []
