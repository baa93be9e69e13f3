"""Register servicers on a grpc.aio server with malformed-request-safe deserializers, and
serializers that send a servicer's already serialized answer (bytes) as it is."""
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


def _bytes_or(serialize):
    """`serialize`, except that bytes (an answer serialized by its servicer) go out unchanged."""
    if serialize is None:
        return None

    def serializer(message):
        return message if type(message) is bytes else serialize(message)
    return serializer


def register_services(server: grpc.aio.Server, pairs) -> list[str]:
    """`pairs` is [(add_XServicer_to_server, servicer)]; returns the full service names."""
    names = []
    for add_fn, servicer in pairs:
        cap = _Capture()
        add_fn(servicer, cap)
        handlers = {
            method: h._replace(request_deserializer=safe_deserializer(
                h.request_deserializer, f"{cap.service}/{method} request"),
                response_serializer=_bytes_or(h.response_serializer))
            for method, h in cap.handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(cap.service, handlers),))
        server.add_registered_method_handlers(cap.service, handlers)
        names.append(cap.service)
    return names
