"""A stream of replies whose client gives up while the server writes is ended by gRPC without
closing the handler's reply generator: asyncio's finalizer closes it later, in a task of its own,
after gRPC has released the call (`grpc_call_unref`), when the call's metadata is freed memory
(walked: the `authorization` value read back as heap garbage). The interceptor
(server/security/interceptor.py) stops watching the call when gRPC ends it (`_Caller._ended`),
and its late close audits from the metadata read while the call ran. The real interceptor on a
real grpc.aio server, around an export that floods its client (ExportEvents' shape, a sensitive
method) and a bidi stream (PlanCampaign's)."""
import asyncio

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from server.security import interceptor, tokens
from server.security.authn import Authenticator
from server.security.interceptor import AuthInterceptor
from server.security.principals import load_auth_config

SERVICE = "tailor.v1.ProfileService"
BIG = pb.Event(event_id="x" * 200_000)  # a few of them fill the flow-control window


class _Audit:
    """Records each audit line."""

    def __init__(self):
        self.lines = []

    def record(self, principal, method, target, status, request_id, **details):
        self.lines.append((method, status, request_id))


@pytest.fixture
async def flooding(tmp_path, monkeypatch):
    """(the interceptor, its audit, a channel, the token, the callers watched at each call's
    end) around ExportEvents (unary-stream) and PlanCampaign-like bidi handlers that write
    replies for as long as the client lets them."""
    monkeypatch.setattr(interceptor, "RECHECK_SECONDS", 0.05)
    path = tmp_path / "auth.toml"
    path.write_text(f'[roles]\nexporter = ["/{SERVICE}/*"]\n')
    token = tokens.mint(path, "exporter-1", ["exporter"])
    config = load_auth_config(path)
    audit = _Audit()
    auth = AuthInterceptor(Authenticator(config), config.roles, audit)
    at_end = []

    def mark_end(context):
        def ended(_):  # gRPC calls this when the call is over, before it releases it
            at_end.append(set(auth.streams))
        context.add_done_callback(ended)

    async def export(request, context):
        mark_end(context)
        while True:
            yield BIG

    async def plan(requests, context):
        mark_end(context)
        async for _ in requests:
            while True:
                yield BIG

    server = grpc.aio.server(interceptors=[auth])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "ExportEvents": grpc.unary_stream_rpc_method_handler(
            export, request_deserializer=pb.Event.FromString,
            response_serializer=pb.Event.SerializeToString),
        "PlanLike": grpc.stream_stream_rpc_method_handler(
            plan, request_deserializer=pb.Event.FromString,
            response_serializer=pb.Event.SerializeToString)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield auth, audit, channel, token, at_end
    finally:
        await server.stop(0)


async def _cancelled_while_writing(channel, method, request, token, request_id):
    """Start `method`, read nothing while the server fills the window, then cancel it."""
    call = getattr(channel, "unary_stream" if isinstance(request, pb.Event) else "stream_stream")(
        f"/{SERVICE}/{method}", request_serializer=pb.Event.SerializeToString,
        response_deserializer=pb.Event.FromString)(
        request, metadata=(("authorization", f"Bearer {token}"), ("x-request-id", request_id)),
        timeout=10)
    await asyncio.sleep(0.3)  # the server is now blocked writing (flow control)
    call.cancel()
    await asyncio.sleep(0.3)  # gRPC ends the call, asyncio's finalizer closes the generator


async def test_a_cancelled_export_is_still_audited_with_its_request_id(flooding):
    auth, audit, channel, token, _ = flooding
    await _cancelled_while_writing(channel, "ExportEvents", pb.Event(), token, "rid-export")
    assert audit.lines == [(f"/{SERVICE}/ExportEvents", "CANCELLED", "rid-export")]


async def test_a_cancelled_bidi_stream_is_no_longer_watched_when_grpc_ends_it(flooding):
    auth, audit, channel, token, at_end = flooding

    async def one():
        yield pb.Event()
        await asyncio.sleep(30)  # the client keeps its side open

    await _cancelled_while_writing(channel, "PlanLike", one(), token, "rid-plan")
    assert at_end == [set()]  # retired before gRPC released the call: no timer, no sweep
    assert auth.streams == set()
