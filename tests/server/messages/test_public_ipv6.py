"""An IPv6 bind address: `--host ::1` built the gRPC address "::1:50051", which gRPC cannot
parse, so the server did not start; and unsubscribe links were "http://::1:8080/u/...", which
no client can follow. Both now put the address in brackets."""
import asyncio

import grpc
import pytest

from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc


@pytest.fixture(params=["::1", "[::1]"])
def settings(settings, request):
    settings.host = request.param
    return settings


async def test_a_server_on_ipv6_loopback_answers_and_links_to_itself(tailor_server, settings):
    async with grpc.aio.insecure_channel(f"[::1]:{tailor_server.port}") as channel:
        await diagnostics_pb2_grpc.DiagnosticsServiceStub(channel).Ping(dpb.PingRequest(), timeout=10)
    base = f"http://[::1]:{settings.public_http_port}"
    assert tailor_server.composer.public_base == base
    reader, writer = await asyncio.open_connection("::1", settings.public_http_port)
    writer.write(b"GET /u/not-a-token HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status.split()[1] in (b"400", b"404")  # the public port answers on ::1
