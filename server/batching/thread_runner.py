"""`ThreadRunner`: batches run on a few dedicated threads (the default for read batches).

Each thread takes batches from one `queue.SimpleQueue` (a C queue: one put and one get per batch)
and hands the outcome back with `loop.call_soon_threadsafe`. That is the whole hand-off: 23-32 us
of process CPU per round trip of an empty batch, against 42-58 us through a `ThreadPoolExecutor`
(its Future, work item, locks and done callbacks); Recommend's batches are small (1-2 calls
under a closed-loop load), so the hand-off is paid about once per call.
"""
from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.thread import BrokenThreadPool

from ..contexts import carried
from .adaptive import Done
from .errors import BatcherClosed
from .logging import log_failed_batch, logger

__all__ = ["ThreadRunner"]

_STOP = None
"""Queued once per thread by `close`, after every batch already queued."""


class ThreadRunner:
    """Runs `fn(queries)` on `concurrency` threads (`thread_init` runs first in each), started
    at the first batch. A `thread_init` that raises breaks the runner: that batch and every
    later one fail with `BrokenThreadPool` (the threads stay to answer them)."""

    def __init__(self, fn: Callable[[Sequence], Sequence], *, concurrency: int, name: str,
                 thread_init: Callable[[], None] | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.fn = fn
        self.concurrency = concurrency
        self.name = name
        self.thread_init = thread_init
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._broken: BrokenThreadPool | None = None
        self._closed = False
        self._context = contextvars.copy_context()
        """Where its threads run: the context it was made in (a server's, with its keys:
        `server.contexts`), not that of the call whose batch started them, whose request id
        every later batch's log lines would carry (`logging.current_call`)."""

    def start(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None:
        if self._closed or self._broken is not None:  # nothing will run it: answer now
            done([self._broken or BatcherClosed(self.name)] * len(queries))
            return
        if not self._threads:
            self._start_threads()
        self._jobs.put((loop, queries, done))

    def _start_threads(self) -> None:
        for i in range(self.concurrency):
            thread = threading.Thread(target=carried(self._serve, context=self._context),
                                      name=f"batch-{self.name}_{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        """One thread: its `thread_init`, then batches until `close` queues `_STOP`."""
        if self.thread_init is not None:
            try:
                self.thread_init()
            except BaseException:  # noqa: BLE001 - every batch this runner gets fails instead
                logger.exception("%s batch thread initializer failed", self.name)
                self._broken = BrokenThreadPool("A thread initializer failed, the thread pool is "
                                                "not usable anymore")
        while (job := self._jobs.get()) is not _STOP:
            loop, queries, done = job
            if self._broken is not None:
                self._from_thread(loop, done, [self._broken] * len(queries))
            else:
                self._work(loop, queries, done)

    def _work(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None:
        """In a runner thread: run the batch, then hand the outcome back to the loop."""
        try:
            results = self.fn(queries)
        except BaseException as err:  # noqa: BLE001 - every caller of the batch gets the error
            log_failed_batch(logger, f"{self.name} batch of {len(queries)}", err)
            # SystemExit & co would escape the callers' awaits: they get a RuntimeError instead
            err = err if isinstance(err, Exception) else RuntimeError(f"{self.name} batch aborted: {err!r}")
            results = [err] * len(queries)
        self._from_thread(loop, done, results)

    def _from_thread(self, loop: asyncio.AbstractEventLoop, fn, *args) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is left to answer
            logger.error("%s batch finished after its event loop closed", self.name)

    async def close(self) -> None:
        """Run the batches already queued, then stop the threads."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._threads = []
