"""Bounds on the public port's clients (`Limits.http_*`): how many connections one process
holds, how long a connection may idle or dribble its request head, how long a body may take.

aiohttp alone holds a connection that sends nothing, or half a request head, for 3,630 s (its
default keep-alive) and waits for a body forever; a few thousand such sockets used up the
process's file descriptors, and the gRPC port (same process) stopped answering too.

- `CappedRunner`: an `AppRunner` whose sites count their connections from the TCP accept, a
  TLS handshake included. One past `http_connections` closes the connection that has waited
  longest for a request (idle between requests, in its TLS handshake, or with no complete
  request head yet) and takes its place; only when every connection is inside a request does
  it get `503` (over TLS: is closed) at once. Closing an idle keep-alive connection loses
  nothing (HTTP/1.1 lets either side close one between requests; clients reconnect): before,
  one client holding the 256 connections with a request on each every 10 s kept everyone
  else (unsubscribe links, STOP webhooks) out for as long as it liked.
  With TLS the runner does the handshake itself (`loop.start_tls`), bounded by the idle limit:
  asyncio's own, in `create_server(ssl=...)`, ran 60 s before aiohttp saw the connection, so
  sockets that never sent a ClientHello were held uncounted (~20 new ones a second reached the
  process's file limit). The idle limit is aiohttp's keep-alive timeout, which also runs from
  the connection's start: a connection without a complete request head by then is closed. A
  head holds at most `http_headers` fields (aiohttp: 128 of 8 KiB, so 300 pending heads took
  600 MB).
- `ServerLog`: what aiohttp logs per connection. A malformed request head (an overlong line,
  too many headers, not HTTP) or body (declared gzip and not) is the client's doing: one INFO
  line naming the problem, never the client's address or the bytes it sent (aiohttp logged
  each at ERROR with a traceback, the address and 100 bytes of the line: a log anyone could
  fill, with what they chose).
- `within(seconds, aw)`: a body read, 400 when it does not decode (declared gzip and not,
  chunking broken off), 408 when it takes longer (then the rest of the body is
  drained for as long again at most, so the client reads the 408, and the connection closed).

Replies name the server `tailor` (`SERVER_NAME`), never aiohttp and its version (what a scanner
looks known flaws up by): aiohttp writes its own name into every reply's `Server` header, the
400s it builds for a malformed request head (before any route or hook runs) too, from one
module global that `CappedRunner` sets (tests/server/messages/test_public_bounds.py checks
every kind of reply).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import InvalidArgument

__all__ = ["CappedRunner", "ConnectionCap", "ServerLog", "within", "OVER_CAP_REPLY",
           "SERVER_NAME"]

logger = logging.getLogger("tailor.http")

T = TypeVar("T")

SERVER_NAME = "tailor"
"""The `Server` header of every public reply."""

OVER_CAP_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 17\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
                  b"too many requests")


async def within(seconds: float, aw: Awaitable[T]) -> T:
    """`aw` (a body read), or HTTP 408 once `seconds` have passed; InvalidArgument (400) for
    a body that does not decode."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except web.RequestPayloadError:  # the client's: a bad Content-Encoding or chunking
        raise InvalidArgument("body", "not readable (its Content-Encoding or chunking is "
                                      "broken)") from None
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the body did not arrive within {seconds:g} s") from None


class ServerLog:
    """The `logger` aiohttp's connections log through (it calls `debug` and `exception`, with
    the client's address as the only argument): a client's malformed request is INFO without
    a traceback, anything else ERROR with one; neither shows the client's address."""

    def __init__(self, log: logging.Logger = logger):
        self.log = log

    def _emit(self, level: int, msg: str, args: tuple, exc) -> None:
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):  # the client's
            # request did not parse: its head, or a body aiohttp drains after a reply sent
            # without reading it (a 404 or a bad token, to a body declared gzip and not)
            self.log.log(min(level, logging.INFO), "bad request from a client (%s)",
                         type(exc).__name__)
            return
        self.log.log(level, "aiohttp: %s", msg % (("a client",) * len(args)), exc_info=exc)

    def debug(self, msg: str, *args, exc_info=None, **_) -> None:
        self._emit(logging.DEBUG, msg, args, exc_info)

    def exception(self, msg: str, *args, exc_info=True, **_) -> None:
        self._emit(logging.ERROR, msg, args, exc_info)


class _Counted(asyncio.Protocol):
    """One connection, counted from its accept: aiohttp's protocol behind it while under the
    cap (after the TLS handshake, with TLS), else the 503 (over TLS: closed)."""

    __slots__ = ("cap", "inner", "counted", "upgrade", "early", "transport", "accepted")

    def __init__(self, cap: ConnectionCap):
        self.cap, self.inner, self.counted, self.upgrade = cap, None, False, None
        self.early: list[bytes] = []
        """Decrypted between the handshake's end and aiohttp's protocol taking over."""

    def connection_made(self, transport) -> None:
        if self.cap.closed:  # accepted while the port stops
            transport.close()
            return
        if self.cap.open >= self.cap.most and not self.cap.make_room():
            if self.cap.tls is None:
                transport.write(OVER_CAP_REPLY)
            transport.close()
            return
        self.cap.open += 1
        self.counted = True
        self.transport, self.accepted = transport, asyncio.get_running_loop().time()
        self.cap.live.add(self)
        if self.cap.tls is None:
            self._serve(transport)
            return
        transport.pause_reading()  # the ClientHello waits for the TLS protocol (`start_tls`)
        self.upgrade = asyncio.ensure_future(self._handshake(transport))

    def waiting_since(self) -> float | None:
        """When this connection began waiting for a request (its accept, or its last reply);
        None while a request is inside it (its head complete: being read or answered)."""
        inner = self.inner
        if inner is None:  # in its TLS handshake, or just accepted
            return self.accepted
        waiter = getattr(inner, "_waiter", None)  # aiohttp's RequestHandler waiting for a head
        if waiter is None or waiter.done() or getattr(inner, "_messages", None):
            return None
        return getattr(inner, "_next_keepalive_close_time", self.accepted + self.cap.idle) \
            - self.cap.idle

    def evict(self) -> None:
        """Close this waiting connection now, its place freed at once."""
        self._uncount()
        self.transport.abort()

    async def _handshake(self, transport) -> None:
        self.cap.handshakes.add(transport)
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, self, self.cap.tls, server_side=True,
                ssl_handshake_timeout=self.cap.handshake_seconds)
        except Exception:  # not TLS, refused, too slow, gone: asyncio logs it (debug only)
            transport.close()
            self._uncount()
            return
        finally:
            self.cap.handshakes.discard(transport)
        if self.cap.closed or tls.is_closing():  # the port stopped, or the client went
            tls.close()
            return
        self._serve(tls)

    def _serve(self, transport) -> None:
        self.inner = self.cap.factory()
        self.inner.connection_made(transport)
        early, self.early = self.early, []
        for data in early:
            self.inner.data_received(data)

    def _uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.cap.open -= 1
            self.cap.live.discard(self)

    def connection_lost(self, exc) -> None:
        self._uncount()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
        elif self.counted:  # TLS: the request may follow the handshake before `_serve`
            self.early.append(data)

    def eof_received(self):
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class ConnectionCap:
    """A protocol factory (what `loop.create_server` calls per connection) around aiohttp's:
    at most `most` connections open at once, each made TLS by `tls` (when given) within
    `handshake_seconds`; `idle` is aiohttp's keep-alive timeout (how long one may wait for a
    request), by which `make_room` finds the connection that has waited longest."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], most: int,
                 tls: ssl.SSLContext | None = None, handshake_seconds: float = 60.0,
                 idle: float = 60.0):
        self.factory, self.most, self.open, self.idle = factory, most, 0, idle
        self.tls, self.handshake_seconds = tls, handshake_seconds
        self.handshakes: set[asyncio.BaseTransport] = set()
        self.live: set[_Counted] = set()
        """The connections counted in `open`."""
        self.closed = False

    def make_room(self) -> bool:
        """Close the connection that has waited longest for a request, if any waits (False:
        every one is inside a request)."""
        waiting = [(since, conn) for conn in self.live
                   if (since := conn.waiting_since()) is not None]
        if not waiting:
            return False
        min(waiting, key=lambda pair: pair[0])[1].evict()
        return True

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)

    def close(self) -> None:
        """Stop: the connections still in their TLS handshake are closed."""
        self.closed = True
        for transport in list(self.handshakes):
            transport.abort()


class CappedRunner(web.AppRunner):
    """`web.AppRunner` whose sites (`TCPSite` takes `runner.server` as its protocol factory)
    accept at most `most` connections, each request head at most `headers` fields; `idle`
    seconds is the keep-alive (and first request head) timeout, and the TLS handshake's with
    `tls` (give it here, not to the site); after a reply to a request whose body is not all in
    (408, 413), the rest is drained for at most `linger` seconds, then the connection is
    closed."""

    def __init__(self, app: web.Application, *, most: int, idle: float, linger: float,
                 headers: int, tls: ssl.SSLContext | None = None, **kwargs):
        super().__init__(app, keepalive_timeout=idle, lingering_time=linger, max_headers=headers,
                         logger=ServerLog(), **kwargs)
        web_response.SERVER_SOFTWARE = SERVER_NAME  # read as each reply's head is written
        self._most, self._cap, self._tls, self._idle = most, None, tls, idle

    @property
    def server(self):
        inner = super().server
        if inner is None:
            return None
        if self._cap is None or self._cap.factory is not inner:
            self._cap = ConnectionCap(inner, self._most, self._tls, self._idle, self._idle)
        return self._cap

    async def cleanup(self) -> None:
        if self._cap is not None:
            self._cap.close()
        await super().cleanup()
