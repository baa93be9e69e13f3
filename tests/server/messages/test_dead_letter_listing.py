"""ListDeadLetters after an outage: a relay down during a large SendCampaign leaves a dead letter
per recipient, each holding its whole message; listing the newest few reads those only (a real
server's store)."""
import tracemalloc

from protos.tailor.v1 import messaging_pb2 as mpb
from server.messages.deadletters import DeadLetter

BODY = "x" * 100_000  # a 100 kB email
N = 300


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
