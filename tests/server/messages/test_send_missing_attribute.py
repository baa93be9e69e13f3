"""A template naming a profile attribute without a default (`{{ first_name }}`) is accepted at
CreateCampaign (the context holds the name) and cannot render for a user without it: in a
SendCampaign that recipient alone fails, counted under a reason that says what to fix (variant,
part, line, name; never the user's data), the others are sent and the job ends (a real relay on
loopback)."""
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


async def test_recipients_without_the_attribute_fail_with_what_to_fix(sink, campaigns, profiles,
                                                                      messaging):
    """The failure was counted as the bare class name ({'RenderFailed': 10}): nothing said
    which template name failed, for which variant and part."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(
        subject="Hi {{ first_name }}", text="Hello {{ first_name }} {{ unsubscribe_url }}")))
    users = [f"u{i}" for i in range(100)]
    await audience(profiles, users[10:])
    for u in users[:10]:  # an address and consent, no first_name
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=u, attributes={"email": f"{u}@example.com"}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="email",
                                                        opted_in=True, source="signup"))
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id, 60)
    assert (done.total, done.sent, done.failed, done.pending) == (100, 90, 10, 0)
    assert dict(done.failed_by_reason) == {"RenderFailed: variant 'v1', part 'subject', "
                                           "line 1: UndefinedError: 'first_name' is undefined": 10}
    assert sorted(r[0] for _, r, _ in sink.arrived) == sorted(f"{u}@example.com"
                                                              for u in users[10:])
