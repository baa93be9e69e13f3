"""A Locust user that speaks gRPC: every call is timed by a client interceptor and reported
to Locust as a request event (name = full method, exception = the grpc.RpcError if any)."""
from __future__ import annotations

import time

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.exception import LocustError

grpc_gevent.init_gevent()

__all__ = ["GrpcUser"]


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, environment):
        self.env = environment

    def intercept_unary_unary(self, continuation, call_details, request):
        started = time.perf_counter()
        response, exception, size = None, None, 0
        try:
            response = continuation(call_details, request)
            size = response.result().ByteSize()  # wait for the reply to time it
        except grpc.RpcError as err:
            exception = err
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.env.events.request.fire(
            request_type="grpc", name=call_details.method, response_time=elapsed_ms,
            response_length=size, response=response, context=None, exception=exception)
        return response


class GrpcUser(User):
    """Subclass with `stub_class` and @task methods calling `self.stub`."""

    abstract = True
    stub_class = None

    def __init__(self, environment):
        super().__init__(environment)
        if not self.host:
            raise LocustError("set --host 127.0.0.1:50051 (no scheme)")
        target = self.host.removeprefix("grpc://").removeprefix("http://")
        self._channel = grpc.intercept_channel(grpc.insecure_channel(target), LocustInterceptor(environment))
        self.stub = self.stub_class(self._channel)

    def on_stop(self):
        self._channel.close()
