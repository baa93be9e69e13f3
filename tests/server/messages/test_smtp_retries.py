"""SMTP retries against a real relay on loopback (aiosmtpd): a 4xx reply or a relay that is down
is retried with backoff, a 5xx is not; what did not go is a dead letter, in ComposeMessage and
in SendCampaign."""
import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import messaging_pb2_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import free_port

from .conftest import email_spec
from .test_send_campaign import audience, until_done

GREYLIST = ["451 4.7.1 greylisted, try later", "451 4.7.1 greylisted, try later", "250 OK"]
NO_SUCH_USER = ["550 5.1.1 no such user"]
POLICY = ["554 5.7.1 rejected by policy"]


@pytest.fixture
def settings(settings, sink, request):
    """The sink's port, or (a test marked `relay_down`) a port nothing listens on."""
    down = request.node.get_closest_marker("relay_down") is not None
    return settings.model_copy(update={
        "smtp_host": "127.0.0.1", "smtp_port": free_port() if down else sink.controller.port,
        "smtp_security": "none", "delivery_attempts": 3, "delivery_backoff_seconds": 0.01})


async def letters(messaging):
    return list((await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))).letters)


async def test_a_greylisted_email_goes_on_the_third_attempt(sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["g1"])
    sink.rcpt_replies["g1@example.com"] = list(GREYLIST)
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="g1", deliver=True))
    assert msg.delivered
    assert sink.message_ids == [f"<{msg.decision_id}@tailor.invalid>"]  # once, after two 451s
    assert sink.rcpt_replies["g1@example.com"] == ["250 OK"]  # both 451s were consumed
    assert await letters(messaging) == []


async def test_a_5xx_is_not_retried_and_becomes_a_dead_letter(sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["bad"])
    sink.rcpt_replies["bad@example.com"] = list(POLICY)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="bad", deliver=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "smtp 554" in err.value.details()
    [letter] = await letters(messaging)
    assert (letter.channel, letter.reason, letter.attempts) == ("email", "smtp 554", 1)
    listed = await profiles.CheckSuppression(ppb.SuppressionAddress(email="bad@example.com"))
    assert not listed.suppressed  # a policy's refusal says nothing of the address
    sink.rcpt_replies["bad@example.com"] = ["250 OK"]  # the relay takes it now
    await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert sink.message_ids == [f"<{letter.decision_id}@tailor.invalid>"]
    assert await letters(messaging) == []


async def test_a_hard_bounce_at_the_relay_lists_the_address(sink, campaigns, profiles, messaging):
    """550 5.1.1 at RCPT is the bounce the provider would report later: the address goes on the
    suppression list and the user's next message is suppressed, not mailed to the dead
    mailbox again (it was, every campaign, before)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["gone"])
    sink.rcpt_replies["gone@example.com"] = list(NO_SUCH_USER)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="gone", deliver=True))
    assert "smtp 550" in err.value.details()
    [letter] = await letters(messaging)
    assert letter.reason == "smtp 550"  # kept, as any refused message
    listed = await profiles.CheckSuppression(ppb.SuppressionAddress(email="gone@example.com"))
    assert (listed.suppressed, listed.reason) == (True, "bounce")
    profile = await profiles.GetProfile(ppb.GetProfileRequest(user_id="gone"))
    assert [e.event_id for e in profile.events if e.type == "email_bounce"] == [
        f"tailor:email_bounce-{letter.decision_id}"]  # the id a provider's report of it also gets
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="gone", deliver=True))
    assert (again.suppressed, again.reason, again.delivered) == (True, "suppressed_address", False)
    assert sink.arrived == []


async def test_send_campaign_retries_transient_and_settles_permanent_failures(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = ["a", "grey", "gone", "b"]
    await audience(profiles, users)
    sink.rcpt_replies["grey@example.com"] = list(GREYLIST)
    sink.rcpt_replies["gone@example.com"] = list(NO_SUCH_USER)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 200}))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed, done.pending) == (3, 1, 0)
    assert dict(done.failed_by_reason) == {"smtp 550": 1}
    assert sorted(r[0] for _, r, _ in sink.arrived) == [
        "a@example.com", "b@example.com", "grey@example.com"]
    [letter] = await letters(messaging)
    assert (letter.reason, letter.attempts, letter.campaign_id) == ("smtp 550", 1, "mail")


@pytest.mark.relay_down
async def test_a_relay_that_is_down_is_retried_then_unavailable(campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d1"])
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="d1", deliver=True))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    [letter] = await letters(messaging)
    assert letter.attempts == 3 and letter.reason.startswith("smtp SMTPConnect")


@pytest.mark.relay_down
async def test_a_user_erased_between_attempts_leaves_no_dead_letter(
        tailor_server, campaigns, profiles, messaging):
    """A message that did not go is kept as a dead letter, written after the last attempt: for
    a user erased between the attempts (the erasure drops their letters), the letter was
    written after the erasure, sealed under a new key, and kept their address and message for
    good."""
    import asyncio

    from protos.tailor.v1 import profile_pb2 as ppb
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d2"])
    tailor_server.delivery.retry.base = 1.0  # a second between the attempts
    composing = asyncio.ensure_future(messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="d2", deliver=True), timeout=30))
    await asyncio.sleep(0.5)
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="d2"))
    with pytest.raises(grpc.RpcError) as err:
        await composing
    # The attempt after the erasure is not made (test_retry_recheck.py): refused, not unavailable.
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "erased" in err.value.details()
    assert await letters(messaging) == []


@pytest.mark.relay_down
async def test_the_client_runs_a_retry_of_a_dead_letter_once(tailor_server, campaigns, profiles,
                                                             messaging):
    """The clients let gRPC retry UNAVAILABLE, which also repeated calls the server answered
    UNAVAILABLE because the relay was down: one RetryDeadLetter ran four times (its attempts
    added up four times over). RetryDeadLetter and SendCampaign, which no key dedupes, are not
    retried by the clients."""
    import asyncio

    from clients import TailorClient, TailorError
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d3"])
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="d3", deliver=True))
    [letter] = await letters(messaging)
    assert letter.attempts == 3

    def retry():
        with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=20) as client:
            with pytest.raises(TailorError) as err:
                client.retry_dead_letter(letter.id)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
    await asyncio.to_thread(retry)
    [letter] = await letters(messaging)
    assert letter.attempts == 6  # one RetryDeadLetter: its three attempts


@pytest.mark.relay_down
async def test_a_compose_retried_by_the_channel_makes_one_dead_letter(tailor_server, campaigns,
                                                                      profiles):
    """A ComposeMessage with `deliver` answered UNAVAILABLE (the relay down, a dead letter
    kept) is repeated, with its request_id, by a channel that retries UNAVAILABLE (the clients'
    `channel_options`): each repeat made its attempts again and kept another dead letter of the
    same decision (four in all; retrying them all sent the message four times). A repeat is
    answered the first delivery's outcome."""
    from clients.retry import RetryPolicy, channel_options
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["rp"])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tailor_server.port}",
                                         options=channel_options(RetryPolicy(), 1 << 22)) as ch:
        retrying = messaging_pb2_grpc.MessagingServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            await retrying.ComposeMessage(mpb.ComposeMessageRequest(
                campaign_id="mail", user_id="rp", deliver=True, request_id="once"), timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        [letter] = await letters(retrying)
    assert letter.attempts == 3
