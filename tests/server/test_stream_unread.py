"""Server streams whose client stops reading (`rpc._Observed.written`): every streaming method
other than PlanCampaign (tested in test_plan_campaign) ends RESOURCE_EXHAUSTED once one reply
has waited `Limits.stream_unread_seconds` for the client to make room for it."""
import asyncio
import logging
import time

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.metrics import GRPC_HANDLED
from tests.server.test_plan_campaign import SMALL_WINDOW

EVENTS = 300
"""Events exported: ~25 KB of replies, far more than the client's 1 KB window."""


@pytest_asyncio.fixture(scope="module")
async def exporting(tmp_path_factory):
    """(server, stub) of a server with `stream_unread_seconds` = 0.3 and `EVENTS` events,
    shared by the module's tests (they only read)."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    tmp = tmp_path_factory.mktemp("unread")
    settings = Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp / "secrets", limits=Limits(stream_unread_seconds=0.3))
    async with serving(settings) as (server, ch):
        stub = pb_grpc.ProfileServiceStub(ch)
        ts = time.time() - 60
        reply = await stub.TrackEvents(pb.TrackEventsRequest(events=[
            pb.Event(event_id=f"x{i}", user_id="unread", type="view", timestamp=ts)
            for i in range(EVENTS)]))
        assert reply.accepted == EVENTS
        yield server, stub


async def test_an_export_whose_client_stopped_reading_ends_past_the_bound(exporting, caplog):
    """An export held its call (the snapshot's records read and not yet sent, a task) for as
    long as its client's connection lived once the client stopped reading: gRPC waits for room
    with no bound. Past `Limits.stream_unread_seconds` (0.3 s here) the export ends
    RESOURCE_EXHAUSTED naming the setting, and the events stay exportable."""
    server, stub = exporting
    caplog.set_level(logging.INFO, logger="tailor.errors")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=SMALL_WINDOW) as slow:
        call = pb_grpc.ProfileServiceStub(slow).ExportEvents(pb.ExportEventsRequest())
        got = [(await asyncio.wait_for(call.read(), 10)).event_id]
        deadline = time.monotonic() + 10  # reads no more until the server logs the cut
        while not any("ExportEvents -> RESOURCE_EXHAUSTED" in r.getMessage()
                      for r in caplog.records):
            assert time.monotonic() < deadline, "the export was never cut"
            await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while (event := await asyncio.wait_for(call.read(), 10)) != grpc.aio.EOF:
                got.append(event.event_id)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "stream_unread_seconds" in err.value.details()
    assert 0 < len(got) < EVENTS
    everything = [e.event_id async for e in stub.ExportEvents(pb.ExportEventsRequest(), timeout=30)]
    assert sorted(everything) == sorted(f"x{i}" for i in range(EVENTS))
    assert everything[:len(got)] == got  # the replies taken are the export's first ones


def _ended(code: str) -> float:
    """ExportEvents calls counted ended with `code` (`_Ending`: once the handler returned)."""
    return GRPC_HANDLED.labels("server_stream", "tailor.v1.ProfileService", "ExportEvents",
                               code)._value.get()


async def test_the_handler_of_a_stream_cut_short_returns_before_the_client_reads_again(
        exporting):
    """Past the bound the handler waited in `context.abort` (which waits until the status is
    sent, behind the reply held back) until the client read again or its connection's age
    ended it (~6 minutes), keeping its frame and that reply; the call was counted and logged
    only then. Now it returns at the cut: the call is counted RESOURCE_EXHAUSTED while the
    client still reads nothing, and the client gets that status once it reads again."""
    server, _ = exporting
    before = _ended("RESOURCE_EXHAUSTED")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=SMALL_WINDOW) as slow:
        call = pb_grpc.ProfileServiceStub(slow).ExportEvents(pb.ExportEventsRequest())
        await asyncio.wait_for(call.read(), 10)  # then reads no more
        deadline = time.monotonic() + 10
        while _ended("RESOURCE_EXHAUSTED") == before:
            assert time.monotonic() < deadline, "the handler never returned"
            await asyncio.sleep(0.05)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while await asyncio.wait_for(call.read(), 10) != grpc.aio.EOF:
                pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "stream_unread_seconds" in err.value.details()


async def test_a_stream_cut_while_its_headers_are_sent_still_ends_with_a_status():
    """A cut that landed while the headers were still being sent (they went first, within
    the same bound) left them unmarked in gRPC, so the status carried them a second time,
    which gRPC refuses (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS): the client got no status at all
    and waited until its deadline. A bound far below any send (1 us) cuts every stream at its
    start; a reflection client (as grpcurl is) that reads every reply must still get an end:
    EOF if its one reply was written in time, else RESOURCE_EXHAUSTED naming the setting.
    `Limits` refuses a bound that small (`UNREAD_SECONDS_FLOOR`), so it is set on the
    interceptor itself, around reflection alone."""
    from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

    from server.rpc import RpcInterceptor
    from tests.conftest import free_port
    cut = RpcInterceptor(every_unread=(1e-6, "Limits.stream_unread_seconds"))
    server = grpc.aio.server(interceptors=[cut])
    reflection.enable_server_reflection([reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo()
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            await call.done_writing()
            try:
                while await asyncio.wait_for(call.read(), 10) != grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "stream_unread_seconds" in err.details()
    finally:
        await server.stop(0.1)


@pytest.mark.parametrize("name", ["stream_unread_seconds", "plan_unread_seconds"])
def test_an_unread_bound_below_its_floor_is_refused_naming_the_floor(name, monkeypatch):
    """1e-6 was accepted, and every stream (every PlanCampaign) then ended RESOURCE_EXHAUSTED
    at its first reply: the bound is at least `UNREAD_SECONDS_FLOOR`, and the refusal says so."""
    from pydantic import ValidationError

    from server.config import load_settings, settings_error
    monkeypatch.setenv(f"TAILOR_LIMITS__{name.upper()}", "1e-6")
    with pytest.raises(ValidationError) as refused:
        load_settings()
    from server.limits import UNREAD_SECONDS_FLOOR, Limits
    line = settings_error(refused.value)
    assert line.startswith(f"limits.{name} (TAILOR_LIMITS__{name.upper()}): ")
    assert f"greater than or equal to {UNREAD_SECONDS_FLOOR}" in line, line
    assert getattr(Limits(**{name: UNREAD_SECONDS_FLOOR}), name) == UNREAD_SECONDS_FLOOR
