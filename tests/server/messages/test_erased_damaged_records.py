"""An erasure leaves no erased user's data behind in a damaged dead letter or send record of a
store without encryption at rest: one whose user-id text was hit (on disk, by a bad restore)
no longer names them, and nothing in its key does, so DeleteProfile did not find it and it kept
their id and address for good. A record the erasure meets that does not decode is deleted
(it cannot be served to anyone); every record that decodes, another user's, stays."""
import json

import pytest_asyncio
from prometheus_client import REGISTRY

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc
from server.messages.deadletters import DeadLetter
from server.messages.sends import READY, Recipient
from server.store.keys import dead_letter_key, send_job_key, send_user_key
from server.store.table import Table
from tests.conftest import serving, store_mentions

ERASED, KEPT = "erased-user-0042", "kept-user-0043"
ADDRESS = b"erased-user-0042@x.example"


@pytest_asyncio.fixture(scope="module")
async def plain_server(tmp_path_factory):
    """(server, profiles stub): a real server, no bundle, encryption at rest off."""
    from server.config import Settings
    tmp = tmp_path_factory.mktemp("plain-server")
    async with serving(Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0,
                                lmdb_sync=False, secrets_dir=tmp / "secrets",
                                encrypt_at_rest=False)) as (server, channel):
        yield server, profile_pb2_grpc.ProfileServiceStub(channel)


def hit_user_text(store, key: bytes, user_id: str) -> None:
    """Flip one byte of the user id's text in the plain record at `key` of `sends`, as a disk
    or a bad restore would (the record no longer names `user_id`, nor decodes: not ASCII)."""
    hit_text(store, key, b'"user":' + json.dumps(user_id).encode()[:-1])


def hit_text(store, key: bytes, text: bytes) -> None:
    """Flip the last byte of `text`'s first place in the plain record at `key` of `sends`."""
    t = store.table("sends")

    def fn(txn):
        (stored,) = Table.get_many(t, txn, [key])
        at = bytes(stored).index(text) + len(text) - 1
        Table.put(t, txn, key, stored[:at] + bytes([stored[at] ^ 0xA5]) + stored[at + 1:])
    store.write(fn)


def damaged_count(use: str) -> float:
    return sum(REGISTRY.get_sample_value("tailor_records_damaged_total",
                                         {"record": record, "use": use}) or 0.0
               for record in ("dead_letter", "send"))


async def test_an_erasure_deletes_a_damaged_record_whose_user_text_was_hit(plain_server, caplog):
    server, profiles = plain_server
    for user in (ERASED, KEPT):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"email": f"{user}@x.example"}))
    letters = {user: dead_letter_key(server.delivery.dead.add(DeadLetter(
        "email", "c", f"d-{user}", user, f"{user}@x.example", f"To: {user}@x.example\r\n\r\nHi",
        "smtp 421", 4, at=1.9e9))) for user in (ERASED, KEPT)}
    ready = {"to": f"{ERASED}@x.example", "raw": f"To: {ERASED}@x.example\r\n\r\nHi"}
    server.sends.records.create("s-damaged", "c", [
        Recipient(0, ERASED, READY, "d-r", send_at=1.9e9, message=ready),
        Recipient(1, KEPT)], {"email": 50.0}, {}, 0, due=1.9e9)
    hit_user_text(server.store, letters[ERASED], ERASED)
    hit_user_text(server.store, send_user_key("s-damaged", 0), ERASED)
    assert store_mentions(server.store, ADDRESS), "the damaged records hold the address"
    before = damaged_count("erase")

    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=ERASED))

    assert store_mentions(server.store, ADDRESS) == []
    assert store_mentions(server.store, ERASED[:-1].encode()) == []
    with server.store.read() as txn:  # the other user's letter and record, and the job, stay
        sends = server.store.raw_table("sends")
        assert sends.get(txn, letters[KEPT]) is not None
        assert sends.get(txn, send_user_key("s-damaged", 1)) is not None
        assert sends.get(txn, send_job_key("s-damaged")) is not None
    assert damaged_count("erase") == before + 2
    assert "damaged" in caplog.text and ERASED[:-1] not in caplog.text


async def test_an_erasure_keeps_another_users_record_damaged_in_its_message(plain_server):
    """Another user's dead letter and send record, damaged in their message (not ASCII: they
    do not decode), still name that user: someone else's DeleteProfile deleted them as
    records naming nobody (`stray`). They stay; their own user's erasure deletes them."""
    server, profiles = plain_server
    gone, other = "erased-user-0052", "kept-user-0053"
    for user in (gone, other):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"email": f"{user}@x.example"}))
    body = f"To: {other}@x.example\r\n\r\nHello there"
    letter = dead_letter_key(server.delivery.dead.add(DeadLetter(
        "email", "c", f"d-{other}", other, f"{other}@x.example", body, "smtp 421", 4,
        at=1.9e9)))
    server.sends.records.create("s-elsewhere", "c", [Recipient(
        0, other, READY, "d-r", send_at=1.9e9, message={"to": f"{other}@x.example",
                                                         "raw": body})],
        {"email": 50.0}, {}, 0, due=1.9e9)
    record = send_user_key("s-elsewhere", 0)
    for key in (letter, record):
        hit_text(server.store, key, b"Hello")
    sends = server.store.raw_table("sends")

    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=gone))
    with server.store.read() as txn:
        assert [sends.get(txn, k) is not None for k in (letter, record)] == [True, True]

    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=other))
    with server.store.read() as txn:
        assert [sends.get(txn, k) is not None for k in (letter, record)] == [False, False]
