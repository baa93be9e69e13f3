"""A SendCampaign whose caller gives up (its deadline) while the job is being stored: the job
stored runs all the same. Before, the call's cancellation skipped its start: the job stood
stored, pending, owned by this live process (so no other claimed it) until a restart, and a
repeat of its request id was answered that pending job (a real server, a real store)."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec
from .test_compose_deferred import settings  # noqa: F401

USERS = [f"gave-up-{i}" for i in range(100_000)]


def send(messaging, timeout: float):
    return messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=USERS, rate_per_second={"email": 1000},
        request_id="gave-up-1"), timeout=timeout)


async def test_a_send_stored_after_its_caller_gave_up_still_runs(tailor_server, campaigns,
                                                                 messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    with pytest.raises(grpc.aio.AioRpcError) as gave_up:
        await send(messaging, 0.2)
    assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    repeat = await send(messaging, 60)  # the stored job (or, stored meanwhile, this one's)
    deadline = time.time() + 30
    progress = repeat
    while progress.pending == len(USERS) and time.time() < deadline:
        await asyncio.sleep(0.2)
        progress = await messaging.GetSendProgress(mpb.GetSendProgressRequest(
            send_id=repeat.send_id))
    assert progress.pending < len(USERS)  # it runs (these users have no address: failed)
