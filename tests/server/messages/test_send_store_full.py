"""A SendCampaign whose job does not fit the store (a real LMDB map at its ceiling): the caller
still waiting is answered RESOURCE_EXHAUSTED naming the setting; one that gave up meanwhile
leaves a log line of Tailor's naming the send (before, only asyncio's "Task exception was never
retrieved" at the task's collection, if ever). Nothing of the job is kept either way."""
import asyncio
import gc
import logging

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec

USERS = [f"full-{i}" for i in range(60_000)]  # ~10 MB of sealed records: past a 4 MiB map


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"lmdb_map_size": 1 << 20, "lmdb_max_map_size": 4 << 20,
                                       "smtp_host": "127.0.0.1", "smtp_port": 9,
                                       "smtp_security": "none"})


def send(messaging, timeout: float, request_id: str):
    return messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=USERS, request_id=request_id), timeout=timeout)


async def test_a_caller_waiting_hears_the_store_is_full(tailor_server, campaigns, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await send(messaging, 60, "full-1")
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "TAILOR_LMDB_MAX_MAP_SIZE" in full.value.details()
    assert tailor_server.sends.records.unfinished() == []


async def test_a_caller_gone_leaves_a_log_line_naming_the_send(tailor_server, campaigns,
                                                               messaging, caplog):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    with caplog.at_level(logging.ERROR):
        call = send(messaging, 60, "full-2")
        while not tailor_server.sends._scheduling:  # its job is being stored: the caller goes
            await asyncio.sleep(0.001)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(300):  # the store's write, its growth to the ceiling, then its refusal
            if not tailor_server.sends._scheduling:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)
        gc.collect()
    ours = [r for r in caplog.records if r.name == "tailor.messages.send"]
    assert [r.getMessage() for r in ours] == [
        f"send {r.args[0]}: not stored (nothing of it kept), and its caller had given up: "
        "StoreFull" for r in ours]
    assert len(ours) == 1 and ours[0].args[0].startswith("send-")
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert tailor_server.sends.records.unfinished() == []
