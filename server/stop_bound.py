"""The stop's bound (`Settings.stop_seconds`): `Stop`, when a stop began and what is left of it,
and `KILL_SECONDS`, kept at its end, which the parent of `--workers N` (`server.supervisor`)
uses and a server of one worker will too."""
from __future__ import annotations

import contextlib
import math
import os
import time

from .config import STOP_KILL_SECONDS

__all__ = ["KILL_SECONDS", "Stop"]

KILL_SECONDS = STOP_KILL_SECONDS
"""Kept at the end of the stop (`stop_seconds`): what still stops this long before its end (the
workers of `--workers N`; one worker's writers and zygote) is SIGKILLed, and reaped until half
of it is left; the rest ends the process (the parent's resource tracker). A process SIGKILLed is
gone in milliseconds, unless it is in an uninterruptible wait (a hung disk), which no longer wait
would end."""


class Stop:
    """When the stop began (the first stop signal, or a worker's own exit: `begin`) and what
    is left of its `seconds`; `wake` turns readable at each `begin`. A signal handled while
    the parent waits for its workers resumes the wait with its old timeout (PEP 475), none
    before a stop: the wait also watches `wake`, so the bound counts from the signal."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._deadline: float | None = None
        self.wake, self._wake = os.pipe()
        os.set_blocking(self.wake, False)
        os.set_blocking(self._wake, False)

    @property
    def began(self) -> bool:
        return self._deadline is not None

    def begin(self) -> None:
        """The stop began now, unless it had (called in a signal handler too)."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        if self._wake is not None:
            try:
                os.write(self._wake, b"\0")
            except BlockingIOError:  # woken already
                pass

    def woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake, 512)

    def left(self, reserve: float = 0.0) -> float:
        """Seconds until `reserve` seconds before the stop's end (inf before it began)."""
        if self._deadline is None:
            return math.inf
        return max(0.0, self._deadline - reserve - time.monotonic())

    def close(self) -> None:
        fds, self._wake = (self.wake, self._wake), None  # a late signal writes nothing
        for fd in fds:
            os.close(fd)
