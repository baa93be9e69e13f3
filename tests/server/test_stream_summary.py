"""What a failed TrackEventStream says it did: batches read ahead of the one that failed were
submitted and commit all the same, so the summary names the last message read, not the failed
one as the end of the reading (a full store's refusal of message 24 said 'nothing after it was
read; 31 messages tracked')."""
import asyncio
import collections

from server.profiles.handler import TrackResult
from server.profiles.stream import _done_before, _Tally
from server.store.errors import StoreFull


def _ended(result) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
    return future


async def test_a_failed_message_with_later_ones_read_names_the_last_one_read():
    tally = _Tally()
    tally.add(TrackResult(accepted_ids=["a", "b"]))  # message 1, counted before the failure
    pending = collections.deque((_ended(r), 1) for r in (
        TrackResult(accepted_ids=["c"]), StoreFull(8 << 20, 1 << 20),
        TrackResult(accepted_ids=["d"], duplicates=1)))  # messages 2, 3 (failed), 4
    said = await _done_before(tally, pending)
    assert said == ("message 3 of the stream failed and messages up to 4 were read and nothing "
                    "after; 3 messages tracked: 4 accepted, 1 duplicates, 0 rejected")


async def test_the_last_message_read_failing_says_nothing_after_it_was_read():
    tally = _Tally()
    pending = collections.deque((_ended(r), 1) for r in (
        TrackResult(accepted_ids=["a"]), StoreFull(8 << 20, 1 << 20)))
    assert await _done_before(tally, pending) == (
        "message 2 of the stream failed and nothing after it was read; 1 message tracked: "
        "1 accepted, 0 duplicates, 0 rejected")


async def test_a_message_refused_as_read_is_the_one_after_the_last_submitted():
    tally = _Tally()
    pending = collections.deque([(_ended(TrackResult(accepted_ids=["a"])), 1)])
    assert (await _done_before(tally, pending)).startswith(
        "message 2 of the stream failed and nothing after it was read; 1 message tracked")
