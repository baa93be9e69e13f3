"""ListDeadLetters after an outage: a relay down during a large SendCampaign leaves a dead letter
per recipient, each holding its whole message; listing the newest few reads those only (a real
server's store)."""
import tracemalloc

import pytest

from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc
from server.messages.deadletters import DeadLetter
from server.store.keys import DEAD_LETTER_PREFIX, dead_letter_key
from tests.conftest import serving

from .conftest import keys_opened

BODY = "x" * 100_000  # a 100 kB email
N = 300


@pytest.fixture
def settings(settings):
    """The letters here are dated 2023 to 2030 (times that sort, far apart): kept for good, as
    the start's retention sweep would drop those of 2023 (`dead_letter_retention_days`)."""
    return settings.model_copy(update={"dead_letter_retention_days": float("inf")})


def letters(dead, channel: str, n: int, start: float) -> list[str]:
    return [dead.add(DeadLetter(channel, "c", f"d{i}", f"u{i % 7}", "a@x.example", BODY,
                                "smtp 421", 4, at=start + i)) for i in range(n)]


async def test_listing_the_newest_letters_reads_only_those(tailor_server, messaging):
    """`list` read and opened every letter (all of them held in memory at once: 30 MB here,
    gigabytes after an outage of a large campaign) to return the newest `limit`. It walks
    back from the newest and stops once it has them."""
    dead = tailor_server.delivery.dead
    old = letters(dead, "email", N, 1.7e9)
    sms = letters(dead, "sms", 2, 1.8e9)
    new = letters(dead, "email", 3, 1.9e9)
    tracemalloc.start()
    try:
        got = dead.list(3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [d.id for d in got] == new[::-1]
    assert peak < 3_000_000, peak  # three 100 kB letters (sealed and opened), and room
    assert [d.id for d in dead.list(5, "sms")] == sms[::-1]
    assert [d.id for d in dead.list(4, "email")] == new[::-1] + old[-1:]
    listed = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=4))
    assert [d.id for d in listed.letters] == new[::-1] + sms[-1:]


@pytest.mark.parametrize("encrypted", [True, False])
async def test_erasing_a_user_opens_only_their_letters(settings, encrypted):
    """DeleteProfile found the user's dead letters by opening (decrypting and decoding) every
    letter of every user inside the erasure's write transaction: after an outage (a letter per
    recipient) each erasure held the store's write lock for ~1 s per 20,000 letters of 10 kB,
    stalling every writer (ingestion included). A sealed letter starts with its user's token,
    and a plain one names the user in its JSON: only the user's own are opened (42 on main)."""
    async with serving(settings.model_copy(update={"encrypt_at_rest": encrypted})) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        dead, store = server.delivery.dead, server.delivery.dead.store
        others = letters(dead, "email", 40, 1.7e9)
        mine = [dead.add(DeadLetter("sms", "c", f"m{i}", "gone", "+15550100", BODY, "webhook 503",
                                    1, at=1.8e9 + i)) for i in range(2)]
        with keys_opened(store) as opened:
            await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="gone"))
        assert [k for k in opened if k.startswith(DEAD_LETTER_PREFIX)] == [
            dead_letter_key(i) for i in mine]
        assert {d.id for d in dead.list(50)} == set(others)

