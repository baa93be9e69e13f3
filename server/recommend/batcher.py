"""Group concurrent calls into batches: one ONNX run and one FAISS search per batch.

A batch starts as soon as a compute slot is free; while every slot is busy, arriving calls
queue up and go together into the next batch. `max_wait` lets the first call of a batch wait a
little for company even when a slot is free (0 disables that). A failed batch fails every call
in it with the same error; a per-call error (returned as an exception in the results) fails
only that call.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from .. import metrics

__all__ = ["AdaptiveBatcher"]

logger = logging.getLogger("tailor.recommend.batcher")

Q = TypeVar("Q")
R = TypeVar("R")


class AdaptiveBatcher(Generic[Q, R]):
    def __init__(self, fn: Callable[[Sequence[Q]], Sequence[R | BaseException]], *, max_size: int = 64,
                 max_wait: float = 0.001, concurrency: int = 2, name: str = "recommend",
                 thread_init: Callable[[], None] | None = None):
        if max_size < 1 or concurrency < 1 or max_wait < 0:
            raise ValueError("max_size and concurrency must be >= 1 and max_wait >= 0")
        self.fn = fn
        self.max_size = max_size
        self.max_wait = max_wait
        self.name = name
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix=f"batch-{name}",
                                            initializer=thread_init)
        self._slots: asyncio.Semaphore | None = None
        self._queue: asyncio.Queue | None = None
        self._concurrency = concurrency
        self._loop_task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def _ensure_started(self) -> asyncio.Queue:
        # Created lazily inside the running loop (asyncio objects bind to it).
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._slots = asyncio.Semaphore(self._concurrency)
            self._loop_task = asyncio.create_task(self._batch_loop())
        return self._queue

    async def submit(self, query: Q) -> R:
        future = asyncio.get_running_loop().create_future()
        self._ensure_started().put_nowait((query, future))
        return await future

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            first = await queue.get()
            deadline = loop.time() + self.max_wait
            await self._slots.acquire()
            batch = [first]
            while len(batch) < self.max_size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list) -> None:
        loop = asyncio.get_running_loop()
        queries = [q for q, _ in batch]
        metrics.BATCH_SIZE.labels(self.name).observe(len(batch))
        metrics.QUEUE_DEPTH.labels(self.name).set(self._queue.qsize())
        try:
            results = await loop.run_in_executor(self._executor, self.fn, queries)
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)}")
        except BaseException as err:  # noqa: BLE001 - every caller of the batch gets the error
            logger.exception("batch of %d failed", len(batch))
            results = [err] * len(batch)
        finally:
            self._slots.release()
        for (_, future), result in zip(batch, results):
            if future.done():  # the caller was cancelled (deadline, disconnect)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
        for task in list(self._running):
            await task
        self._executor.shutdown(wait=True)
