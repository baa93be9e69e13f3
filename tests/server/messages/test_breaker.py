"""The hard-bounce breaker alone (`server.messages.breaker`, no I/O); the jobs it stops are
tested against real servers in test_relay_bounce and test_webhook_delivery."""
import pytest
from pydantic import ValidationError

from server.config import Settings
from server.messages.breaker import BounceBreaker


def test_the_window_is_a_bounded_setting():
    """`send_bounce_breaker_min` is how many listings a job's breaker holds in memory, and
    the window it judges: a bound like any other input (before, 10**9 was taken)."""
    assert Settings().send_bounce_breaker_min == 20
    for refused in (0, 10_001):
        with pytest.raises(ValidationError, match="send_bounce_breaker_min"):
            Settings(send_bounce_breaker_min=refused)


async def test_listings_are_written_in_order_once_cleared_and_dropped_on_a_trip():
    written = []

    def listing(n):
        async def write():
            written.append(n)
        return write

    b = BounceBreaker(0.5, 4)
    for n, bounced in enumerate([True, False, False, False, False, True, True, True]):
        if bounced:
            await b.list_or_hold(listing(n))
        tripped = await b.count(bounced)
        assert tripped == (n == 7)  # 3 of the last 4 (5, 6, 7); 2 of 4 (at 6) is no trip
    assert written == [0]  # cleared after 4 more; 5 and 6 held, then dropped by the trip
    assert (b.handed, b.bounced, b.tripped) == (8, 4, True)
    await b.list_or_hold(listing(8))
    await b.flush()
    assert written == [0]


async def test_a_listing_that_fails_neither_stops_the_job_nor_the_listings_after_it(caplog):
    """A listing is a write (the suppression list, the bounce event): `Delivery._bounced` logs
    a TailorError, anything else (a bug, an unexpected store error) reached the breaker. It
    was raised out of `count` (in a lane, after the recipient's try: the job's TaskGroup ended
    with it) and out of `flush` (in `stop`: the shutdown's gather of every job), and the
    listings held after it were never written. Before the breaker, the same failure inside
    `send_or_bury` failed that one recipient."""
    written = []

    def listing(n):
        async def write():
            if n == 0:
                raise KeyError("user@example.com")  # its text is never logged
            written.append(n)
        return write

    b = BounceBreaker(0.5, 2)
    for n, bounced in enumerate([True, False, True, False, True]):
        if bounced:
            await b.list_or_hold(listing(n))
        assert not await b.count(bounced)  # 1 of the last 2: no trip
    assert written == [2]  # 0 failed (logged), 2 went on; 4 is held
    await b.flush()
    assert written == [2, 4]
    assert "KeyError" in caplog.text and "example.com" not in caplog.text


async def test_a_breaker_that_never_trips_holds_nothing():
    """`send_bounce_breaker_share` 1 ("never"): no trip can drop a listing, so holding one
    only delays it (a dead address mailed again meanwhile, by the job itself when two of its
    users share it; lost in a crash). Before, the listings were held all the same."""
    written = []

    async def write():
        written.append(1)

    b = BounceBreaker(1.0, 20)
    await b.list_or_hold(write)
    assert written == [1]
