"""Concurrent ComposeMessage calls with `deliver` for one user, spread over the two workers of
`python -m server --workers 2`, against a cap of one push a day: exactly one push reaches the
provider (a real aiohttp provider on loopback), as for ChooseVariant
(tests/server/test_contact.py, `test_a_cap_of_one_a_day_holds_under_concurrent_calls_across_two_workers`)."""
import asyncio
import base64

import grpc
import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .provider import Provider

DAY = 86400.0
CALLS, CHANNELS = 16, 8


@pytest_asyncio.fixture
async def provider():
    p = Provider()
    p.delay = 0.2  # both workers' calls are in flight together
    await p.start()
    yield p
    await p.stop()


async def _compose_many(target: str) -> list:
    """`CALLS` concurrent calls over `CHANNELS` connections (spread over the workers)."""
    chans = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(CHANNELS)]
    try:
        stubs = [messaging_pb2_grpc.MessagingServiceStub(c) for c in chans]
        request = mpb.ComposeMessageRequest(campaign_id="capped", user_id="u1", deliver=True)
        return await asyncio.gather(*(stubs[i % CHANNELS].ComposeMessage(request, timeout=60)
                                      for i in range(CALLS)))
    finally:
        for c in chans:
            await c.close()


async def test_a_push_cap_of_one_holds_for_concurrent_deliveries_across_two_workers(
        server_process, tmp_path, demo_bundle, provider):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "delivery-webhook.keys").write_text(f"k1:{base64.b64encode(b'k' * 32).decode()}\n")
    env = {"TAILOR_LMDB_SYNC": "false", "TAILOR_SECRETS_DIR": str(secrets),
           "TAILOR_PUBLIC_URL": "http://127.0.0.1:9", "TAILOR_PUSH_WEBHOOK_URL": provider.url("push")}
    server = await asyncio.to_thread(server_process, tmp_path / "data", bundle=demo_bundle,
                                     workers=2, env=env)
    async with grpc.aio.insecure_channel(server.target) as ch:
        await campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(cpb.CreateCampaignRequest(
            spec=cpb.CampaignSpec(
                campaign_id="capped", channel="push", policy="fixed",
                variants=[cpb.Variant(id="p", content={"title": "Hi", "body": "news"})],
                frequency_caps=[cpb.FrequencyCap(channel="push", max=1, window_seconds=DAY)])),
            timeout=30)
        await profile_pb2_grpc.ProfileServiceStub(ch).UpsertAttributes(
            ppb.UpsertAttributesRequest(user_id="u1", attributes={"push_token": "tok-1"}),
            timeout=30)
    got = await _compose_many(server.target)
    delivered = [m for m in got if m.delivered]
    assert len(delivered) == 1, [(m.delivered, m.reason) for m in got]
    assert {m.reason for m in got if not m.delivered} == {"frequency_cap"}
    await asyncio.sleep(0.5)
    assert [r["json"]["id"] for r in provider.requests] == [delivered[0].decision_id]
