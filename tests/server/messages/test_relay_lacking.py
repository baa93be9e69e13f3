"""A relay that lacks what Tailor's settings need of its session refuses a SendCampaign as it
starts, as one refusing the login does: no message could go. No AUTH while smtp_username is
set (a relay replaced by one without it, or one offering AUTH only over TLS to smtp_security
none); no STARTTLS while smtp_security is starttls (a real aiosmtpd relay offering neither,
on loopback)."""
import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, relayed
from .test_send_campaign import audience

LACKING = {"smtp no AUTH": {"smtp_username": "tailor", "smtp_password": "secret"},
           "smtp no STARTTLS": {"smtp_security": "starttls"}}


@pytest.fixture(params=sorted(LACKING))
def settings(settings, sink, request):
    return relayed(settings, sink, delivery_backoff_seconds=0.05, **LACKING[request.param])


async def test_a_relay_lacking_what_the_settings_need_starts_no_job(
        settings, sink, campaigns, profiles, messaging):
    [reason] = [r for r, more in LACKING.items()
                if all(getattr(settings, k) == v for k, v in more.items())]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b"])
    with pytest.raises(grpc.RpcError) as err:
        await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                             user_ids=["a", "b"]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert f"({reason})" in err.value.details()
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))
    assert list(letters.letters) == [] and sink.arrived == []
    stats = await campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id="mail"))
    assert sum(v.decisions for v in stats.variants) == 0
