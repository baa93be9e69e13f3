"""A ComposeMessage with `deliver` repeated with its request_id (a retry whose answer was lost)
is answered the first delivery's outcome and never hands the message over a second time (a
real relay on loopback, a real store)."""
import asyncio

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed
from .test_send_campaign import audience


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=1)


def compose(messaging, user: str, **call):
    return messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, deliver=True, request_id="req-1"), **call)


async def sent_events(profiles) -> list[str]:
    return [e.attributes["decision_id"] async for e in profiles.ExportEvents(
        ppb.ExportEventsRequest()) if e.type == "email_sent"]


async def test_a_repeat_of_a_delivered_request_is_not_sent_again(sink, campaigns, profiles,
                                                                 messaging):
    """The repeat was answered the logged decision, rendered again and sent again under the
    same Message-ID (an SMS or push has no such id: a second message to a real person)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r1"])
    first = await compose(messaging, "r1")
    again = await compose(messaging, "r1")
    assert first.delivered and again.delivered
    assert again.decision_id == first.decision_id
    assert again.parts["subject"] == first.parts["subject"]
    assert sink.message_ids == [f"<{first.decision_id}@tailor.invalid>"]
    assert await sent_events(profiles) == [first.decision_id]


async def test_a_repeat_of_a_refused_request_answers_the_refusal_without_a_second_attempt(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r2"])
    sink.rcpt_replies["r2@example.com"] = ["554 5.7.1 rejected by policy", "250 OK"]
    codes = []
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as err:
            await compose(messaging, "r2")
        codes.append((err.value.code(), err.value.details()))
    assert codes[1] == codes[0]
    assert codes[0][0] == grpc.StatusCode.FAILED_PRECONDITION and "refused" in codes[0][1]
    assert sink.rcpt_replies["r2@example.com"] == ["250 OK"]  # no second RCPT
    assert sink.message_ids == []
    assert len((await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters) == 1


async def test_a_repeat_while_the_first_is_being_sent_does_not_send(sink, campaigns, profiles,
                                                                    messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r3"])
    sink.delay_data = 2.0
    first = asyncio.ensure_future(compose(messaging, "r3", timeout=30))
    await asyncio.sleep(1.0)  # the first waits for the relay's 250
    with pytest.raises(grpc.RpcError) as err:
        await compose(messaging, "r3", timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "being delivered" in err.value.details()
    assert (await first).delivered
    assert len(sink.message_ids) == 1
    assert (await compose(messaging, "r3", timeout=30)).delivered  # now its outcome
    assert len(sink.message_ids) == 1


async def test_a_repeat_after_the_campaign_was_archived_is_answered_the_first_delivery(
        sink, campaigns, profiles, messaging):
    """The first call's message went but its answer was lost; the campaign was archived before
    the client's retry: the retry is answered the logged decision, delivered (and not sent
    again), not refused as archived. A new request id is still refused."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r5"])
    first = await compose(messaging, "r5")
    await campaigns.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id="mail"))
    again = await compose(messaging, "r5")
    assert (again.decision_id, again.variant_id, again.delivered) == (
        first.decision_id, first.variant_id, True)
    assert again.parts["subject"] == first.parts["subject"]
    assert sink.message_ids == [f"<{first.decision_id}@tailor.invalid>"]
    assert await sent_events(profiles) == [first.decision_id]
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="r5", deliver=True, request_id="req-2"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "archived" in err.value.details()


async def test_a_send_slower_than_its_claim_keeps_it_and_a_repeat_hears_it_is_being_sent(
        tailor_server, sink, campaigns, profiles, messaging):
    """The request's delivery claim lapsed after a fixed time (every attempt timing out, plus
    a minute) while a send may wait longer (behind the shared SMTP connection, a slow relay):
    a repeat then heard "whether it went is not known", and a client told so may send again
    under a new request id. The claim is renewed while the send runs."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r6"])
    tailor_server.delivery.claim_seconds = 1.0  # the relay takes three times as long
    sink.delay_data = 3.0
    first = asyncio.ensure_future(compose(messaging, "r6", timeout=30))
    await asyncio.sleep(1.8)  # the first waits for the relay's 250, past its first claim
    assert not first.done()
    with pytest.raises(grpc.RpcError) as err:
        await compose(messaging, "r6", timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "being delivered" in err.value.details()
    assert (await first).delivered
    assert len(sink.message_ids) == 1
