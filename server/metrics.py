"""Prometheus metrics: the per-RPC interceptor, domain histograms, and the HTTP endpoint.

With several worker processes, `PROMETHEUS_MULTIPROC_DIR` is set by the parent before the
workers start and the parent serves the merged view.
"""
from __future__ import annotations

import os
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

__all__ = ["RPC_LATENCY", "RPC_TOTAL", "STAGE_LATENCY", "BATCH_SIZE", "QUEUE_DEPTH",
           "MetricsInterceptor", "serve_metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RPC_TOTAL = Counter("tailor_rpc_total", "RPCs handled, by method and status code.",
                    ["method", "code"])
RPC_LATENCY = Histogram("tailor_rpc_seconds", "Server-side RPC latency.", ["method"],
                        buckets=_LATENCY_BUCKETS)
STAGE_LATENCY = Histogram("tailor_recommend_stage_seconds",
                          "Time per Recommend pipeline stage, per batch.", ["stage"],
                          buckets=_LATENCY_BUCKETS)
BATCH_SIZE = Histogram("tailor_batch_size", "Calls per micro-batch.", ["batcher"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
QUEUE_DEPTH = Gauge("tailor_batch_queue_depth", "Calls waiting for a batch.", ["batcher"],
                    multiprocess_mode="livesum")


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC by its full method name and final status code."""

    def __init__(self):
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # streaming RPCs: counted by their own services if needed
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:  # built once per method: the handlers are fixed at registration
            wrapped = self._wrapped[method] = _timed_handler(method, handler)
        return wrapped


def _timed_handler(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary
    latency = RPC_LATENCY.labels(method)
    ok = RPC_TOTAL.labels(method, "OK")

    async def timed(request, context):
        started = time.perf_counter()
        try:
            reply = await inner(request, context)
        except BaseException:
            RPC_TOTAL.labels(method, (context.code() or grpc.StatusCode.UNKNOWN).name).inc()
            raise
        else:
            ok.inc()
            return reply
        finally:
            latency.observe(time.perf_counter() - started)

    return grpc.unary_unary_rpc_method_handler(
        timed, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


def serve_metrics(port: int, host: str = "127.0.0.1", tls=None):
    """Expose /metrics on `port` (merging all worker processes in multiprocess mode), over
    HTTPS with `tls` (a `ServerTls`: same certificate and client CA as the gRPC port). Returns
    a callable that re-reads the certificate files (SIGHUP)."""
    kw = {}
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        kw["registry"] = CollectorRegistry()
        multiprocess.MultiProcessCollector(kw["registry"])
    if tls is not None:
        kw.update(certfile=str(tls.cert), keyfile=str(tls.key), client_auth_required=bool(tls.client_ca),
                  client_cafile=str(tls.client_ca) if tls.client_ca else None)
    httpd, _ = start_http_server(port, addr=host, **kw)
    if tls is None:
        return lambda: None
    return lambda: tls.reload_context(httpd.socket.context)
