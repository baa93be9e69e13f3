"""A carrier's 21610 reported late, and the server's own event ids, against one real server
sharing a loopback SMS provider (texts really go: their `sms_sent` events are the server's),
the signed delivery-events and inbound-SMS endpoints. Each test uses users and numbers of its
own."""
import asyncio
import base64
import itertools
import time

import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import serving

from .conftest import messages_settings
from .provider import Provider
from .test_delivery_reports import REPORT_KEY, report
from .test_sms_inbound import reply

_NUMBERS = itertools.count(500)


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory, demo_bundle):
    """(settings, campaigns, profiles, messaging) of a server texting through a loopback
    provider, with campaign "sms"."""
    provider = Provider()
    await provider.start()
    settings = messages_settings(tmp_path_factory.mktemp("late-reports"), demo_bundle)
    (settings.secrets_dir / "delivery-events.keys").write_text(
        f"r1:{base64.b64encode(REPORT_KEY).decode()}\n")
    (settings.secrets_dir / "delivery-webhook.keys").write_text(
        f"h1:{base64.b64encode(b'late-reports-hook-key').decode()}\n")
    settings = settings.model_copy(update={"sms_webhook_url": provider.url("sms")})
    try:
        async with serving(settings) as (_, channel):
            stubs = (campaign_pb2_grpc.CampaignServiceStub(channel),
                     profile_pb2_grpc.ProfileServiceStub(channel),
                     messaging_pb2_grpc.MessagingServiceStub(channel))
            await stubs[0].CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
                campaign_id="sms", channel="sms", policy="fixed",
                variants=[cpb.Variant(id="s", content={"text": "Hi"})])))
            yield (settings, *stubs)
    finally:
        await provider.stop()


async def _opted_in(profiles, prefix: str) -> tuple[str, str]:
    """A user of their own with a number of their own, opted in to sms: (user, number)."""
    n = next(_NUMBERS)
    user, number = f"{prefix}-{n}", f"+447700900{n}"
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"phone": number}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms", opted_in=True,
                                                    source="signup"))
    return user, number


async def texted(server) -> tuple[str, str, str]:
    """A user of their own, opted in to sms, texted once (the text went); (user, number,
    decision id)."""
    _, _, profiles, messaging = server
    user, number = await _opted_in(profiles, "late")
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="sms", user_id=user, deliver=True))
    assert msg.delivered
    return user, number, msg.decision_id


async def unsubscribes(profiles, user: str) -> list:
    return [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
            if e.type == "unsubscribe" and e.user_id == user]


async def sms_states(profiles, user: str) -> dict:
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
    return {c.purpose: (c.opted_in, c.source) for c in got.consents if c.channel == "sms"}


async def settled(profiles, user: str) -> dict:
    """`sms_states` once the detached shared opt-out had its time (nothing to wait for when
    there is none: a short bounded wait)."""
    await asyncio.sleep(0.3)
    return await sms_states(profiles, user)


async def test_a_21610_for_a_text_sent_before_the_users_start_closes_nothing(server):
    """The user texted STOP, then START; then the provider reports the 21610 of the text sent
    before both: stale, the number stays open for the user and the profile sharing it (the
    event recorded, closing nothing). Before, the late report closed marketing and
    transactional again (no time of its own: dated at its arrival, after the START). A 21610
    for a text sent after the START still closes."""
    settings, _, profiles, messaging = server
    user, number, decision = await texted(server)
    sharer = f"{user}-b"
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=sharer, attributes={"phone": number}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=sharer, channel="sms",
                                                    opted_in=True, source="signup"))
    await asyncio.sleep(1.0)  # the replies are dated by their signature's whole second
    assert await reply(settings, number, "STOP") == 200
    await asyncio.sleep(1.0)
    assert await reply(settings, number, "START") == 200
    started = [await sms_states(profiles, u) for u in (user, sharer)]
    assert started == [{"marketing": (True, "sms reply START"),
                        "transactional": (True, "sms reply START")}] * 2
    body = {"type": "bounce", "channel": "sms", "decision_id": decision, "address": number,
            "error_code": 21610}
    assert (await report(settings, body))[0] == 200
    assert [await settled(profiles, u) for u in (user, sharer)] == started
    [event] = await unsubscribes(profiles, user)  # recorded, for the record
    assert event.attributes["tailor.stop"] == "carrier" and "tailor.sent" in event.attributes
    later = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="sms", user_id=user, deliver=True))).decision_id
    assert (await report(settings, {**body, "decision_id": later}))[0] == 200
    closed = [await settled(profiles, u) for u in (user, sharer)]
    assert [{p: state[0] for p, state in c.items()} for c in closed] == [
        {"marketing": False, "transactional": False}] * 2


async def test_a_client_cannot_take_the_id_of_an_event_the_server_records(server):
    """A client tracking events under the ids the server gives its own events of a decision
    it saw (its `unsubscribe` of a 21610, its `sms_sent`) first: refused, naming the field.
    Before, they were taken, the 21610's event was then a duplicate, dropped: the user's
    marketing stayed open (the number's profiles closed by the carrier STOP alone, the user's
    own unsubscribe lost); a squatted `sms_sent` id made the send's record the client's."""
    settings, _, profiles, messaging = server
    user, number = await _opted_in(profiles, "squat")
    decision = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="sms", user_id=user))).decision_id  # composed, not sent yet
    from server.messages.deadletters import sent_event_id
    from server.messages.reports import opt_out_event
    ids = [opt_out_event("sms", "sms", decision, user, 0.0).event_id, sent_event_id(decision)]
    got = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[
        ppb.Event(event_id=eid, user_id=user, type="view", item_id="i1",
                  timestamp=time.time()) for eid in ids]))
    assert [(r.index, r.reason.startswith("event_id starts with 'tailor:'"))
            for r in got.rejected] == [(0, True), (1, True)]
    body = {"type": "bounce", "channel": "sms", "decision_id": decision, "address": number,
            "error_code": 21610}
    assert (await report(settings, body))[0] == 200
    assert (await sms_states(profiles, user))["marketing"] == (
        False, "sms carrier STOP (21610) event")
    assert len(await unsubscribes(profiles, user)) == 1


async def test_a_streamed_event_under_a_server_id_is_refused_and_the_rest_taken(server):
    """TrackEventStream judges each event as TrackEvents does (`Profiles.submit`): an event
    whose id starts 'tailor:' is rejected, indexed from the start of the stream, and the
    events around it are stored."""
    _, _, profiles, _ = server
    user, now = f"stream-{next(_NUMBERS)}", time.time()

    def event(eid: str) -> ppb.Event:
        return ppb.Event(event_id=eid, user_id=user, type="view", item_id="i1", timestamp=now)

    async def batches():
        yield ppb.TrackEventsRequest(events=[event(f"{user}-a")])
        yield ppb.TrackEventsRequest(events=[event(f"tailor:sent-{user}"), event(f"{user}-b")])
    got = await profiles.TrackEventStream(batches())
    assert [(r.index, r.reason.startswith("event_id starts with 'tailor:'"))
            for r in got.rejected] == [(1, True)] and got.accepted == 2
    view = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user, max_events=10))
    assert sorted(e.event_id for e in view.events) == [f"{user}-a", f"{user}-b"]
