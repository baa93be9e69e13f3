"""A suppressed mailbox is not reached through a spelling the list does not fold but a relay
does: a domain with a trailing dot (`ann@example.org.`, the DNS root, which lenient relays
strip and deliver to ann@example.org) or an empty label (`a@example..org`). SMTP's envelope
grammar has neither (RFC 5321 Domain: sub-domain *("." sub-domain)), so such an attribute is
no address the email adapter carries: refused before any relay sees it, as a space or a line
break is. (The relay here, aiosmtpd, is strict: it refuses such an RCPT with 553, so on main
the message reached RCPT and left a dead letter holding the address; a lenient relay took it.)
UpsertAttributes refuses such a spelling now (the send's rule, `labelled_domain`); one a Tailor
from before that stored is still refused at the send."""
import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, opt_in, relayed, stored_attributes

SPELLINGS = ["Ann@Example.ORG.", "ann@example..org", "ann@.example.org"]


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_a_suppressed_mailbox_is_not_mailed_through_a_domain_spelled_with_extra_dots(
        tailor_server, sink, campaigns, profiles, messaging, spelling):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    with pytest.raises(grpc.RpcError) as err:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="ann", attributes={"email": spelling}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await stored_attributes(tailor_server, "ann", email=spelling)  # as a Tailor before the rule
    await opt_in(profiles, "ann")
    await profiles.AddSuppression(ppb.AddSuppressionRequest(
        address=ppb.SuppressionAddress(email="ann@example.org"), reason="complaint"))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="ann", deliver=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "`email` attribute is not an address the email adapter can carry" in err.value.details()
    assert spelling.lower() not in err.value.details().lower()
    assert sink.arrived == []
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))
    assert list(letters.letters) == []  # never handed to the relay


async def test_an_ordinary_domain_still_goes(sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="bob", attributes={"email": "Bob.Q+news@mail.example.co.uk"}))
    await opt_in(profiles, "bob")
    got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="bob", deliver=True))
    assert got.delivered and [r for _, r, _ in sink.arrived] == [["Bob.Q+news@mail.example.co.uk"]]
