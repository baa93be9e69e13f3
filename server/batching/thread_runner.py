"""`ThreadRunner`: batches run on a small thread pool (the default for read batches)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .adaptive import Done
from .errors import BatcherClosed
from .logging import logger

__all__ = ["ThreadRunner"]


class ThreadRunner:
    """Runs `fn(queries)` on a pool of `concurrency` threads (`thread_init` runs in each)."""

    def __init__(self, fn: Callable[[Sequence], Sequence], *, concurrency: int, name: str,
                 thread_init: Callable[[], None] | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.fn = fn
        self.concurrency = concurrency
        self.name = name
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"batch-{name}",
                                            initializer=thread_init)

    def start(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None:
        try:
            job = self._executor.submit(self._work, loop, queries, done)
        except Exception as err:  # the pool cannot take work (shut down, no thread)
            done([err] * len(queries))
            return
        # A pool that breaks (e.g. its thread initializer raised) fails the job without
        # running it: give that error to the batch's callers and free the slot.
        job.add_done_callback(lambda j: self._unrun(loop, len(queries), done, j))

    def _work(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None:
        """In a pool thread: run the batch, then hand the outcome back to the loop."""
        try:
            results = self.fn(queries)
        except BaseException as err:  # noqa: BLE001 - every caller of the batch gets the error
            logger.exception("%s batch of %d failed", self.name, len(queries))
            # SystemExit & co would escape the callers' awaits: they get a RuntimeError instead
            err = err if isinstance(err, Exception) else RuntimeError(f"{self.name} batch aborted: {err!r}")
            results = [err] * len(queries)
        self._from_thread(loop, done, results)

    def _unrun(self, loop: asyncio.AbstractEventLoop, n: int, done: Done, job) -> None:
        err = BatcherClosed(self.name) if job.cancelled() else job.exception()
        if err is not None:
            self._from_thread(loop, done, [err] * n)

    def _from_thread(self, loop: asyncio.AbstractEventLoop, fn, *args) -> None:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is left to answer
            logger.error("%s batch finished after its event loop closed", self.name)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
