"""A relay that takes the connection and says nothing (a host whose SMTP hangs, a firewall
holding the handshake) does not hold a SendCampaign past its caller's deadline: the check
before the job gives up, and the job starts as before (its messages retry as they go)."""
import asyncio

import pytest
import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from tests.conftest import free_port

from .conftest import email_spec
from .test_send_campaign import audience


@pytest_asyncio.fixture
async def silent_port():
    held = []

    async def hold(reader, writer):  # never greets
        held.append(writer)
        await reader.read()

    port = free_port()
    server = await asyncio.start_server(hold, "127.0.0.1", port)
    yield port
    for w in held:
        w.close()
    server.close()


@pytest.fixture
def settings(settings, silent_port):
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": silent_port,
                                       "smtp_security": "none", "smtp_timeout_seconds": 10.0})


async def test_a_silent_relay_lets_the_job_start_within_the_clis_deadline(
        campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a"])
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["a"], request_id="r1"), timeout=5.0)  # the CLI's default
    assert started.send_id and started.total == 1
    await messaging.CancelSend(mpb.CancelSendRequest(send_id=started.send_id))
