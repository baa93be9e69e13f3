"""The audit log as the auth interceptor writes to it: never on the event loop, denials collapsed.

An audit line costs a `flock`, an append and the tip's rewrite and rename (1.4-2.8 ms on a
container's overlay disk). Written on the event loop, every call of the worker waited for it;
and a denied call, which any principal without the role can repeat as fast as it likes, wrote
one each. `AuditWriter` writes every line on one thread of its own (lines keep their order,
and a burst of sensitive calls takes no thread other off-loop work needs) and passes denied
calls through `failures.DeniedDigest` (one line per principal and method per interval, the
rest counted). A call still waits for its own line, as before: its answer follows its audit.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
from concurrent.futures import ThreadPoolExecutor

from ..contexts import carried
from .failures import DeniedDigest
from .logging import logger

__all__ = ["AuditWriter"]


def _failed_unawaited(method: str, written: asyncio.Future) -> None:
    """Log a line's failure that no call is left to log (its task was cancelled)."""
    if not written.cancelled() and written.exception() is not None:
        logger.error("audit record failed for %s: %r", method, written.exception())


class AuditWriter:
    """`record(principal, method, target, status, request_id, **details)` for the interceptor,
    async: `log`'s `record` (sync: on this writer's thread; async: awaited), one line each;
    `denied(principal, method, target, request_id)` for a denied call, collapsed per
    (principal, method) over `interval`, at most `max_pairs` pairs (`DeniedDigest`).
    `close()` writes the denials still counted."""

    def __init__(self, log, interval: float, max_pairs: int):
        self.log = log
        self.denials = DeniedDigest(self, interval, max_pairs)
        self._thread: ThreadPoolExecutor | None = ThreadPoolExecutor(
            1, thread_name_prefix="tailor-audit")

    async def denied(self, principal: str, method: str, target: str, request_id: str) -> None:
        """A call denied for its caller's roles (at its start, or mid-stream when it is not a
        sensitive call, which keeps its own line): collapsed per (principal, method)."""
        await self.denials.denied(principal, method, target, request_id)

    async def record(self, principal: str, method: str, target: str, status: str,
                     request_id: str, **details: str | int) -> None:
        """One line of its own, whatever its status (a sensitive call denied mid-stream too)."""
        write = functools.partial(self.log.record, principal, method, target, status,
                                  request_id, **details)
        if inspect.iscoroutinefunction(self.log.record):
            await write()
            return
        if self._thread is None:  # closed: a line that comes later still gets written
            written = asyncio.ensure_future(asyncio.to_thread(write))
        else:
            # in the call's context: its target under this server's `user-id` key
            written = asyncio.get_running_loop().run_in_executor(self._thread, carried(write))
        # the call's task may be cancelled meanwhile (a client gone, a stop past its grace):
        # the line is written anyway, as it was when it was written on the loop
        try:
            await asyncio.shield(written)
        except asyncio.CancelledError:
            written.add_done_callback(functools.partial(_failed_unawaited, method))
            raise

    async def close(self) -> None:
        """Write the denied calls counted but not yet audited, then end the thread."""
        await self.denials.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.shutdown)
