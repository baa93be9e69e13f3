"""A hard bounce at the relay (550 5.1.1 at RCPT, `Delivery._bounced`) against a real relay on
loopback (aiosmtpd): it lists the address the message went to, and only that one: not a newer
address of the user's, and it brings back no user erased while the message was on its way."""
import asyncio

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done

NO_SUCH_USER = ["550 5.1.1 no such user"]
POLICY = ["554 5.7.1 rejected by policy"]


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=1)


async def listed(profiles, address: str) -> bool:
    return (await profiles.CheckSuppression(ppb.SuppressionAddress(email=address))).suppressed


async def test_a_bounce_of_an_old_address_does_not_list_the_users_new_one(
        sink, campaigns, profiles, messaging):
    """A dead letter to the address the user had, retried after they gave a new one, bounces:
    the old address is listed, the new one is not (it was: the bounce event listed the
    profile's address of the moment), and the user's next message goes to the new one."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["moved"])
    sink.rcpt_replies["moved@example.com"] = list(POLICY)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="moved", deliver=True))
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="moved", attributes={"email": "moved.now@example.com"}))
    sink.rcpt_replies["moved@example.com"] = list(NO_SUCH_USER)  # the old mailbox is gone
    with pytest.raises(grpc.RpcError) as err:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert "smtp 550" in err.value.details()
    assert await listed(profiles, "moved@example.com")
    assert not await listed(profiles, "moved.now@example.com")
    with pytest.raises(grpc.RpcError) as err:  # retried again: refused before it goes
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "suppressed_address" in err.value.details()
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="moved", deliver=True))
    assert again.delivered
    assert sink.arrived[-1][1] == ["moved.now@example.com"]


async def test_a_bounce_brings_back_no_user_erased_while_their_message_was_on_its_way(
        sink, campaigns, profiles, messaging):
    """The user is erased while the relay holds their message (at MAIL FROM), then refuses it
    550 5.1.1: the address is listed (the list outlives profiles on purpose), but no bounce
    event is recorded for the erased user (one was, stamped after the erasure: their profile
    came back holding it)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["gone"])
    sink.rcpt_replies["gone@example.com"] = list(NO_SUCH_USER)
    sink.hold_mail_at = 0
    sending = asyncio.ensure_future(messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="gone", deliver=True)))
    assert await asyncio.to_thread(sink.holding.wait, 30), "the relay never held the message"
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="gone"))
    sink.release()
    with pytest.raises(grpc.RpcError) as err:
        await sending
    assert "smtp 550" in err.value.details()
    assert await listed(profiles, "gone@example.com")
    with pytest.raises(grpc.RpcError) as err:
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="gone"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_send_campaign_bounce_lists_the_address_it_was_composed_for(
        sink, campaigns, profiles, messaging):
    """SendCampaign composes a message to the user's address, and it waits (here at the relay's
    MAIL FROM) while the user gives another: the old one, refused 550 5.1.1, is listed, the new
    one is not."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["sc1"])
    sink.rcpt_replies["sc1@example.com"] = list(NO_SUCH_USER)
    sink.hold_mail_at = 0
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["sc1"], rate_per_second={"email": 100}))
    assert await asyncio.to_thread(sink.holding.wait, 30), "the relay never held the message"
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="sc1", attributes={"email": "sc1.now@example.com"}))
    sink.release()
    done = await until_done(messaging, started.send_id)
    assert dict(done.failed_by_reason) == {"smtp 550": 1}
    assert await listed(profiles, "sc1@example.com")
    assert not await listed(profiles, "sc1.now@example.com")


async def test_a_relay_bouncing_most_of_an_audience_trips_the_breaker_and_lists_none(
        sink, settings, campaigns, profiles, messaging):
    """A relay answering 550 5.1.1 to every recipient (misconfigured) stops the job once it
    handed `send_bounce_breaker_min` of them and more than `send_bounce_breaker_share`
    bounced: none of those addresses is listed (before, all 24 were), the messages are dead
    letters, the rest settled suppressed `bounce_breaker`. A job whose few bounces stay under
    the bound lists them as ever."""
    assert (settings.send_bounce_breaker_min, settings.send_bounce_breaker_share) == (20, 0.5)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    fine, dead = [f"ok{i:02d}" for i in range(24)], [f"nx{i:02d}" for i in range(24)]
    await audience(profiles, fine + dead)
    for u in fine[:3] + dead:
        sink.rcpt_replies[f"{u}@example.com"] = list(NO_SUCH_USER)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                                   user_ids=fine))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed, done.cancelled_at, done.stopped_by) == (21, 3, 0, "")
    assert [await listed(profiles, f"{u}@example.com") for u in fine[:4]] == [True] * 3 + [False]

    started = await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                                   user_ids=dead))
    done = await until_done(messaging, started.send_id)
    stopped = done.suppressed_by_reason["bounce_breaker"]
    assert done.sent == 0 and done.failed >= 20 and done.failed + stopped == 24
    assert done.cancelled_at > 0 and done.stopped_by == "bounce_breaker"  # not CancelSend
    assert not any([await listed(profiles, f"{u}@example.com") for u in dead])
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))
    assert len(letters.letters) == 3 + done.failed


async def test_a_relay_going_bad_in_the_middle_of_a_job_trips_the_breaker_as_soon(
        sink, settings, campaigns, profiles, messaging):
    """40 delivered, then the relay bounces every recipient: the breaker judges the last 20,
    so the job stops within about 20 more and lists none of them (over the whole job it would
    have taken 40 bounces)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = [f"ok{i:02d}" for i in range(40)] + [f"nx{i:02d}" for i in range(40)]
    await audience(profiles, users)
    for u in users[40:]:
        sink.rcpt_replies[f"{u}@example.com"] = list(NO_SUCH_USER)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 500}))
    done = await until_done(messaging, started.send_id)
    assert done.cancelled_at > 0 and done.sent == 40
    assert 11 <= done.failed <= 20 + settings.send_connections
    assert done.suppressed_by_reason["bounce_breaker"] == 40 - done.failed
    assert not any([await listed(profiles, f"{u}@example.com") for u in users[40:]])


async def test_a_job_ending_with_an_error_still_lists_the_bounces_it_held(
        sink, tailor_server, campaigns, profiles, messaging, monkeypatch):
    """A job whose task fails (here its `email_sent` events cannot be recorded: a store
    error, say) ends with the error and resumes at the next start, which does not send its
    bounced (settled `failed`) messages again: the listings its breaker held were dropped for
    good (the address mailed again by every campaign), as in a crash, though the process
    lives on. Now they are written as the job ends, whichever way."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["gone", "here"])
    sink.rcpt_replies["gone@example.com"] = list(NO_SUCH_USER)

    async def broken(events, batch):
        raise RuntimeError("the events could not be recorded")
    monkeypatch.setattr(tailor_server.delivery, "record_sent", broken)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                                   user_ids=["gone", "here"]))
    for _ in range(200):  # the job's task ends (with its error), within 10 s
        if started.send_id not in tailor_server.sends._running:
            break
        await asyncio.sleep(0.05)
    left = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=started.send_id))
    assert (left.sent, left.failed, left.done) == (1, 1, False)  # ended with its error
    assert await listed(profiles, "gone@example.com")
    assert not await listed(profiles, "here@example.com")

async def _eight_bouncing(sink, settings, tailor_server, campaigns, profiles, monkeypatch,
                          prefix: str) -> list[str]:
    """Campaign "mail", a breaker judging the last 2 recipients, and 8 users named `prefix`0..7
    whose addresses the relay refuses (550 5.1.1): their ids."""
    monkeypatch.setattr(tailor_server.sends, "settings",
                        settings.model_copy(update={"send_bounce_breaker_min": 2}))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = [f"{prefix}{i}" for i in range(8)]
    await audience(profiles, users)
    for u in users:
        sink.rcpt_replies[f"{u}@example.com"] = list(NO_SUCH_USER)
    return users


async def test_a_cancelled_job_stays_cancelled_when_its_last_messages_bounce(
        sink, settings, tailor_server, campaigns, profiles, messaging, monkeypatch):
    """CancelSend lets the messages being handed over end as they end: when they hard-bounce
    enough to trip the breaker, their listings are dropped (the breaker's stretch), but the
    job was the operator's cancel: its recipients not reached are `cancelled`. Before, the
    trip after the cancel renamed them `bounce_breaker` (and logged the job stopped by it)."""
    users = await _eight_bouncing(sink, settings, tailor_server, campaigns, profiles,
                                  monkeypatch, "c")
    sink.hold_mail_at = 0  # every lane's transaction stalls at MAIL FROM
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                                   user_ids=users))
    assert await asyncio.to_thread(sink.holding.wait, 10)
    await asyncio.sleep(1.0)  # the other lanes reach the relay too
    await messaging.CancelSend(mpb.CancelSendRequest(send_id=started.send_id), timeout=30)
    sink.hold_mail_at = None  # they go on: RCPT 550 5.1.1, each
    done = await until_done(messaging, started.send_id)
    assert done.failed >= 2 and done.sent == 0  # enough bounces to trip (2 of the last 2)
    assert dict(done.suppressed_by_reason) == {"cancelled": 8 - done.failed}
    assert not any([await listed(profiles, f"{u}@example.com") for u in users])


async def test_a_job_its_breaker_stopped_settles_the_rest_bounce_breaker_after_a_crash(
        sink, settings, tailor_server, campaigns, profiles, messaging, monkeypatch):
    """The trip stamps the job's record cancelled; a crash before its runner settled the rest
    (here the settling write fails, so the job ends unsettled, as a kill leaves it) leaves them
    to the next start's resume, which read only `cancelled` and settled them `cancelled`, as
    if an operator had cancelled it. The record keeps why it stopped (`stopped_by`)."""
    users = await _eight_bouncing(sink, settings, tailor_server, campaigns, profiles,
                                  monkeypatch, "t")
    records = tailor_server.sends.records
    update = records.update

    def crashing(send_id, recipients):  # the runner's settling of the rest never lands
        if any(r.reason == "bounce_breaker" for r in recipients):
            raise OSError("killed")
        return update(send_id, recipients)
    records.update = crashing
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                                   user_ids=users))
    for _ in range(200):  # the job's task ends (with the error), within 10 s
        if started.send_id not in tailor_server.sends._running:
            break
        await asyncio.sleep(0.05)
    del records.update
    left = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=started.send_id))
    assert left.failed >= 2 and left.pending == 8 - left.failed and not left.done
    assert await tailor_server.sends.resume() == [started.send_id]  # the next start
    done = await until_done(messaging, started.send_id)
    assert dict(done.suppressed_by_reason) == {"bounce_breaker": 8 - done.failed}
    assert done.sent == 0 and sink.arrived == []
