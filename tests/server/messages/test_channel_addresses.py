"""A campaign of several channels delivered by Tailor (ComposeMessage with `deliver`,
SendCampaign) chooses among the channels the user has an address for: a user with an email
address and no push token is emailed, not chosen push and failed "no push token" (a real
relay on loopback, a real store)."""
import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done


def two_channels():
    spec = email_spec(title="Hi", body="Hello {{ first_name | default('there') }}")
    spec.channels.extend(["email", "push"])
    return spec


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=1)


async def opted_in(profiles, users):
    await audience(profiles, users)
    for u in users:
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="push",
                                                        opted_in=True, source="signup"))


async def test_a_message_goes_on_the_channel_the_user_has_an_address_for(
        sink, campaigns, profiles, messaging):
    """On main push (no token) was chosen about half the time: ComposeMessage answered
    FAILED_PRECONDITION after logging a contact, SendCampaign failed the user."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=two_channels()))
    users = [f"a{i}" for i in range(12)]
    await opted_in(profiles, users)
    for u in users[:6]:
        got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id=u, deliver=True))
        assert (got.channel, got.delivered) == ("email", True)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users[6:], rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed) == (6, 0), dict(done.failed_by_reason)
    assert sorted(r[0] for _, r, _ in sink.arrived) == sorted(f"{u}@example.com" for u in users)


async def test_a_message_is_never_composed_for_a_placement_channel(campaigns, profiles,
                                                                   messaging):
    """A campaign of an email and a web placement (`channels: [email, web]`): ChooseVariant
    may pick either, a message only email. On main ComposeMessage picked web about half the
    time and answered INTERNAL (no message parts for web), leaving its decision logged; a user
    who opted out of email was given web."""
    spec = email_spec()
    spec.channels.extend(["email", "web"])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await audience(profiles, ["w1"])
    for _ in range(8):
        got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                       user_id="w1"))
        assert (got.channel, got.suppressed, got.parts["subject"]) == ("email", False, "Hi W1")
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="w1", channel="email",
                                                    opted_in=False, source="test"))
    got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                   user_id="w1"))
    assert (got.suppressed, got.reason, got.channel) == (True, "no_consent", "email")
    with pytest.raises(grpc.RpcError) as err:  # on main: INTERNAL
        await messaging.PreviewMessage(mpb.PreviewMessageRequest(campaign_id="mail",
                                                                 channel="web"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "channel" in \
        err.value.details()


async def test_a_campaign_whose_first_channel_has_no_adapter_delivers_on_another(
        sink, campaigns, profiles, messaging):
    """`channel: push, channels: [push, email]` on a server with an SMTP relay and no push
    webhook: on main ComposeMessage(deliver) and SendCampaign were refused up front ("no push
    webhook configured") though every message could go by email."""
    spec = two_channels()
    spec.channel = "push"
    del spec.channels[:]
    spec.channels.extend(["push", "email"])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await opted_in(profiles, ["f1", "f2"])
    got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="f1", deliver=True))
    assert (got.channel, got.delivered) == ("email", True)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["f2"], rate_per_second={"email": 1000}))
    assert (await until_done(messaging, started.send_id)).sent == 1
    assert sorted(r[0] for _, r, _ in sink.arrived) == ["f1@example.com", "f2@example.com"]


async def test_a_request_id_of_a_decision_on_a_placement_is_refused_by_compose(
        campaigns, profiles, messaging):
    """A ComposeMessage reusing the request_id of a ChooseVariant (same caller, user and
    campaign) is answered that logged decision; one on the web placement has no message to
    render. Before, it answered INTERNAL (KeyError 'web' in the render); now FAILED_PRECONDITION
    naming the decision, and the decision stays logged (the ChooseVariant's caller has it)."""
    spec = email_spec()
    spec.channels.extend(["email", "web"])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await audience(profiles, ["w1"])
    for i in range(64):  # each channel about half the time
        rid = f"placement-{i}"
        chosen = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id="mail", user_id="w1", request_id=rid))
        if chosen.channel == "web":
            break
    assert chosen.channel == "web"
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                 user_id="w1", request_id=rid))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert chosen.decision_id in err.value.details() and "'web'" in err.value.details()
    again = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(
        campaign_id="mail", user_id="w1", request_id=rid))
    assert (again.decision_id, again.channel) == (chosen.decision_id, "web")


async def test_a_user_consenting_only_where_the_server_cannot_send_is_told_so(
        sink, campaigns, profiles, messaging):
    """`channels: [email, sms]` on a server with an SMTP relay and no SMS webhook. A user opted
    in to SMS alone was answered suppressed `no_consent` (on email), by ComposeMessage(deliver)
    and SendCampaign: a consent problem to whoever counts the reasons, though they consented;
    now `channel_unavailable`, on sms. A user who consented nowhere is still `no_consent`.
    ChooseVariant and a compose without deliver (their caller sends) still choose sms."""
    spec = email_spec()
    spec.channels.extend(["email", "sms"])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    for u in ("texter", "nobody"):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id=u, attributes={
            "email": f"{u}@example.com", "phone": "+447700900123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="texter", channel="sms",
                                                    opted_in=True, source="signup"))

    async def composed(user, deliver=True):
        got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id=user, deliver=deliver))
        return got.suppressed, got.reason, got.channel
    assert await composed("texter") == (True, "channel_unavailable", "sms")
    assert await composed("nobody") == (True, "no_consent", "email")
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["texter", "nobody"], rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id)
    assert dict(done.suppressed_by_reason) == {"channel_unavailable": 1, "no_consent": 1}
    assert await composed("texter", deliver=False) == (False, "", "sms")
    chosen = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="mail",
                                                                    user_id="texter"))
    assert (chosen.suppressed, chosen.reason, chosen.channel) == (False, "", "sms")
    assert sink.arrived == []
