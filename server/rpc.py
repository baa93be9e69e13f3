"""The one interceptor around every RPC, unary and streaming alike: it counts and times the call
(`metrics.RpcSeries`) and counts the messages each way.

It is the outermost interceptor (before authentication), so refused calls are counted too.
Handlers are wrapped once per method, at the method's first call.
"""
from __future__ import annotations

import asyncio
import inspect
import time

import grpc

from .metrics import RpcSeries

__all__ = ["RpcInterceptor"]


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler so every call is counted, timed and its messages counted."""

    def __init__(self):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrapped[method] = _wrap(method, handler)
        return wrapped


def _wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same kind of handler, each call observed."""
    streams_in, streams_out = handler.request_streaming, handler.response_streaming
    if streams_in and streams_out:
        grpc_type, inner, make = "bidi_stream", handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif streams_in:
        grpc_type, inner, make = "client_stream", handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif streams_out:
        grpc_type, inner, make = "server_stream", handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        grpc_type, inner, make = "unary", handler.unary_unary, grpc.unary_unary_rpc_method_handler
    series = RpcSeries(method, grpc_type)
    if streams_out and inspect.isasyncgenfunction(inner):
        behaviour = _observed_stream(series, inner, streams_in)
    else:  # a coroutine (a response stream written with context.write sends uncounted)
        behaviour = _observed_unary(series, inner, streams_in, counts_reply=not streams_out)
    return make(behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _observed_unary(series: RpcSeries, inner, streams_in: bool, counts_reply: bool):
    async def call(request, context):
        started = time.perf_counter()
        series.started.inc()
        if streams_in:
            request = _counted(request, series.received)
        else:
            series.received.inc()
        code = "OK"
        try:
            reply = await inner(request, context)
            if counts_reply:
                series.sent.inc()
            return reply
        except BaseException as err:
            code = _code(context, err)
            raise
        finally:
            series.handled(code, time.perf_counter() - started)
    return call


def _observed_stream(series: RpcSeries, inner, streams_in: bool):
    async def call(request, context):
        started = time.perf_counter()
        series.started.inc()
        if streams_in:
            request = _counted(request, series.received)
        else:
            series.received.inc()
        code = "OK"
        sent = series.sent
        try:
            async for reply in inner(request, context):
                sent.inc()
                yield reply
        except BaseException as err:
            code = _code(context, err)
            raise
        finally:
            series.handled(code, time.perf_counter() - started)
    return call


async def _counted(requests, counter):
    async for request in requests:
        counter.inc()
        yield request


def _code(context, err: BaseException) -> str:
    """The status the call ends with: the one its handler aborted with, CANCELLED for a call
    the client gave up on, UNKNOWN for anything else (what gRPC answers then)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(err, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "UNKNOWN"
