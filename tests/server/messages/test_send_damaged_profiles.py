"""SendCampaign and ComposeMessage beside a recipient whose profile meta record (attributes and
consent) is damaged (tests/server/test_damaged_profiles.py): that one is suppressed
`profile_damaged` (nobody can read whether they may be contacted, nor where), every other one
is sent to."""
import pytest

from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.store.keys import profile_meta_key
from tests.server.test_damaged_profiles import damage, stored

from .conftest import email_spec, relayed
from .test_send_campaign import audience, sent_beside
from .test_sms_inbound import reply, sms_consent
from .test_sms_inbound import texted as texted  # (a fixture)


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


async def test_a_send_suppresses_the_damaged_recipient_alone(tailor_server, sink, campaigns,
                                                             profiles, messaging):
    from protos.tailor.v1 import campaign_pb2 as cpb
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = [f"s{i}" for i in range(8)]
    await audience(profiles, users)
    damage(tailor_server.store, "s3", "meta")
    await sent_beside(messaging, sink, users, "s3", "profile_damaged")
    one = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="s3", deliver=True))
    assert (one.suppressed, one.reason) == (True, "profile_damaged")


async def test_a_stop_at_a_shared_number_opts_out_everyone_beside_a_damaged_meta(
        tailor_server, settings, texted, profiles):
    """An SMS STOP from a number three profiles hold opts out the two readable ones; the one
    whose meta record is damaged is left as it is (the change reads the profiles first: one
    damaged record failed the STOP of all: the reply 409, nobody opted out)."""
    users = [texted, "u-sms-2", "u-sms-3"]
    for user in users[1:]:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"phone": "+447700900123"}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms",
                                                        opted_in=True, source="signup"))
    damaged = damage(tailor_server.store, "u-sms-2", "meta")
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert [await sms_consent(profiles, u) for u in (users[0], users[2])] == [False, False]
    assert stored(tailor_server.store, profile_meta_key("u-sms-2")) == damaged
