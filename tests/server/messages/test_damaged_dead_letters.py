"""ListDeadLetters with one damaged dead letter (tests/server/test_damaged_contacts.py's
`damage_record`, below any sealing): the others are listed, the damaged one left out (logged),
rather than every listing failing INTERNAL while it is among the newest."""
import pytest

from protos.tailor.v1 import messaging_pb2 as mpb
from server.messages.deadletters import DeadLetter
from server.store.keys import dead_letter_key
from tests.server.test_damaged_contacts import damage_record


@pytest.fixture(params=[True, False], ids=["sealed", "plain"])
def settings(settings, request):
    """Letters dated 2030 are kept (the start's retention sweep leaves them)."""
    return settings.model_copy(update={"encrypt_at_rest": request.param})


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
