"""A SendCampaign job under the shedding bound (`limits.batch_queue_seconds`): its decisions
and its templates' recommendations queue behind its own commits (up to `send_compose_ahead`
at once) and are never refused as overload: the job was accepted, and a recipient settled
failed `Overloaded` would never get its message."""
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from server.limits import Limits

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done

USERS = [f"o{i}" for i in range(120)]


@pytest.fixture
def settings(settings, sink):
    settings.limits = Limits(batch_queue_seconds=0.001)  # each decision commit takes longer
    return relayed(settings, sink, send_connections=1)


async def test_a_send_job_is_not_shed_for_its_own_queued_decisions(
        tailor_server, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, USERS)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=USERS, rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id, timeout=60)
    assert (done.sent, dict(done.failed_by_reason), done.pending) == (len(USERS), {}, 0)
