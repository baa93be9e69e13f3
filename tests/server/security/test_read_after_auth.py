"""A caller is known before its request is read, against a real server with an auth config.

gRPC reads a unary call's request, up to `grpc_max_request_bytes`, before its handler runs: a
stranger could make a worker hold that much per call (eight 60 MiB calls held 600 MB). A call
whose metadata does not name a known caller now authenticates with its transport first
(`rpc.reading_later`). A request over the size limit shows which came first: the size check
answers RESOURCE_EXHAUSTED only once the request is read."""
import time

import grpc
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import REGISTRY

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.security import tokens

LIMIT = 1 << 20
PROFILE = "tailor.v1.ProfileService"


@pytest.fixture(scope="module")
def jwt_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest_asyncio.fixture
async def secured(settings, tmp_path, jwt_key):
    from server.app import TailorServer
    path = tmp_path / "auth.toml"
    (tmp_path / "ec.pem").write_bytes(jwt_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    path.write_text('[jwt]\nissuer = "https://id.test"\naudience = "tailor"\n'
                    'public_keys = ["ec.pem"]\n')
    token = tokens.mint(path, "ops", ["admin", "tracker", "analyst"])
    server = TailorServer(settings.model_copy(update={"auth_config": path,
                                                      "grpc_max_request_bytes": LIMIT}))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=[
            ("grpc.max_send_message_length", 4 * LIMIT)]) as channel:
        yield pb_grpc.ProfileServiceStub(channel), token
    await server.stop(grace=0.5)


def signed(key, roles) -> str:
    return jwt.encode({"sub": "app", "iss": "https://id.test", "aud": "tailor", "roles": roles,
                       "exp": time.time() + 600}, key, algorithm="ES256")


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


async def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        await call
    return err.value.code(), err.value.details()


def received(method: str) -> float:
    return REGISTRY.get_sample_value("grpc_server_msg_received_total", {
        "grpc_type": "unary", "grpc_service": PROFILE, "grpc_method": method}) or 0.0


async def test_a_strangers_oversized_request_is_refused_unread(secured):
    profiles, token = secured
    big = pb.GetProfileRequest(user_id="x" * (2 * LIMIT))
    for metadata in ((), bearer("not-a-token"), bearer("a.b.c")):
        code, details = await _code(profiles.GetProfile(big, metadata=metadata))
        assert code == grpc.StatusCode.UNAUTHENTICATED, details
    code, _ = await _code(profiles.GetProfile(big, metadata=bearer(token)))  # known: read, too big
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_refused_request_is_not_counted_as_received(secured):
    profiles, token = secured
    before = received("GetProfile")
    code, _ = await _code(profiles.GetProfile(pb.GetProfileRequest(user_id="u1")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert received("GetProfile") == before
    code, _ = await _code(profiles.GetProfile(pb.GetProfileRequest(user_id="u1"),
                                              metadata=bearer(token)))
    assert code == grpc.StatusCode.NOT_FOUND and received("GetProfile") == before + 1


async def test_a_jwt_not_yet_verified_is_served_after_its_check(secured, jwt_key):
    profiles, token = secured
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="ann", attributes={"locale": "fr-FR"}), metadata=bearer(token))
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="e1", user_id="ann", type="view", item_id="i1", timestamp=time.time() - 5)]),
        metadata=bearer(token))
    first = signed(jwt_key, ["analyst"])  # its first call authenticates before reading
    profile = await profiles.GetProfile(pb.GetProfileRequest(user_id="ann"), metadata=bearer(first))
    assert profile.attributes["locale"] == "fr-FR"
    events = [e async for e in profiles.ExportEvents(pb.ExportEventsRequest(),  # a reply stream
                                                     metadata=bearer(signed(jwt_key, ["analyst"])))]
    assert [e.event_id for e in events] == ["e1"]
    code, details = await _code(profiles.DeleteProfile(  # roles still checked, as at once
        pb.DeleteProfileRequest(user_id="ann"), metadata=bearer(signed(jwt_key, ["tracker"]))))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "lacks the role admin" in details
    code, _ = await _code(profiles.GetProfile(pb.GetProfileRequest(user_id="x" * (2 * LIMIT)),
                                              metadata=bearer(signed(jwt_key, ["analyst"]))))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # authenticated, then read: too big
