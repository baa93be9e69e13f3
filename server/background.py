"""Periodic background passes that a stop waits for.

A pass often runs part of its work in a thread (`asyncio.to_thread`): a sweep's LMDB
transactions, a bundle load, a scrub of the bundle files. Cancelling the task that awaits it
does not stop the thread, so a stop that only cancelled its tasks went on to close the store
(or released the data dir's lock, or exited) under a transaction still running. `Background`
runs each pass shielded from the cancellation of its loop, and `stop` cancels the loops, then
waits for the passes under way to end. Every owner of periodic work (the server, the catalog,
the registry, the impressions) keeps one and stops it before closing what its passes use.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Background"]

logger = logging.getLogger("tailor.background")


class Background:
    """The periodic passes of one owner; `stop` returns once none is under way."""

    def __init__(self) -> None:
        self._loops: list[asyncio.Task] = []
        self._passes: set[asyncio.Future] = set()

    def every(self, seconds: float, one_pass: Callable[[], Awaitable[object]], failed: str,
              first: bool = True, log: logging.Logger = logger, holds: bool = True) -> None:
        """Run `one_pass()` every `seconds` (the first at once, or after `seconds` when not
        `first`) until `stop`; a pass that raises is logged to `log` as `failed` with its
        traceback, and the next one runs on time. `holds` False: a pass that holds nothing a
        stop closes (a timer: `metrics.measure_loop_lag`) is cancelled with its loop rather
        than waited for (each stop waited up to the lag timer's 0.25 s for it). Call it inside
        the running loop."""
        self._loops.append(asyncio.create_task(
            self._loop(seconds, one_pass, failed, first, log, holds)))

    async def _loop(self, seconds: float, one_pass, failed: str, first: bool, log,
                    holds: bool) -> None:
        if not first:
            await asyncio.sleep(seconds)
        while True:
            work = _logged(one_pass, failed, log)
            await (self.run(work) if holds else work)
            await asyncio.sleep(seconds)

    async def run(self, work: Awaitable):
        """Await `work` shielded: cancelling the caller leaves it running, and `stop` waits for
        it."""
        future = asyncio.ensure_future(work)
        self._passes.add(future)
        future.add_done_callback(self._passes.discard)
        return await asyncio.shield(future)

    async def stop(self) -> None:
        """Cancel the loops (waiting, or between passes), then wait for the passes under way."""
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        while self._passes:
            await asyncio.gather(*list(self._passes), return_exceptions=True)


async def _logged(one_pass: Callable[[], Awaitable[object]], failed: str,
                  log: logging.Logger) -> None:
    try:
        await one_pass()
    except Exception:  # keep serving; the next pass runs on time
        log.exception("%s", failed)
