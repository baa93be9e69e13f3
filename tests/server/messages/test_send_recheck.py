"""Consent and the suppression list are asked again just before a stored message goes: a user
who opts out, or whose address is listed (a complaint), after their message was composed gets
nothing from SendCampaign, nor from RetryDeadLetter; the message is settled (or kept) with the
reason."""
import asyncio
import time

import grpc
import pytest

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import free_port

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done
from .test_send_erasure import ready

USERS = ["r0", "r1", "r2", "r3"]


@pytest.fixture
def sink():
    with SmtpSink(free_port(), hold_mail_at=1) as s:  # the second message stalls at MAIL FROM
        yield s


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, send_connections=1, delivery_attempts=1)


async def opt_out_and_list(profiles, opted_out: str, listed: str) -> None:
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=opted_out, channel="email",
                                                    opted_in=False, source="unsubscribe"))
    await profiles.AddSuppression(ppb.AddSuppressionRequest(
        address=ppb.SuppressionAddress(email=f"{listed}@example.com"), reason="complaint"))


async def test_send_skips_those_who_opted_out_or_were_listed_after_composition(
        tailor_server, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, USERS)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=USERS, rate_per_second={"email": 1000}))
    assert await asyncio.to_thread(sink.holding.wait, 30), "the sink never reached the hold"
    deadline = time.time() + 10  # r1 is inside its transaction; r2 and r3 composed, waiting
    while (not all(ready(tailor_server, started.send_id, u) for u in ("r2", "r3"))
           and time.time() < deadline):
        await asyncio.sleep(0.05)
    assert all(ready(tailor_server, started.send_id, u) for u in ("r2", "r3"))
    await opt_out_and_list(profiles, "r2", "r3")
    sink.release()
    done = await until_done(messaging, started.send_id)
    assert (done.sent, dict(done.suppressed_by_reason), done.pending) == (
        2, {"no_consent": 1, "suppressed_address": 1}, 0)
    assert sorted(r[0] for _, r, _ in sink.arrived) == ["r0@example.com", "r1@example.com"]
    # nobody received r2's and r3's: their decisions are withdrawn (on main: pending, counted
    # toward the caps and closed with the default reward)
    pending = [r.user_id async for r in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True)) if r.status == "pending"]
    assert sorted(pending) == ["r0", "r1"]


@pytest.mark.parametrize("refused", ["no_consent", "suppressed_address"])
async def test_retry_dead_letter_refuses_what_the_policy_refuses_now_and_keeps_it(
        sink, campaigns, profiles, messaging, refused):
    sink.release()  # no hold here
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d", "other"])
    sink.rcpt_replies["d@example.com"] = ["554 5.7.1 rejected by policy", "250 OK"]
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="d",
                                                                 deliver=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # 554: a dead letter
    await opt_out_and_list(profiles, "d" if refused == "no_consent" else "other",
                           "d" if refused == "suppressed_address" else "other")
    letter = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters[0]
    with pytest.raises(grpc.RpcError) as err:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused in err.value.details() and sink.arrived == []
    kept = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    assert [(d.id, d.reason) for d in kept] == [(letter.id, refused)]
    with pytest.raises(grpc.RpcError) as err:  # the refused retry gave its claim back
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert refused in err.value.details() and "being retried" not in err.value.details()
