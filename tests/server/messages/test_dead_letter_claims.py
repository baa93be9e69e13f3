"""RetryDeadLetter's claim on its letter holds for as long as the retry runs, however long the
relay takes, and a retry whose claim was taken over never writes its letter back over the new
claim (a real relay on loopback that answers DATA slowly, a real store)."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.messages.deadletters import DeadLetter
from server.messages.errors import DeadLetterBusy
from server.store.errors import StoreFull

from .conftest import email_spec, relayed
from .test_send_campaign import audience


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=1)


async def a_dead_letter(sink, campaigns, profiles, messaging, user: str = "dl",
                        purpose: str = "") -> mpb.DeadLetter:
    """The dead letter of `user`'s message in a `purpose` campaign, refused by the relay (554);
    the relay takes the address afterwards."""
    spec = email_spec()
    if purpose:
        spec.purpose = purpose
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await audience(profiles, [user])
    sink.rcpt_replies[f"{user}@example.com"] = ["554 5.7.1 rejected by policy"]
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id=user, deliver=True))
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    sink.rcpt_replies[f"{user}@example.com"] = ["250 OK"]
    return letter


async def test_a_retry_slower_than_its_claim_keeps_the_claim_and_the_letter_goes_once(
        tailor_server, sink, campaigns, profiles, messaging):
    """The claim lapsed after a fixed time (every attempt timing out, plus a minute), while a
    retry can wait longer than that (behind the shared SMTP connection, a slow relay): a second
    retry then claimed the lapsed letter and sent it again. The claim is renewed while the
    retry runs."""
    letter = await a_dead_letter(sink, campaigns, profiles, messaging)
    tailor_server.delivery.claim_seconds = 1.0  # the relay takes three times as long
    sink.delay_data = 3.0
    first = asyncio.ensure_future(messaging.RetryDeadLetter(
        mpb.RetryDeadLetterRequest(id=letter.id), timeout=30))
    await asyncio.sleep(1.8)  # the first retry is still waiting for its 250
    assert not first.done()
    with pytest.raises(grpc.RpcError) as err:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "being retried" in err.value.details()
    await first
    assert sink.message_ids == [f"<{letter.decision_id}@tailor.invalid>"]  # the one retry
    assert (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters == []


async def test_a_retry_whose_claim_was_taken_over_does_not_write_its_letter_back(tailor_server):
    """A retry that lost its claim (its worker stalled past it) wrote the letter back
    unclaimed when it failed, so while the second retry was still sending, a third could claim
    and send it too. Only the claim's holder writes the letter back."""
    dead = tailor_server.delivery.dead
    letter_id = await asyncio.to_thread(dead.add, DeadLetter(
        "email", "mail", "dec-1", "claimer", "c@example.com", "bytes", "smtp 451", 1))
    now = time.time()
    stalled = await asyncio.to_thread(dead.claim, letter_id, now + 1.0, now)
    later = now + 5.0  # the stalled retry's claim lapsed; another retry claims the letter
    second = await asyncio.to_thread(dead.claim, letter_id, later + 60.0, later)
    stalled.reason = "smtp 421"
    await asyncio.to_thread(dead.release, stalled)  # the stalled retry fails at last
    with pytest.raises(DeadLetterBusy):  # the second retry still holds it
        await asyncio.to_thread(dead.claim, letter_id, later + 61.0, later + 1.0)
    kept = await asyncio.to_thread(dead.get, letter_id)
    assert (kept.reason, kept.claimed_until) == ("smtp 451", second.claimed_until)


async def test_a_retry_of_a_user_erased_after_the_claim_does_not_go(
        tailor_server, sink, campaigns, profiles, messaging):
    """A retry claims its letter, then asks the contact policy again; a user erased in between
    (the erasure drops the letter, not the retry's copy) has no profile, which for a
    transactional campaign was no refusal: the message went to the erased person. A stored
    message whose user has no profile any more does not go (`erased`)."""
    letter = await a_dead_letter(sink, campaigns, profiles, messaging, "tx", "transactional")
    chooser = tailor_server.campaigns
    get = chooser.get

    async def erased_meanwhile(campaign_id):  # the retry's purpose lookup, after its claim
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="tx"))
        return await get(campaign_id)

    chooser.get = erased_meanwhile
    try:
        with pytest.raises(grpc.RpcError) as err:
            await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    finally:
        del chooser.get
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "erased" in err.value.details()
    assert sink.message_ids == []


async def test_a_sent_letter_whose_drop_failed_is_not_sent_again_and_its_send_is_recorded(
        tailor_server, sink, campaigns, profiles, messaging):
    """A retry whose message went but whose drop then failed (a full store, a disk error)
    answered the error and skipped the `email_sent` event; once its claim lapsed the letter
    was an ordinary dead letter again, and the next RetryDeadLetter sent it a second time. The
    send is recorded first (by decision id), and a letter whose send is recorded never goes
    again: the next retry drops it."""
    letter = await a_dead_letter(sink, campaigns, profiles, messaging)
    dead = tailor_server.delivery.dead
    drop = dead.drop

    def failing(letter_id):
        raise StoreFull(1 << 20, 0)

    dead.drop = failing
    try:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id), timeout=30)
    finally:
        del dead.drop
    assert dead.drop == drop
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "email_sent"]
    assert [e.attributes["decision_id"] for e in events] == [letter.decision_id]
    kept = await asyncio.to_thread(dead.get, letter.id)  # still there: its drop failed
    await asyncio.to_thread(dead.release, kept)  # its claim lapsed
    await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id), timeout=30)
    assert sink.message_ids == [f"<{letter.decision_id}@tailor.invalid>"]  # once
    assert (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters == []
