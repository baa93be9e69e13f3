"""A relay that offers no AUTH while Tailor has a login to give (smtp_username set: a relay
replaced by one without AUTH, or one offering it only over TLS to smtp_security none) refuses
a SendCampaign as it starts, as one refusing the login does: no message could go (a real
aiosmtpd relay without AUTH on loopback)."""
import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, relayed
from .test_send_campaign import audience


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, smtp_username="tailor", smtp_password="secret",
                   delivery_backoff_seconds=0.05)


async def test_a_relay_offering_no_auth_to_a_login_starts_no_job(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b"])
    with pytest.raises(grpc.RpcError) as err:
        await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                             user_ids=["a", "b"]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert "smtp no AUTH" in err.value.details()
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))
    assert list(letters.letters) == [] and sink.arrived == []
    stats = await campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id="mail"))
    assert sum(v.decisions for v in stats.variants) == 0
