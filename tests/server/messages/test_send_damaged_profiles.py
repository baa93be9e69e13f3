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
    users = await _sharing_the_number(profiles, texted)
    damaged = damage(tailor_server.store, "u-sms-2", "meta")
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert [await sms_consent(profiles, u) for u in (users[0], users[2])] == [False, False]
    assert stored(tailor_server.store, profile_meta_key("u-sms-2")) == damaged


async def test_a_stop_reaches_a_profile_whose_index_entry_is_damaged_by_its_keys_token(
        tailor_server, settings, texted, profiles):
    """A STOP from a number three profiles hold, one of whose entries in the address index
    (its id, sealed for it) is damaged: the entry's key holds the profile's token, so the
    STOP reaches it by that token, as an unnamed entry (fail safe: a STOP left unapplied would
    text someone who said STOP). Before, the lookup raised: the reply failed, nobody opted
    out."""
    from prometheus_client import REGISTRY

    from server.store.keys import address_entry_key
    from tests.server.test_damaged_contacts import damage_record
    users = await _sharing_the_number(profiles, texted)
    digest = tailor_server.phones.found("+447700900123")
    (key,) = [k for d in digest if tailor_server.store.get(
        "meta", k := address_entry_key("sms", d, "u-sms-2")) is not None]
    damage_record(tailor_server.store, "meta", key, first=False)
    labels = {"record": "address_entry", "use": "lookup"}
    before = REGISTRY.get_sample_value("tailor_records_damaged_total", labels) or 0.0
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert [await sms_consent(profiles, u) for u in users] == [False, False, False]
    assert REGISTRY.get_sample_value("tailor_records_damaged_total", labels) == before + 1


async def _sharing_the_number(profiles, texted: str) -> list[str]:
    """`texted` and two more profiles holding its number, opted in to sms: the users."""
    users = [texted, "u-sms-2", "u-sms-3"]
    for user in users[1:]:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"phone": "+447700900123"}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms",
                                                        opted_in=True, source="signup"))
    return users
