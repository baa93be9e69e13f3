"""An opt-out by one-click link or STOP is honoured whatever `consent_defaults` says of the
channel, against a real server."""
import aiohttp
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec


@pytest.fixture
def settings(settings):
    """Email marketing needs no opt-in here (`none`: "not checked")."""
    return settings.model_copy(update={"consent_defaults": {**settings.consent_defaults,
                                                            "email": "none"}})


async def test_a_one_click_unsubscribe_stops_email_marketing_on_a_channel_needing_no_opt_in(
        campaigns, messaging, profiles):
    """With `consent_defaults` email `none`, a one-click POST recorded the opt-out and answered
    "You will receive no more marketing emails", but the decision path never read it: the
    next campaign mailed the user all the same (CAN-SPAM: an opt-out must be honoured)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="u-none", attributes={"email": "u@example.org"}))
    first = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                     user_id="u-none"))
    assert not first.suppressed
    async with aiohttp.ClientSession() as http:
        async with http.post(first.unsubscribe_url,
                             data={"List-Unsubscribe": "One-Click"}) as res:
            assert res.status == 200 and "no more marketing" in await res.text()
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                     user_id="u-none"))
    assert again.suppressed and again.reason == "no_consent"
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="u-none"))
    assert not got.consent["email"].opted_in
    other = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                     user_id="u-other"))
    assert not other.suppressed  # `none` still needs no opt-in
