"""Register servicers on a grpc.aio server with malformed-request-safe deserializers."""
from __future__ import annotations

import grpc

from ..errors import safe_deserializer

__all__ = ["register_services"]


class _Capture:
    """Receives what a generated `add_XServicer_to_server` would register."""

    def __init__(self):
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers):
        pass

    def add_registered_method_handlers(self, service_name, method_handlers):
        self.service, self.handlers = service_name, method_handlers


def register_services(server: grpc.aio.Server, pairs) -> list[str]:
    """`pairs` is [(add_XServicer_to_server, servicer)]; returns the full service names."""
    names = []
    for add_fn, servicer in pairs:
        cap = _Capture()
        add_fn(servicer, cap)
        handlers = {
            method: h._replace(request_deserializer=safe_deserializer(
                h.request_deserializer, f"{cap.service}/{method} request"))
            for method, h in cap.handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(cap.service, handlers),))
        server.add_registered_method_handlers(cap.service, handlers)
        names.append(cap.service)
    return names
