"""A ComposeMessage refused by the contact policy before a retry (the user opted out during
the backoff) after an attempt that may have reached the relay keeps its decision, as a
SendCampaign recipient's is kept: here the relay took the message but answered after the
client's timeout, so the user has it. Before, the decision was withdrawn (no frequency cap,
stats or reward counted it) and the answer did not say an attempt had been made."""
import asyncio

import grpc
import pytest

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import free_port

from .conftest import email_spec, relayed
from .test_send_campaign import audience


@pytest.fixture
def sink():
    with SmtpSink(free_port(), delay_data=2.0) as s:  # takes the message, answers late
        yield s


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=2, delivery_backoff_seconds=1.5,
                   smtp_timeout_seconds=0.5)


async def decisions(campaigns) -> list[tuple[str, str]]:
    return [(r.user_id, r.status) async for r in campaigns.ExportDecisions(
        cpb.ExportDecisionsRequest(campaign_id="mail", include_pending=True))]


async def test_a_refusal_after_an_attempt_that_reached_the_relay_keeps_the_decision(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["r1"])
    request = mpb.ComposeMessageRequest(campaign_id="mail", user_id="r1", deliver=True,
                                        request_id="req-1")
    call = asyncio.ensure_future(messaging.ComposeMessage(request, timeout=30))
    await asyncio.to_thread(sink.wait_for, 1)  # the relay has it; its answer comes late
    await asyncio.sleep(0.7)  # past the client's 0.5 s timeout: in the backoff
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="r1", channel="email",
                                                    opted_in=False, source="preferences"))
    with pytest.raises(grpc.RpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "(no_consent); 1 earlier attempt(s) failed and may have reached the adapter" in \
        err.value.details()
    assert len(sink.arrived) == 1
    assert await decisions(campaigns) == [("r1", "pending")]
    with pytest.raises(grpc.RpcError) as again:  # a repeat hears the same, keeps it too
        await messaging.ComposeMessage(request, timeout=30)
    assert again.value.details() == err.value.details()
    assert await decisions(campaigns) == [("r1", "pending")] and len(sink.arrived) == 1
