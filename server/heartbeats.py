"""Hung workers of `--workers N`: each worker, once it serves, stamps a clock shared with the
parent from its event loop every `BEAT_SECONDS`; the parent (`server.supervisor`) SIGKILLs a
worker whose stamp is older than `worker_hang_seconds`, and that worker's exit then stops the
others as any worker's does. A worker stopped (`kill -STOP`) or stuck with its loop blocked
took half the new connections (SO_REUSEPORT) and answered none, while health, answered by the
other worker, said SERVING and nothing was logged (measured: 2 workers, one SIGSTOPped for 30 s
under load: 3 of 12 health checks and a share of the calls timed out, no line, no metric).

The stamps are `time.monotonic()`, one clock for every process of the host (CLOCK_MONOTONIC),
in shared memory without a lock (one double per worker, written by its worker only)."""
from __future__ import annotations

import asyncio
import time

__all__ = ["Heartbeats"]


class Heartbeats:
    """One stamp per worker: 0 until it serves (a start may take minutes: a migration)."""

    BEAT_SECONDS = 1.0

    def __init__(self, ctx, workers: int):
        self._at = ctx.RawArray("d", workers)

    def keep_beating(self, loop: asyncio.AbstractEventLoop, worker: int) -> None:
        """Stamp worker `worker`'s clock now and every `BEAT_SECONDS` from `loop` (on it)."""
        def beat() -> None:
            self._at[worker] = time.monotonic()
            loop.call_later(self.BEAT_SECONDS, beat)
        beat()

    def silent_for(self, worker: int) -> float:
        """Seconds since worker `worker` last stamped (0 before its first stamp)."""
        at = self._at[worker]
        return time.monotonic() - at if at else 0.0

    def forget(self, worker: int) -> None:
        """No more checks of worker `worker` (it is being killed)."""
        self._at[worker] = 0.0
