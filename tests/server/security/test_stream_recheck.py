"""A response stream's caller is checked again before each reply (server/security/interceptor.py):
the real interceptor on a real grpc.aio server, around a stream that waits between replies, so
the test decides when the caller loses its right (a revocation, a role taken away)."""
import asyncio
import tomllib

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from server.security import tokens
from server.security.authn import Authenticator
from server.security.interceptor import AuthInterceptor
from server.security.principals import load_auth_config

METHOD = "/test.Numbers/Count"


@pytest.fixture
async def counting(tmp_path):
    """(channel, the auth config path, the interceptor, an event that lets the next reply go,
    the replies sent) around a stream of 3 replies whose role is `counter`."""
    path = tmp_path / "auth.toml"
    path.write_text('[roles]\ncounter = ["/test.Numbers/*"]\n')
    token = tokens.mint(path, "reader", ["counter"])
    config = load_auth_config(path)
    auth = AuthInterceptor(Authenticator(config), config.roles)
    go, sent = asyncio.Event(), []

    async def count(request, context):
        for n in range(3):
            sent.append(n)
            yield pb.Event(event_id=str(n))
            await go.wait()
            go.clear()

    handler = grpc.unary_stream_rpc_method_handler(
        count, request_deserializer=pb.GetProfileRequest.FromString,
        response_serializer=pb.Event.SerializeToString)
    server = grpc.aio.server(interceptors=[auth])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Numbers", {"Count": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_stream(METHOD, request_serializer=pb.GetProfileRequest.SerializeToString,
                                   response_deserializer=pb.Event.FromString)(
                pb.GetProfileRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=20)
            yield call, path, auth, go, sent
    finally:
        await server.stop(0)


def _reload(path, auth) -> None:
    config = load_auth_config(path)
    auth.replace(Authenticator(config), config.roles)


async def _after_first_reply(call, path, auth, go, change) -> grpc.aio.AioRpcError:
    assert (await call.read()).event_id == "0"
    change(path)
    _reload(path, auth)
    go.set()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while await call.read() is not grpc.aio.EOF:
            go.set()
    return err.value


async def test_a_reply_after_a_revocation_is_not_sent(counting):
    call, path, auth, go, sent = counting
    err = await _after_first_reply(call, path, auth, go, lambda p: tokens.revoke(p, "reader"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "the stream's credentials are no longer valid: unknown bearer token"
    assert sent == [0, 1]  # the second reply was made, checked, and not sent


class _Records:
    def __init__(self):
        self.rows = []

    def record(self, principal, method, target, status, request_id, **details):
        self.rows.append((principal, method, status))


async def test_a_reply_after_the_role_is_taken_away_is_not_sent(counting):
    call, path, auth, go, _ = counting
    auth.audit = audit = _Records()  # denied calls are audited (docs/auth.md), mid-stream too

    def demote(p):
        doc = tomllib.loads(p.read_text())
        doc["principals"]["reader"]["roles"] = ["analyst"]
        p.write_text(tokens.dumps(doc))

    err = await _after_first_reply(call, path, auth, go, demote)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == f"reader lacks the role counter for {METHOD}"
    for _ in range(50):  # the record is written as the call's task ends
        if audit.rows:
            break
        await asyncio.sleep(0.02)
    assert audit.rows == [("reader", METHOD, "PERMISSION_DENIED")]


async def test_a_reload_that_keeps_the_caller_keeps_the_stream(counting):
    call, path, auth, go, sent = counting
    assert (await call.read()).event_id == "0"
    tokens.mint(path, "someone-else", ["counter"])
    _reload(path, auth)
    go.set()
    replies = [r.event_id async for r in _rest(call, go)]
    assert replies == ["1", "2"] and sent == [0, 1, 2]


async def _rest(call, go):
    while (reply := await call.read()) is not grpc.aio.EOF:
        go.set()
        yield reply
