"""A ComposeMessage with `deliver` whose caller gives up mid-send (its deadline passes, it
cancels the call) still hands its message over, and the relay's answer is kept against its
request id: a repeat is answered that (delivered, or refused and why), never "whether it went
is not known", and nothing goes twice. A real server and a real relay (aiosmtpd) on loopback;
the stop test has a server of its own."""
import asyncio
import logging
import time

import grpc
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.messages.retry import Retry
from tests.conftest import free_port, serving

from .conftest import email_spec, relayed
from .test_send_campaign import audience


@pytest.fixture(scope="module")
def relay():
    with SmtpSink(free_port()) as sink:
        yield sink


@pytest.fixture(scope="module")
def module_settings(module_settings, relay):
    return relayed(module_settings, relay, delivery_attempts=1)


@pytest_asyncio.fixture(scope="module")
async def stubs(module_messages_server):
    """(server, messaging, profiles) of the module's server, with the "mail" campaign; each
    test has users (and a relay address) of its own."""
    server, channel = module_messages_server
    await campaign_pb2_grpc.CampaignServiceStub(channel).CreateCampaign(
        cpb.CreateCampaignRequest(spec=email_spec()))
    return (server, messaging_pb2_grpc.MessagingServiceStub(channel),
            profile_pb2_grpc.ProfileServiceStub(channel))


def compose(messaging, user: str, **call):
    return messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, deliver=True, request_id=f"req-{user}"), **call)


async def sent_to(profiles, user: str, within: float = 10.0) -> list[str]:
    """The decision ids of `user`'s `email_sent` events, once there is one (or `within` s)."""
    until = time.monotonic() + within
    while True:
        sent = [e.attributes["decision_id"] async for e in profiles.ExportEvents(
            ppb.ExportEventsRequest()) if e.type == "email_sent" and e.user_id == user]
        if sent or time.monotonic() > until:
            return sent
        await asyncio.sleep(0.1)


async def repeated(messaging, user: str, within: float = 10.0):
    """The repeat of `user`'s request, once the first call's hand-over ended (`within` s):
    its answer, or its RpcError raised."""
    until = time.monotonic() + within
    while True:
        try:
            return await compose(messaging, user, timeout=30)
        except grpc.RpcError as err:
            if "being delivered" not in (err.details() or "") or time.monotonic() > until:
                raise
        await asyncio.sleep(0.1)


def arrived_for(relay, user: str) -> list[str]:
    return [mid for _, rcpt, mid in relay.arrived if rcpt == [f"{user}@example.com"]]


async def until_arrived(relay, user: str, within: float = 10.0) -> None:
    until = time.monotonic() + within
    while not arrived_for(relay, user) and time.monotonic() < until:
        await asyncio.sleep(0.02)


async def test_a_deliver_whose_deadline_passed_mid_send_keeps_the_relays_answer(relay, stubs):
    """The caller's deadline passed while the relay held the message (its 250 on the way):
    before, the deadline cut the hand-over, and the repeat was answered that whether it went
    is not known (it had arrived). Now the hand-over ends, its sent event is recorded, and the
    repeat is answered delivered, without a second message."""
    _, messaging, profiles = stubs
    await audience(profiles, ["g1"])
    relay.delay_data = 1.5
    try:
        with pytest.raises(grpc.RpcError) as err:
            await compose(messaging, "g1", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        went = await sent_to(profiles, "g1")
    finally:
        relay.delay_data = 0.0
    assert len(went) == 1
    again = await repeated(messaging, "g1")
    assert again.delivered and again.decision_id == went[0]
    assert arrived_for(relay, "g1") == [f"<{went[0]}@tailor.invalid>"]
    assert await sent_to(profiles, "g1") == went


async def test_a_deliver_its_caller_cancelled_mid_send_still_goes_once(relay, stubs):
    _, messaging, profiles = stubs
    await audience(profiles, ["g2"])
    relay.delay_data = 1.0
    try:
        call = compose(messaging, "g2", timeout=30)
        await until_arrived(relay, "g2")  # the relay has it; its 250 comes in 1 s
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        went = await sent_to(profiles, "g2")
    finally:
        relay.delay_data = 0.0
    assert len(went) == 1
    again = await repeated(messaging, "g2")
    assert again.delivered and again.decision_id == went[0]
    assert arrived_for(relay, "g2") == [f"<{went[0]}@tailor.invalid>"]


async def test_a_refusal_after_the_caller_left_is_the_repeats_answer(relay, stubs):
    """The caller cancelled during a retry's backoff; the retry was refused (554): the repeat
    is answered that refusal with its reason (its dead letter kept), no attempt made again."""
    server, messaging, profiles = stubs
    await audience(profiles, ["g3"])
    address = "g3@example.com"
    relay.rcpt_replies[address] = ["451 4.7.1 try later", "554 5.7.1 rejected by policy",
                                   "250 OK"]
    retry, server.delivery.retry = server.delivery.retry, Retry(2, base=1.0)
    try:
        call = compose(messaging, "g3", timeout=30)
        await asyncio.sleep(0.5)  # its first attempt was refused for now: in the backoff
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        with pytest.raises(grpc.RpcError) as err:
            await repeated(messaging, "g3")  # once the second attempt was refused
    finally:
        server.delivery.retry = retry
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refused the message (smtp 554)" in err.value.details()
    assert relay.rcpt_replies[address] == ["250 OK"]  # two RCPTs: no third, none sent
    assert arrived_for(relay, "g3") == []


async def test_past_the_bound_a_caller_giving_up_cuts_its_hand_over(relay, stubs):
    """At most `limits.detached_deliveries` hand-overs run apart from their call (each holds
    its message): past it (0 here), a caller's deadline cuts its hand-over as before, and the
    repeat is answered that whether it went is not known, nothing sent again."""
    server, messaging, profiles = stubs
    await audience(profiles, ["g5"])
    handovers = server.delivery.handovers
    most, handovers.most, relay.delay_data = handovers.most, 0, 1.0
    try:
        with pytest.raises(grpc.RpcError) as err:
            await compose(messaging, "g5", timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        handovers.most, relay.delay_data = most, 0.0
    with pytest.raises(grpc.RpcError) as err:
        await repeated(messaging, "g5")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not known" in err.value.details()
    assert len(arrived_for(relay, "g5")) <= 1


async def letter_ids(messaging) -> set[str]:
    return {d.id for d in (await messaging.ListDeadLetters(
        mpb.ListDeadLettersRequest(limit=100))).letters}


async def test_a_dead_letter_retry_its_caller_cancelled_mid_send_goes_once(relay, stubs):
    """RetryDeadLetter's caller cancelled while the relay held the message: before, the retry
    was cut and its letter written back (no sent event), for the next retry to send it again
    (it had arrived: a second message). Now the retry ends: its sent event is recorded and
    its letter dropped."""
    _, messaging, profiles = stubs
    await audience(profiles, ["g6"])
    relay.rcpt_replies["g6@example.com"] = ["554 5.7.1 rejected by policy", "250 OK"]
    before = await letter_ids(messaging)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="g6", deliver=True))
    [letter] = [d for d in (await messaging.ListDeadLetters(
        mpb.ListDeadLettersRequest(limit=100))).letters if d.id not in before]
    relay.delay_data = 1.0
    try:
        call = messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id), timeout=30)
        await until_arrived(relay, "g6")  # the relay has it; its 250 comes in 1 s
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        went = await sent_to(profiles, "g6")
    finally:
        relay.delay_data = 0.0
    assert went == [letter.decision_id]
    until = time.monotonic() + 10
    while letter.id in await letter_ids(messaging) and time.monotonic() < until:
        await asyncio.sleep(0.1)  # dropped right after its event is recorded
    assert letter.id not in await letter_ids(messaging)
    assert arrived_for(relay, "g6") == [f"<{letter.decision_id}@tailor.invalid>"]


async def test_an_unexpected_error_after_the_caller_left_is_logged_with_its_traceback(
        relay, stubs, caplog):
    """An error that is no TailorError (a defect) raised by a hand-over whose caller had gone
    is logged as the rpc layer logs one a caller hears as INTERNAL: an error with its
    traceback (before: at info, its type's name alone, a defect hidden in the noise)."""
    server, messaging, profiles = stubs
    caplog.set_level(logging.INFO, logger="tailor.messages")
    await audience(profiles, ["g7"])
    events, handovers = server.delivery.events, server.delivery.handovers

    async def track(batch):
        raise RuntimeError("a defect after the send")

    relay.delay_data = 1.0
    try:
        call = compose(messaging, "g7", timeout=30)
        await until_arrived(relay, "g7")  # the relay has it; its 250 comes in 1 s
        events.track = track  # the sent event's record fails (once the caller left)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        until = time.monotonic() + 10
        while handovers._going and time.monotonic() < until:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0)  # its done callbacks
    finally:
        relay.delay_data = 0.0
        del events.track
    [record] = [r for r in caplog.records if r.name == "tailor.messages"
                and "caller had gone" in r.getMessage()]
    assert record.levelno == logging.ERROR and isinstance(record.exc_info[1], RuntimeError)


def sample(name: str) -> float:
    """`name`'s value in this process's registry: what a one-process server's /metrics serves."""
    return REGISTRY.get_sample_value(name) or 0.0


async def test_the_metrics_count_hand_overs_running_apart_and_those_at_the_bound(relay, stubs):
    """`tailor_detached_handovers` counts a hand-over running apart while it runs (its caller
    gone), `tailor_handovers_at_bound_total` one run as part of its call because the bound was
    reached (0 here). Before, no metric did: an SRE could not see the bound reached."""
    server, messaging, profiles = stubs
    await audience(profiles, ["g8", "g9"])
    handovers = server.delivery.handovers
    running, at_bound = sample("tailor_detached_handovers"), sample("tailor_handovers_at_bound_total")
    relay.delay_data = 1.0
    try:
        with pytest.raises(grpc.RpcError):
            await compose(messaging, "g8", timeout=0.3)
        assert sample("tailor_detached_handovers") == running + 1  # its 250 comes in 1 s
        assert await sent_to(profiles, "g8")
        most, handovers.most = handovers.most, 0
        try:
            with pytest.raises(grpc.RpcError):
                await compose(messaging, "g9", timeout=0.3)
        finally:
            handovers.most = most
    finally:
        relay.delay_data = 0.0
    assert sample("tailor_handovers_at_bound_total") == at_bound + 1
    until = time.monotonic() + 10
    while handovers._going and time.monotonic() < until:
        await asyncio.sleep(0.05)
    assert sample("tailor_detached_handovers") == running


async def test_a_stop_ends_a_hand_over_whose_caller_left_within_its_grace(settings, relay,
                                                                          caplog):
    """A relay that never answers DATA: the hand-over whose caller left is cut by the stop
    at the end of its grace, not waited for, and kept in doubt (as a call cut by it), which
    the stop logs (before, nothing did): the repeat, to the server started again, says
    whether it went is not known. Last in the
    module: its server installs its own store-id key in this process (`store.tokens.use_key`),
    under which the module's server no longer finds its users."""
    relay.hold_data_at = len(relay.arrived)  # the next message: kept, never answered
    settings = relayed(settings, relay, delivery_attempts=1)
    async with serving(settings) as (server, channel):
        messaging = messaging_pb2_grpc.MessagingServiceStub(channel)
        await campaign_pb2_grpc.CampaignServiceStub(channel).CreateCampaign(
            cpb.CreateCampaignRequest(spec=email_spec()))
        await audience(profile_pb2_grpc.ProfileServiceStub(channel), ["g4"])
        call = compose(messaging, "g4", timeout=30)
        await until_arrived(relay, "g4")
        call.cancel()
        started = time.monotonic()
        await asyncio.wait_for(server.stop(grace=0.5), 10)
        assert time.monotonic() - started < 5
    assert [r.getMessage()[:42] for r in caplog.records if r.name == "tailor.messages"
            and r.levelno == logging.WARNING] == ["the stop cut 1 hand-over(s) still going af"]
    async with serving(settings) as (_, channel):
        with pytest.raises(grpc.RpcError) as err:
            await compose(messaging_pb2_grpc.MessagingServiceStub(channel), "g4", timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not known" in err.value.details()
    assert len(arrived_for(relay, "g4")) == 1
