"""One damaged record of the `sends` table (tests/server/test_damaged_contacts.py's
`damage_record`, below any sealing): ListDeadLetters lists the other letters, the damaged one
left out (logged), rather than every listing failing INTERNAL while it is among the newest; a
SendCampaign job resumed with one damaged recipient record sends the others, rather than
stopping at every start; the owner of a damaged letter or record is refused an access export
(FAILED_PRECONDITION: it may leave nothing out) and can be erased (the repair)."""
import os
import subprocess
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc
from server.messages.deadletters import DeadLetter
from server.messages.sends import READY, Recipient
from server.store.keys import dead_letter_key, send_user_key
from tests.conftest import minted, serving
from tests.server.test_damaged_contacts import damage_record

from .conftest import email_spec, relayed
from .test_send_campaign import audience
from .test_send_damaged_decisions import SEND, USERS, crashed_job, ended


@pytest.fixture(params=[True, False], ids=["sealed", "plain"])
def settings(settings, sink, request):
    """Letters dated 2030 are kept (the start's retention sweep leaves them)."""
    return relayed(settings, sink, encrypt_at_rest=request.param)


@pytest.mark.parametrize("first", [True, False], ids=["both-ends", "last-byte"])
async def test_listing_leaves_a_damaged_letter_out(settings, tailor_server, messaging, caplog,
                                          first):
    dead = tailor_server.delivery.dead
    ids = [dead.add(DeadLetter("email", "c", f"d{i}", f"u{i}", f"u{i}@x.example", "body",
                               "smtp 421", 4, at=1.9e9 + i)) for i in range(5)]
    damage_record(tailor_server.store, "sends", dead_letter_key(ids[2]), first)
    listed = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=4))
    assert [d.id for d in listed.letters] == [ids[4], ids[3], ids[1], ids[0]]
    # sealed, a first byte flipped is its user's token: the letter reads as a shredded user's
    assert ("1 dead letter(s) damaged" in caplog.text) is not (
        first and settings.encrypt_at_rest)


async def test_a_resumed_send_goes_on_past_a_damaged_recipient_record(
        tailor_server, sink, campaigns, profiles, caplog):
    """Before, `SendRecords.recipients` raised (InvalidTag sealed, a JSON error plain): the job
    stopped at every start and none of its recipients was sent. The damaged one (its user,
    state and message unknown) is left out: neither sent nor counted (pending)."""
    from protos.tailor.v1 import campaign_pb2 as cpb
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, USERS)
    await crashed_job(tailor_server, decided=False)
    damage_record(tailor_server.store, "sends", send_user_key(SEND, 2), first=False)
    await tailor_server.sends.resume()  # the next start
    done = await ended(tailor_server)
    assert (done.sent, done.suppressed, done.failed, done.pending, done.finished_at > 0) == \
        (5, {}, {}, 1, True)
    assert sorted(r[0] for _, r, _ in sink.arrived) == \
        sorted(f"{u}@example.com" for i, u in enumerate(USERS) if i != 2)
    assert "1 send record(s) damaged" in caplog.text


async def test_a_retry_of_a_damaged_letter_and_a_cancel_of_a_damaged_deferred_message_say_so(
        tailor_server, messaging):
    """Before, both failed INTERNAL (the record read raised): now FAILED_PRECONDITION naming
    the letter or send, what is damaged and the repair; nothing written, the damage counted."""
    dead, records = tailor_server.delivery.dead, tailor_server.sends.records
    letter = dead.add(DeadLetter("email", "c", "d1", "u1", "u1@x.example", "body", "smtp 421",
                                 4, at=1.9e9))
    records.create("send-d2", "c", [Recipient(0, "u2", READY, "d2", send_at=time.time() + 3600,
                                              message={"to": "u2@x.example", "raw": "body"})],
                   {"email": 50.0}, {}, os.getpid(), due=time.time() + 3600)
    for key in (dead_letter_key(letter), send_user_key("send-d2", 0)):
        damage_record(tailor_server.store, "sends", key, first=False)
    before = {use: REGISTRY.get_sample_value("tailor_records_damaged_total",
                                             {"record": record, "use": use})
              for record, use in (("dead_letter", "retry"), ("send", "cancel"))}
    for call, named in ((messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter)),
                         f"dead letter {letter!r}: its record is damaged"),
                        (messaging.CancelSend(mpb.CancelSendRequest(send_id="send-d2")),
                         "send 'send-d2': its recipient's record is damaged")):
        with pytest.raises(grpc.RpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert named in err.value.details() and "erase" in err.value.details()
    assert not records.job("send-d2").get("cancelled")
    assert {use: REGISTRY.get_sample_value("tailor_records_damaged_total",
                                           {"record": record, "use": use})
            for record, use in (("dead_letter", "retry"), ("send", "cancel"))} == \
        {use: n + 1 for use, n in before.items()}


@pytest.mark.parametrize("kind", ["dead letters", "send records"])
async def test_an_owner_of_a_damaged_record_is_refused_an_export_and_can_be_erased(
        settings, tmp_path, kind):
    """DeleteProfile and ExportProfile opened the user's letters and send records (found by
    their token, sealed, or their text, plain) and failed INTERNAL on a damaged one: the
    erasure, a repair, was impossible."""
    path, tokens = minted(tmp_path, {"all": ["tracker", "admin", "pii-reader"]})
    meta = (("authorization", f"Bearer {tokens['all']}"),)
    async with serving(settings.model_copy(update={"auth_config": path})) as (server, channel):
        profiles = profile_pb2_grpc.ProfileServiceStub(channel)
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="u1", attributes={"email": "u1@x.example"}), metadata=meta)
        if kind == "dead letters":
            key = dead_letter_key(server.delivery.dead.add(DeadLetter(
                "email", "c", "d1", "u1", "u1@x.example", "body", "smtp 421", 4, at=1.9e9)))
        else:  # a recipient of a job whose owner died (nothing resumes it here)
            gone = subprocess.Popen(["true"])
            gone.wait()
            server.sends.records.create(SEND, "mail", ["u1"], {"email": 50.0}, {}, gone.pid)
            key = send_user_key(SEND, 0)
        damage_record(server.store, "sends", key, first=False)
        with pytest.raises(grpc.RpcError) as err:
            await profiles.ExportProfile(ppb.ExportProfileRequest(user_id="u1"), metadata=meta)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
        assert f"one of the user's {kind} is damaged" in err.value.details()
        assert "u1" not in err.value.details()
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="u1"), metadata=meta)
        with server.store.read() as txn:
            assert server.store.raw_table("sends").get(txn, key) is None
