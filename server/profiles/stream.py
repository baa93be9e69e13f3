"""Flow control of a TrackEventStream: batches are read ahead while earlier ones commit."""
from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

from ..batching import exempt
from ..errors import PartlyDone, ResourceExhausted, TailorError
from ..validation import check_count
from .events import TrackedEvent
from .handler import Profiles, TrackResult

__all__ = ["track_stream"]


@dataclass
class _Tally:
    """What the tracked messages of a stream did, kept as counts (and the rejections its reply
    lists): a message's accepted ids are dropped once it is counted, so a stream of millions
    of events holds no more than its read-ahead window."""

    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, result: TrackResult) -> None:
        self.messages += 1
        self.accepted += len(result.accepted_ids)
        self.duplicates += result.duplicates
        self.rejected += result.rejected


async def track_stream(profiles: Profiles,
                       batches: AsyncIterable[Sequence[TrackedEvent]]) -> tuple[TrackResult, int]:
    """Track every batch of a stream; returns the totals (without accepted ids) and the number
    of accepted events, once every batch is committed.

    Batches are submitted as they arrive, so consecutive batches share transactions; reading
    pauses while more than `limits.stream_read_ahead_events` events wait for their commit.
    Those after the first are bulk calls (`batching.exempt(counted=False)`): the ingestion's
    batcher takes other calls (TrackEvents) first, in transactions of their own, and at most
    `limits.stream_commit_events` of a stream's events a transaction, in the order submitted
    (the first's before the rest): which of two events with one id is stored and which is its
    duplicate, and what a user's events build in their profile, follow the stream's order.
    Rejected events are indexed from the start of the stream; more than
    `limits.stream_rejected_events` of them end it (the reply listing them would not fit a
    message). If the stream fails, batches not yet submitted are dropped; submitted ones still
    commit with their effects (`Profiles.track`), and a refusal (a `TailorError`) says what the
    messages before it did (`PartlyDone`).
    """
    limits = profiles.limits
    read_ahead, most = limits.stream_read_ahead_events, limits.events_per_batch
    pending: collections.deque[tuple[asyncio.Task, int]] = collections.deque()
    tally, offset, in_flight = _Tally(), 0, 0
    try:
        async for events in batches:
            check_count("events", len(events), most)  # now, not when the batch's turn comes
            # the batch's commit starts here, in `Profiles._landing`; the task only waits for it
            # overload refuses a stream at its first message only: after it, its read-ahead
            # bounds its queued batches, which wait behind its own commits and behind other
            # calls (a read-ahead queued longer than `batch_queue_seconds` refuses no one)
            with exempt(counted=False) if offset else nullcontext():
                pending.append((asyncio.ensure_future(profiles.submit(events, offset)),
                                len(events)))
            offset += len(events)
            in_flight += len(events)
            while in_flight > read_ahead:
                in_flight -= await _count_first(pending, tally)
                _check_rejected(len(tally.rejected), limits.stream_rejected_events)
        while pending:
            await _count_first(pending, tally)
        _check_rejected(len(tally.rejected), limits.stream_rejected_events)
    except TailorError as err:
        raise PartlyDone(err, await _done_before(tally, pending)) from err
    except BaseException:
        for task, _ in pending:  # a cancelled call: its submitted batches still commit
            task.cancel()
        raise
    return TrackResult(duplicates=tally.duplicates, rejected=tally.rejected), tally.accepted


async def _count_first(pending: collections.deque, tally: _Tally) -> int:
    """Wait for the oldest pending batch and count it in `tally` (left pending if it failed);
    its number of events."""
    task, size = pending[0]
    tally.add(await task)
    pending.popleft()
    return size


def _check_rejected(n: int, most: int) -> None:
    """A stream's reply lists each rejected event: at most `most` of them."""
    if n > most:
        raise ResourceExhausted(f"events: {n} rejected, more than the {most} one stream's "
                                "reply lists (limits.stream_rejected_events); a TrackEvents of "
                                "a few of them says why they are rejected")


async def _done_before(tally: _Tally, pending: collections.deque) -> str:
    """What the stream did before it failed, once every submitted batch has ended: the message
    that failed (the first batch that did, else the one after the last submitted), the last
    message read (batches read ahead of a failed one were submitted and commit all the same)
    and what the batches that were tracked did (those counted in `tally` and those still
    `pending`)."""
    ended = await asyncio.gather(*(asyncio.shield(t) for t, _ in pending),
                                 return_exceptions=True)
    failed = [i for i, r in enumerate(ended) if not isinstance(r, TrackResult)]
    read = tally.messages + len(pending)
    first = tally.messages + failed[0] + 1 if failed else read + 1
    for result in ended:
        if isinstance(result, TrackResult):
            tally.add(result)
    n = tally.messages
    after = "nothing after it was read" if read <= first else \
        f"messages up to {read} were read and nothing after"
    return (f"message {first} of the stream failed and {after}; {n} "
            f"message{'' if n == 1 else 's'} tracked: {tally.accepted} accepted, "
            f"{tally.duplicates} duplicates, {len(tally.rejected)} rejected")
