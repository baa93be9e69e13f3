"""Flow control of a TrackEventStream: batches are read ahead while earlier ones commit."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Sequence

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
    Rejected events are indexed from the start of the stream. If the stream fails, batches not
    yet submitted are dropped; submitted ones still commit with their effects (`Profiles.track`).
    """
    read_ahead, most = profiles.limits.stream_read_ahead_events, profiles.limits.events_per_batch
    pending: list[asyncio.Task] = []
    sizes: list[int] = []
    offset = waited = in_flight = 0
    try:
        async for events in batches:
            check_count("events", len(events), most)  # now, not when the batch's turn comes
            pending.append(asyncio.create_task(profiles.track(events, offset)))
            sizes.append(len(events))
            offset += len(events)
            in_flight += len(events)
            while in_flight > read_ahead:
                await pending[waited]
                in_flight -= sizes[waited]
                waited += 1
        results = await asyncio.gather(*pending)
    except BaseException:
        for task in pending:
            task.cancel()
        raise
    total = TrackResult(duplicates=sum(r.duplicates for r in results),
                        rejected=[x for r in results for x in r.rejected])
    return total, sum(len(r.accepted_ids) for r in results)
