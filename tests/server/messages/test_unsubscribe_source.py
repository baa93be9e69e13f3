"""A one-click unsubscribe's consent source fits `limits.consent_source_chars`, whatever the
campaign id's length, against a real server."""
import aiohttp
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, opt_in


@pytest.fixture
def settings(settings):
    """Consent sources of at most 40 characters (ids may have 128)."""
    return settings.model_copy(update={"limits": settings.limits.model_copy(
        update={"consent_source_chars": 40})})


async def test_a_long_campaign_id_does_not_make_the_unsubscribe_fail(campaigns, messaging,
                                                                    profiles):
    """The source is "one-click unsubscribe (<campaign id>)": past the limit it was refused
    (InvalidArgument: 400), so every reader of a campaign with a long id clicked Unsubscribe and
    stayed subscribed. It is cut to the limit."""
    cid = "spring-sale-2026-newsletter-variant-test"
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(cid)))
    await opt_in(profiles, "u-long")
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id=cid,
                                                                   user_id="u-long"))
    async with aiohttp.ClientSession() as http:
        async with http.post(msg.unsubscribe_url, data={"List-Unsubscribe": "One-Click"}) as res:
            assert res.status == 200
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="u-long"))
    assert not got.consent["email"].opted_in
    assert got.consent["email"].source == f"one-click unsubscribe ({cid})"[:40]
