"""tailor.v1.DiagnosticsService: an empty RPC through the full stack, for benchmarks."""
from __future__ import annotations

from protos.tailor.v1 import diagnostics_pb2 as pb
from protos.tailor.v1 import diagnostics_pb2_grpc as pb_grpc

from ..errors import grpc_errors

__all__ = ["DiagnosticsServicer"]

_PONG = pb.PingResponse()


class DiagnosticsServicer(pb_grpc.DiagnosticsServiceServicer):
    @grpc_errors
    async def Ping(self, request: pb.PingRequest, context) -> pb.PingResponse:
        return _PONG
