"""Flow control of a TrackEventStream: batches are read ahead while earlier ones commit."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Sequence

from ..errors import PartlyDone, ResourceExhausted, TailorError
from ..validation import check_count
from .events import TrackedEvent
from .handler import Profiles, TrackResult

__all__ = ["track_stream"]


async def track_stream(profiles: Profiles,
                       batches: AsyncIterable[Sequence[TrackedEvent]]) -> tuple[TrackResult, int]:
    """Track every batch of a stream; returns the totals (without accepted ids) and the number
    of accepted events, once every batch is committed.

    Batches are submitted as they arrive, so consecutive batches share transactions; reading
    pauses while more than `limits.stream_read_ahead_events` events wait for their commit.
    Rejected events are indexed from the start of the stream; more than
    `limits.stream_rejected_events` of them end it (the reply listing them would not fit a
    message). If the stream fails, batches not yet submitted are dropped; submitted ones still
    commit with their effects (`Profiles.track`), and a refusal (a `TailorError`) says what the
    messages before it did (`PartlyDone`).
    """
    limits = profiles.limits
    read_ahead, most = limits.stream_read_ahead_events, limits.events_per_batch
    pending: list[asyncio.Task] = []
    sizes: list[int] = []
    offset = waited = in_flight = rejected = 0
    try:
        async for events in batches:
            check_count("events", len(events), most)  # now, not when the batch's turn comes
            # the batch's commit starts here, in `Profiles._landing`; the task only waits for it
            pending.append(asyncio.ensure_future(profiles.submit(events, offset)))
            sizes.append(len(events))
            offset += len(events)
            in_flight += len(events)
            while in_flight > read_ahead:
                rejected += len((await pending[waited]).rejected)
                _check_rejected(rejected, limits.stream_rejected_events)
                in_flight -= sizes[waited]
                waited += 1
        results = await asyncio.gather(*pending)
        _check_rejected(sum(len(r.rejected) for r in results), limits.stream_rejected_events)
    except TailorError as err:
        raise PartlyDone(err, await _done_before(pending)) from err
    except BaseException:
        for task in pending:  # a cancelled call: its submitted batches still commit
            task.cancel()
        raise
    return _totals(results)


def _check_rejected(n: int, most: int) -> None:
    """A stream's reply lists each rejected event: at most `most` of them."""
    if n > most:
        raise ResourceExhausted(f"events: {n} rejected, more than the {most} one stream's "
                                "reply lists (limits.stream_rejected_events); a TrackEvents of "
                                "a few of them says why they are rejected")


def _totals(results: Sequence[TrackResult]) -> tuple[TrackResult, int]:
    total = TrackResult(duplicates=sum(r.duplicates for r in results),
                        rejected=[x for r in results for x in r.rejected])
    return total, sum(len(r.accepted_ids) for r in results)


async def _done_before(pending: list[asyncio.Task]) -> str:
    """What the stream did before it failed, once every submitted batch has ended: the message
    that failed (the first batch that did, else the one after the last submitted) and what the
    batches that were tracked did."""
    ended = await asyncio.gather(*(asyncio.shield(t) for t in pending), return_exceptions=True)
    failed = [i for i, r in enumerate(ended) if not isinstance(r, TrackResult)]
    done = [r for r in ended if isinstance(r, TrackResult)]
    total, accepted = _totals(done)
    return (f"message {(failed[0] if failed else len(pending)) + 1} of the stream failed and "
            f"nothing after it was read; {len(done)} message{'' if len(done) == 1 else 's'} "
            f"tracked: {accepted} accepted, "
            f"{total.duplicates} duplicates, {len(total.rejected)} rejected")

