"""Archiving a campaign stops its stored messages: a deferred ComposeMessage's (quiet hours, a
send window) and a SendCampaign's not yet handed over (deferred, or still being composed) get
nothing once the campaign is archived; they are counted suppressed `archived` and their
decisions withdrawn (a real relay on loopback, a real store)."""
import asyncio
import time

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec
from .test_cancel_send import pending
from .test_compose_deferred import AHEAD, compose, deferred, sent_events, settings  # noqa: F401
from .test_send_campaign import audience, until_done


async def test_archiving_stops_a_deferred_message(tailor_server, sink, campaigns, profiles,
                                                  messaging):
    """It went at its send_at all the same: the user of an archived campaign got mail."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec("other")))
    await audience(profiles, ["a1", "a2"])
    with deferred(tailor_server):
        got = await compose(messaging, "a1")
        clock = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="other", user_id="a2", deliver=True), timeout=30)
    assert got.scheduled and clock.scheduled
    await campaigns.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id="mail"))
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(1.5)
    assert [r[0] for _, r, _ in sink.arrived] == ["a2@example.com"]
    assert await sent_events(profiles) == [clock.decision_id]


async def test_archiving_stops_a_sends_waiting_messages(tailor_server, sink, campaigns, profiles,
                                                        messaging):
    """A SendCampaign's messages deferred by quiet hours went after the archive."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["b1", "b2", "b3"])
    with deferred(tailor_server):
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=["b1", "b2", "b3"], rate_per_second={"email": 1000}))
        deadline = time.time() + 10
        while time.time() < deadline and not all(  # composed, waiting for their send_at
                r.state == "ready" for r in tailor_server.sends.records.recipients(
                    started.send_id, False)):
            await asyncio.sleep(0.05)
    await campaigns.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id="mail"))
    done = await until_done(messaging, started.send_id, AHEAD + 15)
    assert (done.sent, dict(done.suppressed_by_reason)) == (0, {"archived": 3})
    assert sink.arrived == [] and await sent_events(profiles) == []
    assert await pending(campaigns) == []  # nobody received them: withdrawn


async def test_a_dead_letter_of_an_archived_campaign_is_not_retried(tailor_server, sink,
                                                                   campaigns, profiles,
                                                                   messaging):
    """RetryDeadLetter sent it: the campaign's one stored message that archiving did not stop."""
    import grpc
    import pytest
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["e1"])
    sink.rcpt_replies["e1@example.com"] = ["554 5.7.1 rejected by policy", "250 OK"]
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="e1", deliver=True))
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    await campaigns.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id="mail"))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "(archived)" in err.value.details()
    assert sink.arrived == []
    [kept] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    assert (kept.id, kept.reason) == (letter.id, "archived")


async def test_a_repeat_after_an_archive_stopped_the_message_says_so(tailor_server, sink,
                                                                    campaigns, profiles,
                                                                    messaging):
    """Answered FAILED_PRECONDITION 'archived' (the decision, withdrawn, was no answer)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a3"])
    with deferred(tailor_server):
        got = await compose(messaging, "a3", "req-a3")
    await campaigns.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id="mail"))
    deadline = time.time() + AHEAD + 10
    while not (await messaging.GetSendProgress(mpb.GetSendProgressRequest(
            send_id=got.send_id))).done and time.time() < deadline:
        await asyncio.sleep(0.05)
    again = await compose(messaging, "a3", "req-a3")
    assert (again.decision_id, again.suppressed, again.reason) == (got.decision_id, True,
                                                                   "archived")
    assert sink.arrived == []
