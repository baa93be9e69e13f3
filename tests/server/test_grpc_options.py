"""Production gRPC settings reach the server: keepalive pings a client sends every second are
accepted (gRPC's own enforcement answers them with GOAWAY too_many_pings), and connections past
their maximum age are closed. A GOAWAY shows as the client channel leaving READY for IDLE."""
import asyncio

import grpc
import pytest

from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc as dpb_grpc
from server.app import TailorServer
from server.config import Settings

PINGING = [("grpc.keepalive_time_ms", 1000), ("grpc.keepalive_permit_without_calls", 1),
           ("grpc.http2.max_pings_without_data", 0)]
"""A client that pings every second, with or without calls in flight."""


async def channel_states(tmp_path, seconds: float, **settings) -> list[str]:
    """The client channel's state every 0.25 s for `seconds` after one call, idle otherwise."""
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", lmdb_sync=False,
                                   secrets_dir=tmp_path / "secrets", **settings))
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=PINGING) as ch:
            await dpb_grpc.DiagnosticsServiceStub(ch).Ping(dpb.PingRequest())
            states = []
            for _ in range(int(seconds / 0.25)):
                await asyncio.sleep(0.25)
                states.append(ch.get_state().name)
            return states
    finally:
        await server.stop(grace=0.5)


@pytest.mark.parametrize("settings, kept", [
    ({}, True),  # the defaults accept it
    ({"grpc_min_ping_interval_seconds": 300.0}, False),  # gRPC's default: GOAWAY after 2 strikes
])
async def test_a_client_pinging_every_second_keeps_its_connection(tmp_path, settings, kept):
    states = await channel_states(tmp_path, 4.5, **settings)
    assert (set(states) == {"READY"}) == kept, states


async def test_connections_past_their_age_are_closed(tmp_path):
    states = await channel_states(tmp_path, 3.0, grpc_max_connection_age_seconds=1.0,
                                  grpc_max_connection_age_grace_seconds=0.5)
    assert states[0] == "READY" and "IDLE" in states, states


def test_options_name_every_setting(tmp_path):
    server = TailorServer(Settings(data_dir=tmp_path, grpc_max_concurrent_streams=7,
                                   grpc_max_connection_age_seconds=None))
    options = dict(server._options())
    assert options["grpc.max_concurrent_streams"] == 7 and options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 1000
    assert "grpc.max_connection_age_ms" not in options


async def test_metadata_under_the_limit_is_always_served_and_over_it_always_refused(tmp_path):
    """gRPC's own default refused metadata between 8 and 16 KiB at random (a soft limit): a
    JWT carrying many group claims failed one call in two. One limit, both ways every time."""
    server = TailorServer(Settings(port=0, data_dir=tmp_path / "data", lmdb_sync=False,
                                   secrets_dir=tmp_path / "secrets"))
    port = await server.start()
    limit = server.settings.limits.metadata_bytes
    big = [("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=big) as ch:
            stub = dpb_grpc.DiagnosticsServiceStub(ch)
            for _ in range(30):  # about 12 KiB: half were refused
                await stub.Ping(dpb.PingRequest(), metadata=(("authorization", "Bearer " + "j" * 12_000),))
            for _ in range(10):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.Ping(dpb.PingRequest(), metadata=(("x-pad", "p" * (limit + 100)),))
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await server.stop(grace=0.5)
