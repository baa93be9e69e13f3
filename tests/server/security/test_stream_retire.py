"""A stream of requests stops being watched when its call ends (server/security/interceptor.py
`_Caller.retire`), read to its end or not: a handler that fails at its first message left the
watch's timer to read, 5 s later, the metadata of a call gRPC had freed, and the worker died of
SIGSEGV (a PlanCampaign refused INVALID_ARGUMENT at its first message stopped a 2-worker server).
The real interceptor on a real grpc.aio server, around a stream-unary handler (TrackEventStream's
shape) and a bidi one (PlanCampaign's) that give up after one message."""
import asyncio
import gc
import logging

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from server.security import interceptor, tokens
from server.security.authn import Authenticator
from server.security.interceptor import AuthInterceptor
from server.security.principals import load_auth_config


@pytest.fixture(params=["Sum", "Plan"])
async def summing(tmp_path, monkeypatch, request):
    """(the interceptor, a call of a stream whose handler refuses its first message, the
    callers it watched while it ran)."""
    monkeypatch.setattr(interceptor, "RECHECK_SECONDS", 0.05)
    path = tmp_path / "auth.toml"
    path.write_text('[roles]\nsummer = ["/test.Numbers/*"]\n')
    token = tokens.mint(path, "adder", ["summer"])
    config = load_auth_config(path)
    auth = AuthInterceptor(Authenticator(config), config.roles)
    watched = []

    async def refuse(requests, context):
        async for _ in requests:
            watched.extend(auth.streams)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_id: is required")
        return pb.Event()

    async def refuse_replying(requests, context):  # a stream of replies too (PlanCampaign)
        async for _ in requests:
            watched.extend(auth.streams)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event_id: is required")
        yield pb.Event()

    kinds = {"Sum": grpc.stream_unary_rpc_method_handler, "Plan": grpc.stream_stream_rpc_method_handler}
    behaviours = {"Sum": refuse, "Plan": refuse_replying}
    server = grpc.aio.server(interceptors=[auth])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Numbers", {
        name: kind(behaviours[name], request_deserializer=pb.Event.FromString,
                   response_serializer=pb.Event.SerializeToString)
        for name, kind in kinds.items()}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            make = ch.stream_unary if request.param == "Sum" else ch.stream_stream
            call = make(f"/test.Numbers/{request.param}", request_serializer=pb.Event.SerializeToString,
                        response_deserializer=pb.Event.FromString)
            yield auth, call, token, watched
    finally:
        await server.stop(0)


async def test_a_stream_refused_at_its_first_message_is_no_longer_watched(summing, caplog):
    auth, call, token, watched = summing

    async def one():
        yield pb.Event()
        await asyncio.sleep(30)  # the caller keeps its side open: the server ends the call

    with pytest.raises(grpc.aio.AioRpcError) as err:
        replies = call(one(), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        if isinstance(replies, grpc.aio.StreamStreamCall):
            await replies.read()
        else:
            await replies
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(watched) == 1  # it was watched while it ran
    assert auth.streams == set()  # and no longer once it ended
    assert watched[0].timer is None
    await asyncio.sleep(0.2)  # several of the (shortened) re-check periods
    auth.sweep()  # a reload: nothing left to check
    assert watched[0].ending is None  # never checked again: its context is gone
    watched.clear()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        gc.collect()  # the abandoned request generator, and what it waited on, go quietly
        await asyncio.sleep(0.05)
    assert "Task was destroyed but it is pending" not in caplog.text
