"""tailor.v1.AuditService: the newest audit lines (role `auditor`, checked by the auth interceptor)."""
from __future__ import annotations

import asyncio

from protos.tailor.v1 import audit_pb2 as pb
from protos.tailor.v1 import audit_pb2_grpc as pb_grpc

from ..errors import grpc_errors
from ..security.audit import AuditLog
from ..validation import check_range

__all__ = ["AuditServicer", "DEFAULT_TAIL", "MAX_TAIL"]

DEFAULT_TAIL = 100
MAX_TAIL = 1000


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, audit: AuditLog):
        self.audit = audit

    @grpc_errors
    async def TailAudit(self, request: pb.TailAuditRequest, context) -> pb.TailAuditResponse:
        limit = check_range("limit", request.limit or DEFAULT_TAIL, 1, MAX_TAIL)
        return pb.TailAuditResponse(lines=await asyncio.to_thread(self.audit.tail, limit))
