"""The one interceptor around every RPC, unary and streaming alike.

For each call it
- takes the caller's `x-request-id` (if short and plain) or makes one, and returns it in the
  trailing metadata;
- binds it, with the W3C `traceparent` the caller sent, to the task's log lines
  (`server.logging.current_call`);
- counts and times the call and its messages each way (`metrics.RpcSeries`);
- with `access_log`, logs one line per call on `tailor.access` (method, status, milliseconds);
- for every streaming method whose replies are an async generator (PlanCampaign:
  `Limits.plan_unread_seconds`; the exports and reflection: `Limits.stream_unread_seconds`),
  writes each reply itself and ends the call RESOURCE_EXHAUSTED (`errors.RepliesUnread`) when
  one cannot be written within the bound: a client that stopped reading (HTTP/2 flow control
  holds the reply back) would otherwise keep the call, and whatever place it holds, for as long
  as its connection lives. gRPC writes a generator's replies with no bound on the wait. The
  handler returns at the cut, its status set: `context.abort` would wait until the status is
  sent, behind the reply held back. gRPC itself still holds the call, that reply and the status
  until the client reads, cancels or its connection closes: grpc.aio has no per-call cancel
  for a server (docs/operations.md, "gRPC connections");
- for every method whose requests are a stream (client-streaming and bidirectional), reads what
  the client still sends before a refusal's status goes out (`_Draining`): at most
  `DRAIN_SECONDS` and `DRAIN_BYTES`, the messages dropped unparsed. A status sent before the
  client half-closed raced its writes in grpc.aio's client, which then reported its own
  INTERNAL ("Internal error from Core", grpc/grpc#36066, fix proposed in grpc/grpc#43486)
  instead of the server's status: 52 of 200 PlanCampaign calls refused PERMISSION_DENIED, 9 of
  200 PushBundle calls of four 1 MiB chunks. A stream refused UNAUTHENTICATED is not read (its
  caller is unknown): its status waits `STRANGER_WAIT_SECONDS` instead. Either takes at most
  `DEADLINE_SHARE` of the time the call's deadline leaves. Not drained either: a stream whose
  read was cut short (`_drain`), and the refusals gRPC sends itself, with no handler
  (UNIMPLEMENTED for an unknown method).

It is the outermost interceptor (before authentication), so refused calls are counted, logged
and carry a request id too. Each handler is wrapped once, at its first call.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping

import grpc

from .errors import MalformedRequest, RepliesUnread, safe_deserializer, set_status
from .ids import RandomIds
from .logging import bind_call, reset_call, valid_request_id
from .metrics import RpcSeries

__all__ = ["CallCap", "RpcInterceptor", "REQUEST_ID_KEY", "bounded_requests", "final_status",
           "handler_parts", "reading_later"]

REQUEST_ID_KEY = "x-request-id"
access_logger = logging.getLogger("tailor.access")
_new_request_id = RandomIds(8)

DRAIN_SECONDS = 1.0
"""Longest a refused stream of requests is read, its messages dropped, before the status is
sent (`_drain`): a client that writes a few messages, then half-closes, ends within
it; one still writing past it is refused all the same (and its grpc.aio client may report
INTERNAL then)."""
DRAIN_BYTES = 4 << 20
"""Bytes of requests after which a refused stream's drain reads no further message (`_drain`):
an upload refused part-way (PushBundle past `bundle_upload_bytes`) is not taken in for the
whole of `DRAIN_SECONDS`. The message that passes it is taken in whole, as any read is: up to
`grpc_max_request_bytes` more."""
DRAIN_MESSAGE_BYTES = 16 << 10
"""Least a dropped message counts toward `DRAIN_BYTES` (`_drain`), whatever its size: each read
costs the server a receive, and holds the call open while the client goes on writing. Counted
by their bytes alone, an endless stream of empty PushBundle chunks refused past
`bundle_chunks` was read for the whole of `DRAIN_SECONDS` (~18,000 messages in CI); at 1 KiB
(4,096 messages) the client still buffered ~19,000 more meanwhile under load (25,553 sent for
a 2,000-chunk bound). Now at most `DRAIN_BYTES // DRAIN_MESSAGE_BYTES` (256) are read: more
than a client that writes a few messages, then half-closes, sends."""
STRANGER_WAIT_SECONDS = 0.1
"""How long a stream refused UNAUTHENTICATED waits, unread, before its status: its caller is
unknown, and each read would let gRPC take in a message of up to `grpc_max_request_bytes`, so
it is not drained; a client that writes a few messages the transport's window holds, then
half-closes, is done meanwhile (PlanCampaign of four small messages with no token: 126 and 149
of 200 got grpc.aio's INTERNAL, as loaded, 0 of 200 with the wait). The stranger's call is held
no longer than this, and gRPC takes in no more of it than its window."""
DEADLINE_SHARE = 0.5
"""Largest share of the time left before a call's deadline that a refusal's drain (or a
stranger's wait) takes: the rest carries the status to the client in time. Without it, a
client with a deadline under `DRAIN_SECONDS`, writing nothing more (a bidirectional one waiting
for the answer to its message), got DEADLINE_EXCEEDED instead of the refusal."""
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("tailor_dropping_requests",
                                                                 default=False)
"""Set while a call's task drains its requests: they are read unparsed (`_droppable`)."""


def reading_later(handler: grpc.RpcMethodHandler, behaviour) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s unary-request method whose `behaviour(requests, context)`
    reads the one request itself, from a stream, when it chooses. gRPC reads a unary call's
    request before its handler runs, and a stream's messages only as its handler asks: so a
    caller refused before reading costs no more than the transport's window, whatever the
    request's size. Metrics still count it as the method's own kind (`handler_parts`)."""
    behaviour.unary_request = True
    make = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler)
    return make(behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class _Unparsed:
    """Stands in for a request message never parsed: longer than its method's bound
    (`bounded_requests`), or read only to be dropped (`_drain`)."""

    __slots__ = ("size",)

    def __init__(self, size: int):
        self.size = size


def bounded_requests(handler: grpc.RpcMethodHandler, most: int,
                     method: str = "") -> grpc.RpcMethodHandler:
    """`handler` (of `method`, as its messages are named) with every request message longer
    than `most` bytes refused RESOURCE_EXHAUSTED before it is parsed, and so never held by the
    call (for the methods anyone may call: a Health/Watch stream held its request as long as
    it stayed open), and one whose bytes do not parse INVALID_ARGUMENT, as a Tailor method's
    (`errors.safe_deserializer`): gRPC's own servicers raised, so a stranger's call was
    UNKNOWN and logged at ERROR with a traceback, as often as anyone cared to send one."""
    parse = safe_deserializer(handler.request_deserializer or (lambda data: data),
                              f"{method.lstrip('/')} request")
    _, inner, make = handler_parts(handler._replace(
        request_deserializer=lambda data: _Unparsed(len(data)) if len(data) > most
        else parse(data)))

    async def check(request, context):
        if isinstance(request, _Unparsed):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"request: {request.size} bytes, at most {most} for this method")
        if isinstance(request, MalformedRequest):
            await context.abort(request.error.status, str(request.error))
        return request

    async def checked(requests, context):
        async for request in requests:
            yield await check(request, context)

    async def argument(request, context):
        return checked(request, context) if handler.request_streaming \
            else await check(request, context)

    if inspect.isasyncgenfunction(inner):
        async def behaviour(request, context):
            async for reply in inner(await argument(request, context), context):
                yield reply
    else:  # a unary reply, or replies written with context.write (Health/Watch)
        async def behaviour(request, context):
            return await inner(await argument(request, context), context)
    return make(behaviour)


class CallCap:
    """At most `most` calls at once, over every handler it bounds (`bound`); one more is
    refused RESOURCE_EXHAUSTED at its start, naming `what`. For the streams anyone may hold
    open (Health/Watch: ~12 KB of the process each, for as long as the caller likes)."""

    def __init__(self, most: int, what: str):
        self.most, self.what, self.open = most, what, 0

    def bound(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler`, its calls counted while they run and refused past `most`."""
        _, inner, make = handler_parts(handler)

        async def enter(context) -> None:
            if self.open >= self.most:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"{self.what}: {self.open} open, at most {self.most} "
                                    "per server process; try again later")
            self.open += 1

        if inspect.isasyncgenfunction(inner):
            async def behaviour(request, context):
                await enter(context)
                try:
                    async for reply in inner(request, context):
                        yield reply
                finally:
                    self.open -= 1
        else:  # a unary reply, or replies written with context.write (Health/Watch)
            async def behaviour(request, context):
                await enter(context)
                try:
                    return await inner(request, context)
                finally:
                    self.open -= 1
        return make(behaviour)


def handler_parts(handler: grpc.RpcMethodHandler) -> tuple[str, Callable, Callable]:
    """(the kind of call `handler` serves, as gRPC names it; its behaviour; a function that
    makes a handler of that kind, with `handler`'s (de)serializers, from a behaviour)."""
    streams_in, streams_out = handler.request_streaming, handler.response_streaming
    if streams_in and streams_out:
        kind, inner, make = "bidi_stream", handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif streams_in:
        kind, inner, make = "client_stream", handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif streams_out:
        kind, inner, make = "server_stream", handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        kind, inner, make = "unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler
    if streams_in and getattr(inner, "unary_request", False):  # `reading_later`'s
        kind = "server_stream" if streams_out else "unary"
    return kind, inner, lambda behaviour: make(
        behaviour, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler so every call is identified, counted and timed.

    Each handler it is given is wrapped once, at its first call, and every later call given
    the same handler gets the same wrapper. The interceptor inside it may answer one method
    with more than one handler (authentication: one that reads the request at once, one that
    reads it only once the caller is known), so it asks at every call.

    `unread`: for a streaming method (its full name), (the longest one of its replies may wait
    for the client to make room for it, the setting that says so); `every_unread`: the same for
    every other streaming method (None: unbounded). A method that writes its replies with
    `context.write` (Health/Watch) is never bounded here."""

    def __init__(self, access_log: bool = False,
                 unread: Mapping[str, tuple[float, str]] | None = None,
                 every_unread: tuple[float, str] | None = None):
        self.access_log = access_log
        self.unread = dict(unread or {})
        self.every_unread = every_unread
        self._wrapped: dict[grpc.RpcMethodHandler, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler_call_details.method, handler)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The same kind of handler, each call observed (and a stream of requests drained
        before a refusal: `_Draining`)."""
        kind, inner, make = handler_parts(handler)
        drains = kind in ("client_stream", "bidi_stream")
        if drains:
            kind, inner, make = handler_parts(handler._replace(
                request_deserializer=_droppable(handler.request_deserializer)))
        call = _Observed(method, RpcSeries(method, kind), handler.request_streaming, drains,
                         self.access_log)
        if handler.response_streaming and inspect.isasyncgenfunction(inner):
            bound = self.unread.get(method, self.every_unread)
            if bound is not None:
                return make(call.written(inner, *bound))
            return make(call.stream(inner))
        # a coroutine (a response stream written with context.write sends uncounted)
        return make(call.unary(inner, counts_reply=not handler.response_streaming))


class _Observed:
    """The per-call work around one method's handler."""

    def __init__(self, method: str, series: RpcSeries, streams_in: bool, drains: bool,
                 access_log: bool):
        self.method, self.series, self.access_log = method, series, access_log
        self.streams_in, self.drains = streams_in, drains

    def begin(self, request, context):
        """Start a call: (request and context as the handler gets them, the `_Ending` to leave
        when it ends)."""
        self.series.started.inc()
        request_id = traceparent = ""
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_KEY:
                request_id = value
            elif key == "traceparent":
                traceparent = value
        if not valid_request_id(request_id):
            request_id = _new_request_id()
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        _, token = bind_call(request_id, traceparent)
        ending = _Ending(self, context, token, time.perf_counter())
        if not self.streams_in:
            self.series.received.inc()
            return request, context, ending
        reading = _Reading()
        request = _counted(request, self.series.received, reading)
        return request, _Draining(context, request, reading) if self.drains else context, ending

    def end(self, code: str, token, started: float) -> None:
        seconds = time.perf_counter() - started
        self.series.handled(code, seconds)
        if self.access_log:
            access_logger.info("%s %s %.2f ms", self.method, code, seconds * 1e3)
        reset_call(token)

    def unary(self, inner, counts_reply: bool):
        async def call(request, context):
            request, inside, ending = self.begin(request, context)
            with ending:
                reply = await inner(request, inside)
                if counts_reply:
                    self.series.sent.inc()
                return reply
        return call

    def stream(self, inner):
        async def call(request, context):
            request, inside, ending = self.begin(request, context)
            sent = self.series.sent
            with ending:
                async for reply in inner(request, inside):
                    sent.inc()
                    yield reply
        return call

    def written(self, inner, most: float, setting: str):
        """`stream`, with each reply written here, within `most` seconds: past that the
        replies are closed (the handlers inside end as for a cancelled call, and record the
        status set first) and the call ends `RepliesUnread`.

        The headers go first, on their own (`send_initial_metadata`, before the first reply)
        and unbounded: gRPC marks them sent only once the operation that carries them
        completes, so one cut short left them unmarked, and the status then carried them a
        second time, which gRPC refuses (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS): the client got
        no status at all and waited until its deadline. A reply cut short is no such trouble
        (it goes before the status). Flow control never holds headers back: they wait only
        for a connection that cannot send at all, which keepalive and its age end."""
        async def call(request, context):
            request, inside, ending = self.begin(request, context)
            sent, headed = self.series.sent, False
            with ending:
                async with contextlib.aclosing(inner(request, inside)) as replies:
                    async for reply in replies:
                        sent.inc()
                        if not headed:
                            headed = True
                            await context.send_initial_metadata(())
                        try:
                            # not wait_for: it made a task a reply (~25 us, against ~10)
                            async with asyncio.timeout(most):
                                await context.write(reply)
                        except TimeoutError:
                            break
                    else:
                        return
                    # set before the handlers close, which record it; no `abort`: it waits
                    # for the status to be sent, behind the reply held back
                    set_status(context, RepliesUnread(most, setting), self.method)
        return call


class _Ending:
    """Leaving it ends the call (`_Observed.end`) with the status it ended with (`final_status`);
    whatever ended it propagates."""

    __slots__ = ("observed", "context", "token", "started")

    def __init__(self, observed: _Observed, context, token, started: float):
        self.observed, self.context, self.token, self.started = observed, context, token, started

    def __enter__(self) -> _Ending:
        return self

    def __exit__(self, kind, err, tb) -> None:
        code = "OK" if err is None and self.context.code() is None \
            else final_status(self.context, err)
        self.observed.end(code, self.token, self.started)


def _droppable(deserialize):
    """`deserialize` (None: the bytes as they are), except while the call's task drains its
    requests (`_dropping`): a message then stands as `_Unparsed`, its size known, never parsed
    (gRPC parses a message in the task that reads it)."""
    parse = deserialize or (lambda data: data)

    def read(data):
        return _Unparsed(len(data)) if _dropping.get() else parse(data)
    return read


class _Reading:
    """Whether a call's stream of requests may be read by another than its handler's reader
    (`_counted` keeps it): `idle` only between the messages the handler took, before its first
    read included; not while a read is under way, nor once the stream ended or a read was cut
    short (its task cancelled)."""

    __slots__ = ("idle",)

    def __init__(self):
        self.idle = True


async def _counted(requests, counter, reading: _Reading):
    """`requests`, each one counted, `reading` kept up to date (an async generator: a class
    with `__anext__` cost ~0.5 us a message more)."""
    reading.idle = False
    try:
        async for request in requests:
            counter.inc()
            reading.idle = True
            yield request
            reading.idle = False
    finally:  # ended, or cut mid-read: gRPC Core may hold that receive still
        reading.idle = False


async def _drain(requests, reading: _Reading, seconds: float) -> None:
    """Read what the client still sends on `requests` (`_counted`), dropped unparsed, until
    the stream's end, for at most `seconds` and `DRAIN_BYTES` (each message counted as
    `DRAIN_MESSAGE_BYTES` at least). Nothing is read once the
    stream ended, nor while another task reads it (gRPC's reader, an async generator, raised
    RuntimeError: the call ended UNKNOWN), nor once a read was cut short (a handler's reader
    task cancelled): gRPC Core still holds that read's receive until a message or the end
    comes, and refuses a second one (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS, which grpc.aio reads
    as the stream's end)."""
    if not reading.idle:
        return
    token, left = _dropping.set(True), DRAIN_BYTES
    try:
        async with asyncio.timeout(seconds):
            async for dropped in requests:
                left -= max(dropped.size, DRAIN_MESSAGE_BYTES)
                if left < 0:
                    break
    except TimeoutError:
        pass
    finally:
        _dropping.reset(token)


class _Draining:
    """A stream of requests' context as the handlers inside see it: `abort` first reads what
    the client still sends (`_drain`), so the status goes out once the client half-closed,
    or, the caller unknown (UNAUTHENTICATED: a stranger's stream is not read), waits
    `STRANGER_WAIT_SECONDS`; either within `DEADLINE_SHARE` of the time the call has left.
    Everything else is the call's own context."""

    __slots__ = ("_context", "_requests", "_reading")

    def __init__(self, context, requests, reading: _Reading):
        self._context, self._requests, self._reading = context, requests, reading

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, *args, **kwargs):
        left = self._context.time_remaining()
        within = math.inf if left is None else left * DEADLINE_SHARE
        if code == grpc.StatusCode.UNAUTHENTICATED:
            await asyncio.sleep(min(STRANGER_WAIT_SECONDS, within))
        else:
            await _drain(self._requests, self._reading, min(DRAIN_SECONDS, within))
        await self._context.abort(code, *args, **kwargs)


def final_status(context, err: BaseException) -> str:
    """The status a call that `err` ended ends with: the one its handler aborted with,
    CANCELLED for a call the client gave up on, UNKNOWN for anything else (what gRPC answers
    then). Metrics, the access log and the audit log (`security.interceptor`) all say this."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(err, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "UNKNOWN"
