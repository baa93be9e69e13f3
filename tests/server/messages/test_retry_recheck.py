"""A message waiting out a transient failure's backoff (a greylisting relay, a relay down) is
held against the contact policy again before each further attempt: a user who opted out, was
erased or had their address suppressed meanwhile is not sent it by the next attempt (a real
relay on loopback answering the first RCPT 451, a real store)."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done

BACKOFF = 1.5
GREYLIST = ["451 4.7.1 greylisted, try later", "250 OK"]
CHANGES = ["opted_out", "erased"]


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=2, delivery_backoff_seconds=BACKOFF)


async def first_attempt_failed(sink, address: str) -> None:
    """Once the relay answered `address`'s first RCPT (its 451)."""
    for _ in range(400):
        if len(sink.rcpt_replies[address]) == 1:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the first attempt never reached RCPT")


async def change(profiles, user: str, how: str) -> None:
    if how == "opted_out":
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email",
                                                        opted_in=False, source="preferences"))
    else:
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user))


async def sent_events(profiles) -> list[str]:
    return [e.user_id async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
            if e.type == "email_sent"]


@pytest.mark.parametrize("how", CHANGES)
async def test_compose_message_in_its_backoff_does_not_go_after_the_change(
        sink, campaigns, profiles, messaging, how):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r1"])
    sink.rcpt_replies["r1@example.com"] = list(GREYLIST)
    request = mpb.ComposeMessageRequest(campaign_id="mail", user_id="r1", deliver=True,
                                        request_id="req-1")
    call = asyncio.ensure_future(messaging.ComposeMessage(request, timeout=30))
    await first_attempt_failed(sink, "r1@example.com")
    await change(profiles, "r1", how)  # acknowledged while the message waits for its retry
    with pytest.raises(grpc.RpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("no_consent" if how == "opted_out" else "erased") in err.value.details()
    if how == "opted_out":  # the first attempt may have reached the relay: decision kept,
        with pytest.raises(grpc.RpcError) as again:  # and a repeat hears the same
            await messaging.ComposeMessage(request, timeout=30)
        assert again.value.details() == err.value.details()
        assert "1 earlier attempt(s) failed" in err.value.details()
    else:  # the erasure took the decision and its request with it: decided anew
        again = await messaging.ComposeMessage(request, timeout=30)
        assert again.suppressed and not again.delivered
    await asyncio.sleep(0.5)
    assert sink.arrived == [] and await sent_events(profiles) == []
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))
    assert list(letters.letters) == []  # refused, not failed: nothing kept to retry


class _Timed(list):
    """A relay's RCPT replies for one address noting when each was given (`answered`,
    monotonic: the sink's thread pops them as it answers)."""

    def __init__(self, replies):
        super().__init__(replies)
        self.answered: list[float] = []

    def pop(self, index=-1):
        self.answered.append(time.monotonic())
        return super().pop(index)


@pytest.mark.parametrize("how", CHANGES)
async def test_send_campaign_message_in_its_backoff_does_not_go_after_the_change(
        sink, campaigns, profiles, messaging, how):
    """The change must be acknowledged within the backoff (BACKOFF s from the relay's 451):
    under a machine's load it may come later, when the retry may rightly go; such a round
    says nothing, and another send (new users) is made, at most 3."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    for k in range(3):
        mine, other = f"r2-{k}", f"r3-{k}"
        await audience(profiles, [mine, other])
        replies = sink.rcpt_replies[f"{mine}@example.com"] = _Timed(GREYLIST)
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=[mine, other], rate_per_second={"email": 100}))
        await first_attempt_failed(sink, f"{mine}@example.com")
        await change(profiles, mine, how)
        if time.monotonic() - replies.answered[0] < BACKOFF:
            break
        await until_done(messaging, started.send_id)
    else:
        raise AssertionError(f"no change acknowledged within the {BACKOFF} s backoff in 3 sends")
    done = await until_done(messaging, started.send_id)
    assert [r for _, r, _ in sink.arrived if r[0] in (f"{mine}@example.com", f"{other}@example.com")] \
        == [[f"{other}@example.com"]]
    reason = "no_consent" if how == "opted_out" else "erased"
    assert (done.sent, done.suppressed, done.failed) == (1, 1, 0)
    assert dict(done.suppressed_by_reason) == {reason: 1}
    assert [u for u in await sent_events(profiles) if u in (mine, other)] == [other]


async def test_a_dead_letter_retried_does_not_go_after_an_opt_out_in_its_backoff(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r4"])
    sink.rcpt_replies["r4@example.com"] = ["554 5.7.1 rejected by policy"]
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="r4", deliver=True), timeout=30)
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))).letters
    sink.rcpt_replies["r4@example.com"] = list(GREYLIST)
    call = asyncio.ensure_future(messaging.RetryDeadLetter(
        mpb.RetryDeadLetterRequest(id=letter.id), timeout=30))
    await first_attempt_failed(sink, "r4@example.com")
    await change(profiles, "r4", "opted_out")
    with pytest.raises(grpc.RpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no_consent" in err.value.details()
    assert sink.arrived == [] and await sent_events(profiles) == []
    [kept] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))).letters
    assert (kept.id, kept.reason) == (letter.id, "no_consent")  # kept: an opt-in may allow it


@pytest.mark.parametrize("how", CHANGES)
async def test_compose_message_does_not_go_after_a_change_made_before_its_hand_over(
        tailor_server, sink, campaigns, profiles, messaging, how):
    """The decision allowed it; the change was acknowledged before the message was handed to
    the relay (here: 1 s between its flattening and its hand-over, as the request's delivery
    claim, a write, takes under load)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r5"])
    delivery, flattened = tailor_server.delivery, asyncio.Event()
    hand = delivery.hand

    async def slow(*args):
        flattened.set()
        await asyncio.sleep(1.0)
        return await hand(*args)
    delivery.hand = slow
    try:
        call = asyncio.ensure_future(messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="r5", deliver=True), timeout=30))
        await asyncio.wait_for(flattened.wait(), 10)
        await change(profiles, "r5", how)
        with pytest.raises(grpc.RpcError) as err:
            await call
    finally:
        del delivery.hand
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("no_consent" if how == "opted_out" else "erased") in err.value.details()
    assert sink.arrived == [] and await sent_events(profiles) == []
