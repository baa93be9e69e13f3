"""The streams anyone may open (Health/Watch) are bounded per process (`Limits.open_streams`):
each holds memory for as long as its caller likes, and none needs a credential."""
import asyncio

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import Settings
from server.limits import Limits
from tests.conftest import serving

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest_asyncio.fixture
async def health(tmp_path):
    """A HealthStub of a bare server that holds at most 3 open streams."""
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", limits=Limits(open_streams=3))
    async with serving(settings) as (_, channel):
        yield health_pb2_grpc.HealthStub(channel)


async def _first(call):
    try:
        return (await call.read()).status
    except grpc.RpcError as err:
        return err.code(), err.details()


async def test_health_watch_streams_past_the_bound_are_refused_and_check_stays_open(health):
    watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(3)]
    assert [await _first(w) for w in watches] == [SERVING] * 3
    code, details = await _first(health.Watch(health_pb2.HealthCheckRequest()))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "3 open, at most 3" in details and "Health/Watch" in details
    for _ in range(20):  # Check is not bounded: probes and load balancers use it
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == SERVING
    watches[0].cancel()  # a stream that ends frees its place
    for _ in range(200):
        again = health.Watch(health_pb2.HealthCheckRequest())
        if await _first(again) == SERVING:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("a Watch ended, yet no new one was let in")
    code, _ = await _first(health.Watch(health_pb2.HealthCheckRequest()))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # three open again
    for w in (*watches, again):
        w.cancel()
