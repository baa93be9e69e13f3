"""Both clients leave retries of UNAVAILABLE to gRPC's service config (`clients.retry`): a real
gRPC server whose Ping refuses the first calls with UNAVAILABLE shows how many calls came."""
from __future__ import annotations

import asyncio
import json
from concurrent import futures
from functools import partial

import grpc
import pytest

from clients import RetryPolicy, TailorClient, TailorError
from clients.aio import AsyncTailorClient
from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import campaign_pb2_grpc as camp_grpc
from protos.tailor.v1 import diagnostics_pb2 as pb
from protos.tailor.v1 import diagnostics_pb2_grpc as pb_grpc
from tests.clients.proxy import LosingProxy
from tests.conftest import serving


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


@pytest.fixture
async def losing_proxy(settings):
    """(proxy, server): a real server serving the demo bundle behind a `LosingProxy`."""
    async with serving(settings) as (server, _):
        proxy = LosingProxy(server.port)
        yield proxy, server
        proxy.close()


async def _lost(proxy: LosingProxy, call, *args) -> TailorError:
    """The error of `call(*args)` made through `proxy` with its answer lost."""
    proxy.lose_next()
    with pytest.raises(TailorError) as err:
        await asyncio.to_thread(call, *args)
    return err.value


async def test_a_rollback_whose_answer_was_lost_is_not_made_again(losing_proxy, second_bundle,
                                                                   demo_manifest):
    """A second Rollback is not the same call (it went back to the version the first left,
    now one version further back): retried by the channel, the rollback undid itself and
    answered OK."""
    proxy, _ = losing_proxy
    with TailorClient(proxy.target, timeout=30) as client:
        await asyncio.to_thread(client.push_bundle, second_bundle)
        err = await _lost(proxy, client.rollback)
        status = await asyncio.to_thread(client.model_status)
    assert err.code == grpc.StatusCode.UNAVAILABLE
    assert status.active.version == demo_manifest["version"]


async def test_a_canary_promoted_or_a_campaign_created_is_not_answered_as_refused(
        losing_proxy, second_bundle):
    """Retried after its answer was lost, a promotion was answered 'no canary is running' and a
    creation 'already exists': an error for what was done. Not retried, the caller is told the
    answer was lost (UNAVAILABLE) and can look."""
    proxy, _ = losing_proxy
    version = json.loads((second_bundle / "manifest.json").read_text())["version"]
    spec = {"campaign_id": "lost", "policy": "bernoulli_ts", "variants": [{"id": "a"}, {"id": "b"}]}
    with TailorClient(proxy.target, timeout=30) as client:
        await asyncio.to_thread(partial(client.push_bundle, second_bundle, canary_percent=10))
        promoted = await _lost(proxy, client.promote_canary)
        status = await asyncio.to_thread(client.model_status)
        created = await _lost(proxy, client.create_campaign, spec)
        campaigns = await asyncio.to_thread(lambda: list(client.list_campaigns()))
    ids = [c.spec["campaign_id"] for c in campaigns]
    assert (promoted.code, created.code) == (grpc.StatusCode.UNAVAILABLE,) * 2
    assert status.active.version == version and ids == ["lost"]
