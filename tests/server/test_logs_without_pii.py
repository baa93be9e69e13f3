"""Server logs name users only by `user_ref` keyed hashes, never by id or personal data."""
import logging
import pickle
import time

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.errors import InvalidArgument, NotFound
from server.security.secrets import Secrets
from server.security.userref import user_ref

USER = "carol.pii-4711"
GHOST = "ghost.pii-0815"
EMAIL = "carol.pii@example.org"


async def test_logs_carry_no_user_id_and_no_email(tailor_server, channel, caplog):
    caplog.set_level(logging.DEBUG, logger="tailor")
    stub = pb_grpc.ProfileServiceStub(channel)
    events = [pb.Event(event_id=f"pii-{i}", user_id=USER, type="view", item_id="",
                       timestamp=time.time() - 60, attributes={"email": EMAIL}) for i in range(3)]
    events.append(pb.Event(event_id="pii-bad", user_id=USER, type=f"teleport {EMAIL}",
                           timestamp=time.time()))
    reply = await stub.TrackEvents(pb.TrackEventsRequest(events=events))
    assert reply.accepted == 3 and len(reply.rejected) == 1
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetProfile(pb.GetProfileRequest(user_id=GHOST))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND and GHOST in missing.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as invalid:  # fails validation
        await stub.UpsertAttributes(pb.UpsertAttributesRequest(
            user_id=USER, attributes={"email": EMAIL * 100}))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # an attribute value may be PII: not echoed, not even to the caller...
    assert EMAIL[:8] not in invalid.value.details() and "email" in invalid.value.details()
    assert (await stub.DeleteProfile(pb.DeleteProfileRequest(user_id=USER))).records_deleted > 0
    # Erasure's own paths: the tombstone, the tombstone list (ExportProfile: test_export_profile).
    assert len([t async for t in stub.ExportTombstones(pb.ExportTombstonesRequest())]) == 1

    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tailor"))
    for secret in (USER, GHOST, EMAIL, EMAIL[:16], "carol", "ghost"):
        assert secret not in logged and secret not in caplog.text  # ...the log does not
    ring = Secrets.load(tailor_server.settings.secrets_dir, generate=False, environ={})["user-id"]
    assert user_ref(GHOST) in logged and ring.mac(GHOST.encode())[:16] in user_ref(GHOST)
    assert "attributes['email']: 2100 characters, at most" in logged


def test_error_log_messages_survive_the_trip_from_a_writer_process():
    missing = pickle.loads(pickle.dumps(NotFound("profile", GHOST, personal=True)))
    assert GHOST in str(missing) and missing.log_message() == f"profile {user_ref(GHOST)} not found"
    bad = pickle.loads(pickle.dumps(InvalidArgument("attributes", f"{EMAIL!r} is odd", "is odd")))
    assert EMAIL in str(bad) and bad.log_message() == "attributes: is odd"
    assert NotFound("campaign", "c-1").log_message() == "campaign 'c-1' not found"
