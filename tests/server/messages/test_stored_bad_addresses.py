"""Messages a Tailor from before the address rules stored (cad5ad2) to an address the email
adapter no longer carries: `Ann@Example.ORG.` (a trailing dot: lenient relays deliver it to
ann@example.org, while the suppression list holds that spelling apart). Refused when composed
now (`address_of`), they were still handed to the relay when they went from the store: a dead
letter retried, a SendCampaign recipient composed before the upgrade and resumed after it, so
a complaint's listing of ann@example.org did not stop them. They are held against the same
rule as the contact policy's refusals, just before they go: kept (or settled) with the reason,
never handed over."""
import asyncio
import time

import grpc
import pytest

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1.campaign_pb2_grpc import CampaignServiceStub
from protos.tailor.v1.messaging_pb2_grpc import MessagingServiceStub
from protos.tailor.v1.profile_pb2_grpc import ProfileServiceStub
from server.messages.deadletters import DeadLetter
from tests.conftest import free_port, serving

from .conftest import email_spec, opt_in, relayed
from .test_send_campaign import audience, until_done
from .test_send_erasure import ready

OLD = "Ann@Example.ORG."


@pytest.fixture
def sink():
    with SmtpSink(free_port(), hold_mail_at=1) as s:  # the second message stalls at MAIL FROM
        yield s


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, send_connections=1, delivery_attempts=1)


async def test_a_dead_letter_kept_to_a_trailing_dot_domain_is_not_retried_to_the_relay(
        tailor_server, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="ann", attributes={"email": "ann@example.org"}))
    await opt_in(profiles, "ann")
    await profiles.AddSuppression(ppb.AddSuppressionRequest(
        address=ppb.SuppressionAddress(email="ann@example.org"), reason="complaint"))
    sink.release()  # no hold here
    letter = tailor_server.delivery.dead.add(DeadLetter(
        "email", "mail", "d-old", "ann", OLD, f"To: {OLD}\r\nSubject: hi\r\n\r\nhello\r\n",
        "smtp 451", 4))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "bad email address" in err.value.details(), err.value.details()
    assert OLD.lower() not in err.value.details().lower()
    assert sink.arrived == []
    kept = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    assert [(d.id, d.reason) for d in kept] == [(letter, "bad email address")]


async def test_a_send_record_composed_to_a_trailing_dot_domain_is_settled_not_handed_over(
        settings, sink):
    """r2's message is composed and waiting (r1 holds the one connection) when its record is
    given the address a Tailor from before the rule composed it to; the server stops, r2's
    complaint lists r2@example.com, and the next start resumes the job, as after an upgrade."""
    users = ["r0", "r1", "r2"]
    async with serving(settings) as (server, ch):
        campaigns, profiles = CampaignServiceStub(ch), ProfileServiceStub(ch)
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
        await audience(profiles, users)
        started = await MessagingServiceStub(ch).SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}))
        assert await asyncio.to_thread(sink.holding.wait, 30), "the sink never reached the hold"
        deadline = time.time() + 10
        while not ready(server, started.send_id, "r2") and time.time() < deadline:
            await asyncio.sleep(0.05)
        held = [r for r in server.sends.records.recipients(started.send_id) if r.user == "r2"]
        assert [r.state for r in held] == ["ready"]
        held[0].message["to"] = "R2@Example.COM."
        server.sends.records.update(started.send_id, held)
        await profiles.AddSuppression(ppb.AddSuppressionRequest(
            address=ppb.SuppressionAddress(email="r2@example.com"), reason="complaint"))
    sink.release()
    async with serving(settings) as (server, ch):
        done = await until_done(MessagingServiceStub(ch), started.send_id)
    assert dict(done.suppressed_by_reason) == {"bad email address": 1}, done
    assert "r2@example.com" not in [a.lower() for _, r, _ in sink.arrived for a in r]
