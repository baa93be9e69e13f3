"""ChooseVariant through a real server with the suppression list wired into the contact policy:
a suppressed address is refused with `suppressed_address` (even for transactional campaigns),
after consent; a campaign with several channels falls back to one whose address is not listed."""
import time

import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc


@pytest.fixture
def settings(tmp_path):
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets")


@pytest.fixture
def stubs(channel):
    return pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)


def spec(cid, channel="email", **kw) -> pb.CampaignSpec:
    return pb.CampaignSpec(campaign_id=cid, channel=channel, policy="bernoulli_ts",
                           variants=[pb.Variant(id="a"), pb.Variant(id="b")],
                           reward_window_seconds=3600, **kw)


async def user(profiles, user_id, consent=("email",), **attributes):
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id=user_id,
                                                                attributes=attributes))
    for channel in consent:
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user_id, channel=channel,
                                                        opted_in=True, source="test"))


async def choose(stub, cid, user_id) -> pb.ChooseVariantResponse:
    return await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id=cid, user_id=user_id))


async def test_a_suppressed_address_is_refused_with_its_reason(stubs):
    stub, profiles = stubs
    for cid, kw in (("promo", {}), ("receipt", {"purpose": "transactional"})):
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(cid, **kw)))
    await user(profiles, "ok", email="ok@example.org")
    await user(profiles, "listed", email="Listed@Example.org")
    await user(profiles, "bounced", email="bounced@example.org")
    await profiles.AddSuppression(ppb.AddSuppressionRequest(
        address=ppb.SuppressionAddress(email="listed@example.org"), reason="complaint"))
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="b1", user_id="bounced", type="email_bounce", timestamp=time.time() - 1)]))
    for cid in ("promo", "receipt"):
        ok = await choose(stub, cid, "ok")
        assert not ok.suppressed and ok.variant_id in ("a", "b")
        for user_id in ("listed", "bounced"):
            d = await choose(stub, cid, user_id)
            assert (d.suppressed, d.reason, d.variant_id, d.channel) == \
                (True, "suppressed_address", "", "email")
    # No consent comes first: an unconsented suppressed address reads no_consent.
    await user(profiles, "quiet", consent=(), email="listed@example.org")
    assert (await choose(stub, "promo", "quiet")).reason == "no_consent"
    stats = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="promo"))
    assert sum(v.decisions for v in stats.variants) == 1  # only "ok" was an exposure


async def test_a_listed_email_falls_back_to_sms_and_then_is_refused(stubs):
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("multi", channels=["email", "sms"])))
    await user(profiles, "both", consent=("email", "sms"), email="both@example.org",
               phone="+15550100111")
    await profiles.AddSuppression(ppb.AddSuppressionRequest(
        address=ppb.SuppressionAddress(email="both@example.org")))
    d = await choose(stub, "multi", "both")
    assert not d.suppressed and d.channel == "sms"
    await profiles.AddSuppression(ppb.AddSuppressionRequest(
        address=ppb.SuppressionAddress(phone="+1 555 010 0111")))
    d = await choose(stub, "multi", "both")
    assert (d.suppressed, d.reason, d.channel) == (True, "suppressed_address", "email")


async def test_listing_and_unlisting_a_user_already_decided_on_shows_at_once(stubs):
    """The decision path keeps an address's keys, never the list's answer: a user decided on
    before their address is listed is refused on the next call, and allowed once it is off."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("promo")))
    await user(profiles, "dana", email="dana@example.org")
    address = ppb.SuppressionAddress(email="DANA@example.org ")
    assert not (await choose(stub, "promo", "dana")).suppressed
    await profiles.AddSuppression(ppb.AddSuppressionRequest(address=address))
    assert (await choose(stub, "promo", "dana")).reason == "suppressed_address"
    assert (await profiles.RemoveSuppression(address)).removed
    assert not (await choose(stub, "promo", "dana")).suppressed
