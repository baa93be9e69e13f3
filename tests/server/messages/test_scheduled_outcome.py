"""A deferred ComposeMessage (`scheduled`) can be followed: the reply names its send job
(`send_id`), GetSendProgress answers it also once it went (its record is kept a request id's
window), and a repeat of its request after it ended says how (delivered, or the adapter's
refusal) instead of `scheduled` (a real relay on loopback, a real store)."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec
from .test_compose_deferred import AHEAD, compose, deferred, settings  # noqa: F401
from .test_send_campaign import audience


async def progress(messaging, send_id: str, done: bool = True) -> mpb.SendProgress:
    deadline = time.time() + AHEAD + 15
    while True:
        got = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=send_id))
        if got.done == done or time.time() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_a_repeat_after_a_deferred_message_went_says_delivered(
        tailor_server, sink, campaigns, profiles, messaging):
    """The repeat answered `scheduled` (delivered false) after the message went, and
    GetSendProgress answered NOT_FOUND for its job (dropped once it went)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["f1"])
    with deferred(tailor_server):
        got = await compose(messaging, "f1", "req-f1")
    assert (got.scheduled, got.delivered, got.send_id) == (True, False,
                                                           f"send-{got.decision_id}")
    waiting = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=got.send_id))
    assert (waiting.total, waiting.pending, waiting.done) == (1, 1, False)
    went = await progress(messaging, got.send_id)
    assert (went.total, went.sent, went.pending, went.done) == (1, 1, 0, True)
    assert sink.message_ids == [f"<{got.decision_id}@tailor.invalid>"]
    again = await compose(messaging, "f1", "req-f1")
    assert (again.decision_id, again.scheduled, again.delivered, again.send_id) == (
        got.decision_id, True, True, got.send_id)
    assert len(sink.arrived) == 1  # nothing sent again


async def test_a_repeat_after_the_relay_refused_a_deferred_message_says_so(
        tailor_server, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["f2"])
    sink.rcpt_replies["f2@example.com"] = ["554 5.7.1 rejected by policy"]
    with deferred(tailor_server):
        got = await compose(messaging, "f2", "req-f2")
    ended = await progress(messaging, got.send_id)
    assert (ended.sent, dict(ended.failed_by_reason), ended.done) == (0, {"smtp 554": 1}, True)
    with pytest.raises(grpc.RpcError) as err:
        await compose(messaging, "f2", "req-f2")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "did not go at its send_at (smtp 554)" in err.value.details()


async def test_kept_records_of_deferred_messages_expire(tailor_server):
    """Each kept record has an expiry; a later finish drops up to 8 of those past it, oldest
    first."""
    from server.messages.sends import READY, Recipient
    records = tailor_server.sends.records

    def finished(name: str) -> None:
        r = Recipient(0, name, READY, name, "", 1.0, {"to": "k@example.com", "raw": "x"},
                      0.0, "email", [])
        records.create(f"send-{name}", "mail", [r], {"email": 50.0}, {}, 1, due=1.0)
        records.finish(f"send-{name}")
    records.kept = 0.05
    for i in range(10):
        finished(f"dk{i}")
    await asyncio.sleep(0.1)
    records.kept = 3600.0
    finished("dkept")
    assert [i for i in range(10) if records.job(f"send-dk{i}") is not None] == [8, 9]
    assert records.job("send-dkept")["finished"] > 0
