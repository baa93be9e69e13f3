"""Dead letters hold an address and a whole message; they were kept until retried or their
user erased, however old (no retention reached them). The retention sweep now drops those
that first failed more than `dead_letter_retention_days` ago (30 by default), on a real
server's store."""
import asyncio
import time

from server.messages.deadletters import DeadLetter
from tests.conftest import serving

DAY = 86400.0


def letters(dead, n: int, start: float) -> list[str]:
    return [dead.add(DeadLetter("email", "c", f"d{i}", f"u{i}", "a@x.example", "x" * 1000,
                                "smtp 421", 4, at=start + i)) for i in range(n)]


async def test_the_retention_sweep_drops_letters_older_than_their_retention(tailor_server):
    """(The start's own first pass may run meanwhile and drop some: what is left is asserted.)"""
    dead, now = tailor_server.delivery.dead, time.time()
    old = letters(dead, 3, now - 40 * DAY)
    recent = letters(dead, 2, now - 10 * DAY)
    await tailor_server.sweep_retention(now)
    assert {d.id for d in dead.list(10)} == set(recent)
    assert all(dead.get(i) is None for i in old)
    assert (await tailor_server.sweep_retention(now))["dead_letters"] == 0
    assert (await tailor_server.sweep_retention(now + 25 * DAY))["dead_letters"] == 2
    assert dead.list(10) == []


async def test_letters_kept_for_good_stay(settings):
    """`inf` keeps them, as before."""
    forever = settings.model_copy(update={"dead_letter_retention_days": float("inf")})
    async with serving(forever) as (server, _):
        dead, now = server.delivery.dead, time.time()
        kept = letters(dead, 2, now - 4000 * DAY)
        assert (await server.sweep_retention(now))["dead_letters"] == 0
        assert {d.id for d in dead.list(10)} == set(kept)


async def test_an_upgraded_store_loses_its_old_letters_at_the_first_start(settings):
    """What docs/operations.md's upgrade notes warn of: letters a Tailor from before the
    retention kept (here: written with `inf`) and older than 30 days are gone once a server
    with the default has started (its first sweep runs at the start), before anyone could
    list or retry them; `inf` for that start keeps them."""
    forever = settings.model_copy(update={"dead_letter_retention_days": float("inf")})
    async with serving(forever) as (server, _):
        now = time.time()
        old = letters(server.delivery.dead, 2, now - 40 * DAY)
        recent = letters(server.delivery.dead, 1, now - DAY)
    async with serving(forever) as (server, _):
        assert {d.id for d in server.delivery.dead.list(10)} == set(old + recent)
    async with serving(settings) as (server, _):
        deadline = time.time() + 10
        while len(server.delivery.dead.list(10)) > 1 and time.time() < deadline:
            await asyncio.sleep(0.05)
        assert {d.id for d in server.delivery.dead.list(10)} == set(recent)
