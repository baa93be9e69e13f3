"""Both clients leave retries of UNAVAILABLE to gRPC's service config (`clients.retry`): a real
gRPC server whose Ping refuses the first calls with UNAVAILABLE shows how many calls came."""
from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import pytest

from clients import RetryPolicy, TailorClient, TailorError
from clients.aio import AsyncTailorClient
from protos.tailor.v1 import diagnostics_pb2 as pb
from protos.tailor.v1 import diagnostics_pb2_grpc as pb_grpc


class _Flaky(pb_grpc.DiagnosticsServiceServicer):
    """Ping answers UNAVAILABLE `failures` times, then OK (INVALID_ARGUMENT with `code`)."""

    def __init__(self):
        self.failures, self.calls, self.code = 0, 0, grpc.StatusCode.UNAVAILABLE

    def Ping(self, request, context):
        self.calls += 1
        if self.calls <= self.failures:
            context.abort(self.code, "not now")
        return pb.PingResponse()


@pytest.fixture
def flaky():
    servicer = _Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_DiagnosticsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_the_blocking_client_retries_unavailable_up_to_the_policy(flaky):
    servicer, target = flaky
    servicer.failures = 3
    with TailorClient(target, timeout=10) as client:
        client.ping()  # 3 refusals and the 4th attempt: RetryPolicy().attempts == 4
    assert servicer.calls == 4
    servicer.calls, servicer.failures = 0, 4
    with TailorClient(target, timeout=10) as client, pytest.raises(TailorError) as err:
        client.ping()
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and servicer.calls == 4


def test_other_codes_and_a_one_attempt_policy_are_not_retried(flaky):
    servicer, target = flaky
    servicer.failures, servicer.code = 1, grpc.StatusCode.INVALID_ARGUMENT
    with TailorClient(target, timeout=10) as client, pytest.raises(TailorError):
        client.ping()
    assert servicer.calls == 1
    servicer.calls, servicer.code = 0, grpc.StatusCode.UNAVAILABLE
    with TailorClient(target, timeout=10, retry=RetryPolicy(attempts=1)) as client, \
            pytest.raises(TailorError):
        client.ping()
    assert servicer.calls == 1


def test_the_asyncio_client_retries_too(flaky):
    servicer, target = flaky
    servicer.failures = 2

    async def ping():
        async with AsyncTailorClient(target, timeout=10) as client:
            await client.ping()
    asyncio.run(ping())
    assert servicer.calls == 3
