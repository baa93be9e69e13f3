"""CancelSend stops a send job, a SendCampaign's or a scheduled message's (a deferred
ComposeMessage: Message.send_id): nothing more of it goes, what was not settled is counted
suppressed `cancelled` (a real relay on loopback, a real store)."""
import asyncio
import subprocess
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec
from .test_compose_deferred import AHEAD, compose, deferred, sent_events, settings  # noqa: F401
from .test_send_campaign import audience, until_done


async def pending(campaigns, campaign_id: str = "mail") -> list[str]:
    """The users of the campaign's decisions still pending (a withdrawn one is not)."""
    return sorted([r.user_id async for r in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id=campaign_id, include_pending=True)) if r.status == "pending"])


def cancel(messaging, send_id: str):
    return messaging.CancelSend(mpb.CancelSendRequest(send_id=send_id), timeout=30)


async def test_a_scheduled_message_is_cancelled_by_its_send_id(tailor_server, sink, campaigns,
                                                               profiles, messaging):
    """There was no way to stop a deferred message: it went at its send_at."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["c1", "c2"])
    with deferred(tailor_server):
        got = await compose(messaging, "c1")
        clock = await compose(messaging, "c2")  # goes: the clock the test waits by
    stopped = await cancel(messaging, got.send_id)
    assert (stopped.total, stopped.sent, dict(stopped.suppressed_by_reason), stopped.pending,
            stopped.done) == (1, 0, {"cancelled": 1}, 0, True)
    assert stopped.cancelled_at > 0
    assert await pending(campaigns) == ["c2"]  # nobody received c1's: withdrawn
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(1.5)
    assert [r[0] for _, r, _ in sink.arrived] == ["c2@example.com"]
    assert await sent_events(profiles) == [clock.decision_id]
    again = await cancel(messaging, got.send_id)  # harmless: answered as it ended
    assert dict(again.suppressed_by_reason) == {"cancelled": 1}
    went = await cancel(messaging, clock.send_id)  # it went: nothing to stop
    assert (went.sent, dict(went.suppressed_by_reason), went.cancelled_at) == (1, {}, 0.0)


async def test_a_sends_waiting_messages_are_cancelled(tailor_server, sink, campaigns, profiles,
                                                      messaging):
    users = ["w1", "w2", "w3"]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, users)
    with deferred(tailor_server, 5.0):
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}))
        deadline = time.time() + 10
        while time.time() < deadline and not all(  # composed, waiting for their send_at
                r.state == "ready" for r in tailor_server.sends.records.recipients(
                    started.send_id, False)):
            await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await cancel(messaging, started.send_id)
    done = await until_done(messaging, started.send_id, 10)
    assert time.monotonic() - t0 < 3.0  # not at their send_at
    assert (done.sent, dict(done.suppressed_by_reason), done.pending) == (0, {"cancelled": 3}, 0)
    assert await pending(campaigns) == []
    await asyncio.sleep(6.0)  # past their send_at
    assert sink.arrived == [] and await sent_events(profiles) == []


async def test_a_running_send_stops_midway_and_its_counts_add_up(tailor_server, sink, campaigns,
                                                                 profiles, messaging):
    users = [f"m{i}" for i in range(30)]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, users)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 10}))
    await asyncio.to_thread(sink.wait_for, 3, 20)
    await cancel(messaging, started.send_id)
    done = await until_done(messaging, started.send_id, 10)
    arrived = len(sink.arrived)
    assert 3 <= done.sent < 30 and done.sent == arrived
    assert done.suppressed_by_reason["cancelled"] == 30 - done.sent and done.failed == 0
    await asyncio.sleep(1.0)
    assert len(sink.arrived) == arrived
    assert len(await sent_events(profiles)) == done.sent


async def test_a_job_whose_owner_is_gone_is_settled_by_the_cancel(tailor_server, messaging):
    """Not left pending until the next start resumes it."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has: the owner that died
    tailor_server.sends.records.create("send-orphan", "mail", ["o1", "o2"], {"email": 50.0}, {},
                                       gone.pid)
    await cancel(messaging, "send-orphan")
    done = await until_done(messaging, "send-orphan", 10)
    assert (done.sent, dict(done.suppressed_by_reason)) == (0, {"cancelled": 2})


@pytest.mark.parametrize("send_id,code", [("send-none", grpc.StatusCode.NOT_FOUND),
                                          ("x" * 300, grpc.StatusCode.INVALID_ARGUMENT),
                                          ("", grpc.StatusCode.INVALID_ARGUMENT)])
async def test_a_bad_send_id_is_refused(tailor_server, messaging, send_id, code):
    with pytest.raises(grpc.RpcError) as err:
        await cancel(messaging, send_id)
    assert err.value.code() == code and "send" in err.value.details()


async def test_the_cli_cancels_a_send(tailor_server, sink, campaigns, profiles):
    import json

    from protos.tailor.v1 import messaging_pb2_grpc
    from tests.conftest import run_module
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["l1"])
    with deferred(tailor_server, 5.0):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{tailor_server.port}") as ch:
            got = await compose(messaging_pb2_grpc.MessagingServiceStub(ch), "l1")
    out = await asyncio.to_thread(
        run_module, "clients", "campaign", "cancel", "--server",
        f"127.0.0.1:{tailor_server.port}", "--timeout", "30", "--send", got.send_id)
    stopped = json.loads(out.stdout)
    assert (stopped["suppressed_by_reason"], stopped["done"]) == ({"cancelled": 1}, True)
    assert stopped["cancelled_at"] > 0 and stopped["stopped_by"] == "cancelled"


async def test_a_repeat_of_a_cancelled_messages_request_schedules_nothing(
        tailor_server, sink, campaigns, profiles, messaging):
    """The cancel withdrew the decision, and a repeat of its request (a script run again)
    decided anew: a new message was scheduled and went."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r1", "r2"])
    with deferred(tailor_server):
        got = await compose(messaging, "r1", "req-r1")
        await cancel(messaging, got.send_id)
        again = await compose(messaging, "r1", "req-r1")
        await compose(messaging, "r2")  # goes: the clock the test waits by
    assert (again.decision_id, again.suppressed, again.reason, again.scheduled) == (
        got.decision_id, True, "cancelled", False)
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(1.5)
    assert [r[0] for _, r, _ in sink.arrived] == ["r2@example.com"]
    assert await pending(campaigns) == ["r2"]  # r1's stays withdrawn: no cap counts it


async def test_a_slow_send_is_settled_without_waiting_for_its_rate(tailor_server, sink, campaigns,
                                                                  profiles, messaging):
    """Each lane waited for its next token (2 s apart at 0.5/s) before seeing the cancel, one
    after another: 10 users at 0.5/s took ~10 s to settle (18 s for 30 in `--workers 2`)."""
    users = [f"s{i}" for i in range(10)]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, users)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 0.5}))
    await asyncio.to_thread(sink.wait_for, 1, 20)
    t0 = time.monotonic()
    await cancel(messaging, started.send_id)
    done = await until_done(messaging, started.send_id, 30)
    assert time.monotonic() - t0 < 2.0
    assert (done.sent, done.suppressed_by_reason["cancelled"]) == (1, 9)
    assert len(sink.arrived) == 1
