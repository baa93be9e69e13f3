"""The public HTTP port against slow and greedy clients, over raw sockets on a real server: an
idle or half-sent request is closed, a body that does not arrive is 408, and connections past
`limits.http_connections` get 503 at once; gRPC keeps answering throughout."""
import asyncio
import logging
import time

import pytest

from protos.tailor.v1 import diagnostics_pb2 as dpb
from protos.tailor.v1 import diagnostics_pb2_grpc

MOST, IDLE, BODY = 4, 1.0, 1.0


@pytest.fixture
def settings(settings):
    from server.limits import Limits
    settings.limits = Limits(http_connections=MOST, http_idle_seconds=IDLE, http_body_seconds=BODY,
                             http_body_bytes=1024)
    return settings


async def connect(settings, first: bytes = b""):
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.public_http_port)
    if first:
        writer.write(first)
        await writer.drain()
    return reader, writer


async def closed_within(reader, seconds: float) -> tuple[bytes, float]:
    """What the server sends before it closes the connection, and when it closed it."""
    start, got = time.monotonic(), b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(4096):
            got += chunk
    return got, time.monotonic() - start


async def ping(channel) -> None:
    stub = diagnostics_pb2_grpc.DiagnosticsServiceStub(channel)
    await stub.Ping(dpb.PingRequest(), timeout=5)


async def test_idle_and_half_sent_requests_are_closed_after_the_idle_limit(settings, channel):
    """Before: a connection that sent nothing, or half a request head, was held for an hour
    (aiohttp's default keep-alive, 3,630 s); a few thousand such sockets used up the process's
    file descriptors and gRPC stopped answering too."""
    idle, _ = await connect(settings)
    half, _ = await connect(settings, b"GET /u/x HTTP/1.1\r\nHost: tailor\r\nX-Slow: ")
    assert await closed_within(idle, IDLE + 3) == (b"", pytest.approx(IDLE, abs=1.5))
    assert (await closed_within(half, IDLE + 3))[0] == b""
    await ping(channel)


async def test_a_body_that_does_not_arrive_is_408(settings, channel):
    reader, writer = await connect(settings, b"POST /sms/inbound HTTP/1.1\r\nHost: tailor\r\n"
                                             b"Content-Length: 100\r\n\r\nFrom=")
    got, took = await closed_within(reader, 3 * BODY + 2)  # 408, the rest drained, closed
    assert got.startswith(b"HTTP/1.1 408 ") and took == pytest.approx(2 * BODY, abs=1.5)
    writer.close()
    await ping(channel)


SLOW_BODY = b"POST /sms/inbound HTTP/1.1\r\nHost: tailor\r\nContent-Length: 100\r\n\r\nFrom="


async def reply(reader) -> bytes:
    """One reply's head and body off a kept-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    return head + await asyncio.wait_for(reader.readexactly(length), 3)


async def test_connections_past_the_limit_get_503_at_once_and_their_slots_come_back(
        settings, channel):
    """503 when every connection is inside a request (here each waits for its body)."""
    held = [await connect(settings, SLOW_BODY) for _ in range(MOST)]
    await asyncio.sleep(0.2)  # each head read: its handler reads the body
    over, _ = await connect(settings)
    got, took = await closed_within(over, 2)
    assert got.startswith(b"HTTP/1.1 503 ") and took < 1
    await ping(channel)
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)
    reader, writer = await connect(settings, b"GET /u/x HTTP/1.1\r\nHost: tailor\r\n"
                                             b"Connection: close\r\n\r\n")
    assert (await closed_within(reader, 3))[0].startswith(b"HTTP/1.1 400 ")  # served again


async def test_keep_alive_connections_past_the_limit_make_room_for_a_new_one(settings, channel):
    """One client holding every connection, each with a request now and then (within the idle
    limit), kept everyone else out (503) for as long as it liked: unsubscribe links and STOP
    webhooks too. A new connection past the limit now closes the one that has waited longest
    for a request; requests under way are never cut."""
    kept = [await connect(settings) for _ in range(MOST)]
    for reader, writer in kept:  # each asks once, and keeps its connection
        writer.write(b"GET /u/x HTTP/1.1\r\nHost: tailor\r\n\r\n")
        assert (await reply(reader)).startswith(b"HTTP/1.1 400 ")
        await asyncio.sleep(0.05)
    reader, writer = await connect(settings, b"GET /u/x HTTP/1.1\r\nHost: tailor\r\n"
                                             b"Connection: close\r\n\r\n")
    assert (await closed_within(reader, 3))[0].startswith(b"HTTP/1.1 400 ")  # served, not 503
    assert (await closed_within(kept[0][0], 1))[0] == b""  # the longest idle closed
    for other, writer in kept[1:]:  # the others still serve
        writer.write(b"GET /u/x HTTP/1.1\r\nHost: tailor\r\n\r\n")
        assert (await reply(other)).startswith(b"HTTP/1.1 400 ")
    for _, writer in kept:
        writer.close()
    await ping(channel)


async def test_a_malformed_request_head_is_400_and_one_quiet_line_without_what_it_sent(
        settings, channel, caplog):
    """aiohttp logged every malformed request head at ERROR with a traceback, the client's
    address and the first 100 bytes of the offending line (a token's, a header's): anyone could
    fill the log with errors and with what they chose to send. Now one INFO line naming the
    problem, nothing of the request."""
    caplog.set_level("DEBUG")
    heads = [b"GET /u/1.SECRET-TOKEN" + b"A" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
             b"GET /u/x HTTP/1.1\r\nHost: t\r\nX-Mine: SECRET-TOKEN" + b"A" * 9000 + b"\r\n\r\n",
             b"GET /u/x HTTP/1.1\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
             b"POST /u/x HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n"
             b"\r\nnot gzip!"]  # 400 for the token, then aiohttp drains the body: it breaks
    for head in heads:
        reader, writer = await connect(settings, head)
        assert (await closed_within(reader, 3))[0].startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 "))
        writer.close()
    mine = [r for r in caplog.records if r.name.startswith(("aiohttp", "tailor.http"))]
    assert not [r for r in mine if r.levelno >= logging.WARNING]
    assert not [r for r in mine if "SECRET" in r.getMessage() or "127.0.0.1" in r.getMessage()
                or r.exc_info]
    assert len([r for r in mine if "bad request" in r.getMessage()]) == 4


async def test_a_request_head_holds_at_most_limits_http_headers_fields(settings, channel):
    """A pending request head held up to 128 fields of 8 KiB (aiohttp's defaults): 300
    connections sending 126 such fields, and no final blank line, took 600 MB of the server's
    memory in 3 s. Now at most `http_headers` fields (32 by default; 8 KiB each): past it 400."""
    from server.limits import Limits
    most = Limits().http_headers
    for fields, status in ((most - 2, b"404"), (most + 8, b"400")):
        head = (b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                + b"".join(b"X-%d: a\r\n" % i for i in range(fields)) + b"\r\n")
        reader, writer = await connect(settings, head)
        got = (await closed_within(reader, 3))[0]
        assert got.split(b" ")[1] == status, (fields, got[:40])
        writer.close()


async def test_a_body_over_limits_http_body_bytes_is_413(settings, channel):
    """The public port's body bound is a limit like every other (it was a module constant)."""
    from server.limits import Limits
    assert Limits().http_body_bytes == 16 * 1024
    over = settings.limits.http_body_bytes + 1
    reader, writer = await connect(settings, b"POST /sms/inbound HTTP/1.1\r\nHost: t\r\n"
                                             b"Content-Length: %d\r\n\r\n" % over + b"x" * over)
    assert (await closed_within(reader, 3))[0].startswith(b"HTTP/1.1 413 ")
    writer.close()


async def test_no_reply_names_the_http_library_or_its_version(settings, channel):
    """Every public reply said `Server: Python/3.11 aiohttp/3.x.y`, the malformed-request 400s
    aiohttp builds before any route too: the version to look up known flaws of."""
    import aiohttp
    asked = [b"GET /u/nope HTTP/1.1\r\nHost: tailor\r\n\r\n",  # a route's answer (400)
             b"GET /no/such/path HTTP/1.1\r\nHost: tailor\r\n\r\n",  # 404
             b"GET /u/x HTTP/1.1\r\nHost: tailor\r\nBad Header\r\n\r\n"]  # aiohttp's own 400
    for request in asked:
        reader, writer = await connect(settings, request)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        writer.close()
        assert head.split()[1].startswith("4"), head
        assert "aiohttp" not in head and aiohttp.__version__ not in head, head
        assert "\r\nserver: tailor\r\n" in head, head
