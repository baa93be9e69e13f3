"""`AdaptiveBatcher`: group concurrent calls into batches handed to a runner (one ONNX run and
one FAISS search per Recommend batch, one LMDB transaction and fsync per write batch).

A batch starts as soon as a slot is free; while every slot is busy, arriving calls queue up and
go together into the next batch. `max_wait` lets the oldest queued call wait a little for company
even when a slot is free (0 disables that). `linger` does the same only under load, when recent
batches held `linger_from` calls or more on average, counting only the calls that had queued when
a slot could take them (what lingering gathered does not count, or the bigger batches it makes
would keep it on at rates where nothing queues; so a burst that a wait gathers whole, the slot
idle, counts as one call, and only calls queued behind busy slots keep it on): a group commit's
delay (PostgreSQL's
`commit_delay` with `commit_siblings`). A writer whose every batch pays a fixed cost (a commit and
its fsyncs) then spends it on more calls at high rates, while a call arriving alone at low rates
never waits for company that is not coming. A failed batch fails every call in it with the same
error; a per-call error (returned as an exception in the results) fails only that call. Callers
that gave up (cancelled) before their batch started are left out of it. Closing finishes the
running batches and starts the calls waiting only for company; calls queued behind busy slots
fail with `BatcherClosed`. With `shed_after` set, a call arriving while the oldest queued one has
waited longer than that is refused at once (`Overloaded`, RESOURCE_EXHAUSTED): under overload
the queue, and the wait of every call in it, stays bounded instead of growing until callers'
deadlines end them all.

Calls queued inside `exempt(counted=False)` (bulk: a stream's read-ahead, a SendCampaign job's
decisions and recommendations) give way to the others: a batch takes the other calls first, in
their arrival order, then bulk calls in theirs (so one caller's bulk calls still run in the
order it queued them, and after its other calls queued before them), up to `max_bulk` of them
(weighed by `weigh`; at least one, a batch with room). A call that is not bulk thus waits for
the batches running when it arrives and then starts in the next batch, which carries at most
`max_bulk` of bulk work (`bulk_beside` 0: none), not behind every bulk call queued before
it. Under a standing queue of `max_size` other calls, a batch leaves one place to the oldest
bulk call once it is older than every other queued call (bulk work slows down, it does not
stop; and it still comes after its caller's calls queued before it).

Everything is driven by callbacks on the event loop (no dispatcher task, no queue): calls
submitted in the same loop turn join one batch, and a batch costs one hand-off to its runner and
one loop wake-up when it is done. The runner is a thread pool (`ThreadRunner`) or a writer
process (`WriterProcess.runner`), for write batches on a latency path.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from .. import metrics
from ..errors import Overloaded
from .errors import BatcherClosed

__all__ = ["AdaptiveBatcher", "Done", "Runner", "exempt"]

Q = TypeVar("Q")
R = TypeVar("R")


_TYPICAL_OVER = 8
"""Batches `linger`'s moving average of batch sizes spans, about."""

_EXEMPT: contextvars.ContextVar[str] = contextvars.ContextVar("tailor_shed_exempt", default="")
"""How the calls this task (and the tasks it starts) queues are shed: "": refused past
`shed_after`; "admitted": never refused, their wait counted; "bulk": never refused, their wait
not counted (`exempt`)."""


@contextlib.contextmanager
def exempt(counted: bool = True) -> Iterator[None]:
    """Inside it, this task's calls (and those of tasks it starts meanwhile) are never refused
    as overload: the rest of a call admitted once (RecommendBatch's entries after one check,
    ComposeMessage's recommendations after its decision was queued), or a job accepted
    before that bounds its own backlog (`counted` False, bulk: a SendCampaign job's decisions
    and recommendations, a TrackEventStream's read-ahead, which queue behind their own commits,
    do not make others refused either, and batches take them after the other calls)."""
    token = _EXEMPT.set("admitted" if counted else "bulk")
    try:
        yield
    finally:
        _EXEMPT.reset(token)


Done = Callable[[Sequence], None]
"""Called on the event loop with one result (or exception) per query of a batch."""


class Runner(Protocol):
    """Where batches run. `start` is called on the event loop and must not block; it calls
    `done` later, on the loop, exactly once per batch (with errors in place of results if the
    batch failed or could not run). `concurrency` batches may be in flight at once."""

    concurrency: int
    name: str

    def start(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None: ...

    async def close(self) -> None: ...


class AdaptiveBatcher(Generic[Q, R]):
    """Batches of at most `max_size` calls, run by `runner` (up to `runner.concurrency` at once).

    `name` labels the batch metrics (the runner's name by default). `max_wait` and `linger`
    (seconds) count from the oldest queued call's arrival, so a call that already waited that
    long behind a running batch is not held back again. `shed_after` (seconds, 0: never): how long
    the oldest queued call may have waited before new calls are refused (`Overloaded`; for
    batchers whose callers are answered the refusal, with nothing of their call done).
    `max_bulk` (0: only `max_size`): how much bulk work (calls queued in
    `exempt(counted=False)`, which a batch takes after the others) a batch carries at most, as
    weighed by `weigh` (one a call by default; at least one call, whatever its weight);
    `bulk_beside` (None: `max_bulk`) the same in a batch that holds other calls, 0 for none but
    the oldest bulk call's place (a call that is not bulk then waits for the bulk batch running
    when it comes, and its own batch is its own: the ingestion's choice).
    """

    def __init__(self, runner: Runner, *, max_size: int = 64, max_wait: float = 0.001,
                 linger: float = 0.0, linger_from: int = 2, name: str | None = None,
                 shed_after: float = 0.0, max_bulk: int = 0, bulk_beside: int | None = None,
                 weigh: Callable[[Q], int] | None = None):
        if max_size < 1 or runner.concurrency < 1 or linger_from < 1:
            raise ValueError("max_size, concurrency and linger_from must be >= 1")
        if min(max_wait, linger, shed_after, max_bulk, bulk_beside or 0) < 0:
            raise ValueError("max_wait, linger, shed_after, max_bulk and bulk_beside must be >= 0")
        self.runner = runner
        self.max_size = max_size
        self.max_wait = max_wait
        self.linger = linger
        self.linger_from = linger_from
        self._typical = 0.0
        """Calls queued when a slot could take them, moving average over about the last
        `_TYPICAL_OVER` batches (a batch's size without what lingering added)."""
        self._ready: int | None = None
        """Calls queued when the next batch could first have started (a slot free), if so far."""
        self.concurrency = runner.concurrency
        self.name = runner.name if name is None else name
        self._most: tuple[int | None, int | None] = (
            max_bulk or None, (max_bulk or None) if bulk_beside is None else bulk_beside)
        """Most bulk work a batch carries (None: as `max_size` allows), alone and beside other
        calls (0: only the oldest bulk call's place)."""
        self.weigh = weigh
        self._pending: collections.deque[tuple[Q, asyncio.Future, float, bool, int]] = \
            collections.deque()
        """Queued calls that are not bulk (query, future, arrival, True, seq), in arrival order."""
        self._bulk: collections.deque[tuple[Q, asyncio.Future, float, bool, int]] = \
            collections.deque()
        """Queued bulk calls (query, future, arrival, False, seq): taken after `_pending`'s."""
        self._seq = itertools.count()
        """Arrival order across both queues (`loop.time()` may give two calls one time)."""
        self._active = 0
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._idle: asyncio.Event | None = None
        self._closed = False
        self._batch_size = metrics.BATCH_SIZE.labels(self.name)
        self._queue_depth = metrics.QUEUE_DEPTH.labels(self.name)
        self.shed_after = shed_after
        self._shed = metrics.SHED_CALLS.labels(self.name) if shed_after else None
        self._last_wait = 0.0
        """How long the oldest counted call of the last batch to start had waited for it."""

    async def submit(self, query: Q) -> R:
        return await self.enqueue(query)

    def enqueue(self, query: Q) -> asyncio.Future:
        """Queue `query` now and return the future of its result (`submit` awaits it; a
        caller may do other work before awaiting it). Cancelling the future before its batch
        starts leaves the query out of the batch. Refused as overload (`admit`) unless inside
        `exempt`; inside `exempt(counted=False)` (a caller that bounds its own backlog: a
        stream's read-ahead, a SendCampaign job) its wait does not make others refused."""
        if self._closed:
            raise BatcherClosed(self.name)
        loop = asyncio.get_running_loop()
        self.admit(loop)
        future = loop.create_future()
        counted = _EXEMPT.get() != "bulk"
        (self._pending if counted else self._bulk).append(
            (query, future, loop.time(), counted, next(self._seq)))
        if not self._scheduled:  # calls submitted in the same loop turn join one batch
            self._scheduled = True
            loop.call_soon(self._dispatch, loop)
        return future

    def admit(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Raise `Overloaded` (counted) while calls are queued and the oldest counted one (not
        queued in `exempt(counted=False)`), or the last batch's to start, has waited more than
        `shed_after`: what `enqueue` checks first, for a caller to check before it spends work
        on a call the batcher would refuse. The last batch's wait keeps the refusals on while a
        standing queue lasts: a batch that starts takes the oldest calls, and with the queued
        calls' age alone, every start let a burst in behind the batches already queued (past
        their deadlines, measured).
        Inside `exempt`, never raises."""
        if self._shed is None or not (self._pending or self._bulk) or _EXEMPT.get():
            return
        age = 0.0 if not self._pending else \
            (loop or asyncio.get_running_loop()).time() - self._pending[0][2]
        waited = max(age, self._last_wait)
        if waited > self.shed_after:
            self._shed.inc()
            raise Overloaded(self.name, waited, self.shed_after)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start batches while slots are free; the oldest call may wait up to `_patience()`.
        The queue depth gauge is set here, once per loop turn that queued calls (not only when
        a batch starts: behind batches that do not end, the queue grows with none starting)."""
        self._scheduled = False
        while self._queued() and self._active < self.concurrency:
            if self._ready is None:
                self._ready = self._queued()
            oldest = min(q[0][2] for q in (self._pending, self._bulk) if q)
            wait = oldest + self._patience() - loop.time()
            if wait > 0 and self._queued() < self.max_size:
                if self._timer is None:
                    self._timer = loop.call_later(wait, self._on_timer, loop)
                break
            self._start(loop)
        self._queue_depth.set(self._queued())

    def _queued(self) -> int:
        return len(self._pending) + len(self._bulk)

    def _patience(self) -> float:
        """How long the oldest call may wait for company: `linger` while recent batches held
        `linger_from` calls or more on average (as queued when a slot was free), else `max_wait`.
        An average, not the last batch: at low rates a chance burst must not make the next calls
        wait."""
        if self._typical >= self.linger_from:
            return max(self.linger, self.max_wait)
        return self.max_wait

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._dispatch(loop)

    def _take(self) -> list:
        """The next batch: the queued calls that are not bulk, then bulk ones while the batch
        has room and carries at most `max_bulk` of them (`bulk_beside` beside other calls; at
        least one, unless `bulk_beside` is 0), each in arrival order. When the oldest queued call
        is bulk, the others leave it a place: under a standing queue of `max_size` other calls
        (a closed loop of ChooseVariant callers) bulk calls never ran, a SendCampaign job stood
        still; a bulk call older than every queued call that is not bulk comes after its
        caller's calls queued before it (a stream's first message) all the same. Cancelled
        callers (deadline, disconnect) need no result: dropped as they come."""
        batch, bulk = [], 0
        room = self.max_size
        oldest_bulk = bool(self._bulk and self._pending and self._bulk[0][4] < self._pending[0][4])
        if oldest_bulk:
            room -= 1
        while self._pending and len(batch) < room:
            entry = self._pending.popleft()
            if not entry[1].done():
                batch.append(entry)
        most = self._most[bool(batch)]
        if most == 0 and not oldest_bulk:
            return batch  # bulk calls wait for a batch of their own
        while self._bulk and len(batch) < self.max_size:
            query, future, *_ = self._bulk[0]
            if not future.done():
                bulk += 1 if self.weigh is None else self.weigh(query)
                if most is not None and bulk > most and batch and not batch[-1][3]:
                    break  # it carries bulk calls already: this one waits for the next
                batch.append(self._bulk[0])
            self._bulk.popleft()
        return batch

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._take()
        ready, self._ready = self._ready, None
        if not batch:
            return
        oldest = next((e[2] for e in batch if e[3]), None)
        self._last_wait = 0.0 if oldest is None else loop.time() - oldest
        self._active += 1
        natural = len(batch) if ready is None else min(ready, len(batch))
        self._typical += (natural - self._typical) / _TYPICAL_OVER
        self._batch_size.observe(len(batch))
        self.runner.start(loop, [e[0] for e in batch],
                          lambda results: self._finish(loop, batch, results))

    def _finish(self, loop: asyncio.AbstractEventLoop, batch: list, results: Sequence) -> None:
        self._active -= 1
        if len(results) != len(batch):
            err = RuntimeError(f"{self.name} batch returned {len(results)} results for {len(batch)}")
            results = [err] * len(batch)
        for (_, future, *_), result in zip(batch, results):
            if future.done():  # the caller was cancelled while its batch ran
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if self._closed and not self._active and self._idle is not None:
            self._idle.set()
        self._dispatch(loop)

    async def close(self) -> None:
        """Finish the running batches and start the calls that were only waiting for company
        (`max_wait`, `linger`) in free slots; calls queued behind busy ones fail with
        BatcherClosed."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._queued() and self._active < self.concurrency:
            self._start(loop)
        for queue in (self._pending, self._bulk):
            while queue:
                future = queue.popleft()[1]
                if not future.done():
                    future.set_exception(BatcherClosed(self.name))
        self._queue_depth.set(0)
        if self._active:
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()
        await self.runner.close()
