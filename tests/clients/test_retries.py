"""Both clients leave retries of UNAVAILABLE to gRPC's service config (`clients.retry`): a real
gRPC server whose Ping refuses the first calls with UNAVAILABLE shows how many calls came."""
from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import pytest

from clients import RetryPolicy, TailorClient, TailorError
from clients.aio import AsyncTailorClient
from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import campaign_pb2_grpc as camp_grpc
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


class _FlakyChooser(camp_grpc.CampaignServiceServicer):
    """ChooseVariant answers UNAVAILABLE twice a call, recording each attempt's request id."""

    def __init__(self):
        self.ids: list[str] = []

    def ChooseVariant(self, request, context):
        self.ids.append(request.request_id)
        if len(self.ids) % 3:
            context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        return camp_pb.ChooseVariantResponse(decision_id=f"d{len(self.ids)}", arm=0)


def test_a_retried_choose_variant_repeats_its_request_id_and_a_new_call_has_its_own():
    servicer = _FlakyChooser()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    camp_grpc.add_CampaignServiceServicer_to_server(servicer, server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        with TailorClient(target, timeout=10) as client:
            client.choose_variant("c1", "ann")
            client.choose_variant("c1", "ann")

        async def choose():
            async with AsyncTailorClient(target, timeout=10) as client:
                await client.choose_variant("c1", "ann")
        asyncio.run(choose())
    finally:
        server.stop(None)
    calls = [servicer.ids[i:i + 3] for i in range(0, 9, 3)]
    assert len(servicer.ids) == 9 and all(len(set(c)) == 1 and c[0] for c in calls)
    assert len({c[0] for c in calls}) == 3
