"""The stop's bound (`Settings.stop_seconds`): `Stop`, when a stop began and what is left of it,
which the parent of `--workers N` (`server.supervisor`) and every server process share, and
`StopWatch`, the thread that takes a server process's stop signals and ends what still stops at
that bound (a worker of `--workers N` too: its parent may be gone).

A server of one worker has no parent to bound its stop: a drain or grace that overran, a writer
or zygote that did not exit (stopped, hung) or a stuck commit kept it stopping past the service
manager's stop timeout (measured: writers stopped, 60 s; writers and zygote stopped, 70 s, the
writers then left to PID 1), whose SIGKILL cut it short, and, sent to the server's process alone,
left the zygote and writers running (they are in a session of their own). The
watchdog is a thread of its own that takes the stop signals itself (`signal.sigwait`: they stay
blocked in every other thread), so neither a stuck event loop nor a main thread stuck in C code
(a write transaction waiting for LMDB's lock) keeps it from starting the bound, nor from ending
it: at `KILL_SECONDS` before its end it SIGKILLs the writers and their zygote, reaps them, and
exits 1, as the parent of `--workers N` does when it had to kill its workers.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable

from .batching.zygote import kill_zygote
from .config import STOP_KILL_SECONDS
from .orphans import Orphans

__all__ = ["KILL_SECONDS", "Stop", "StopWatch"]

logger = logging.getLogger("tailor.workers")

KILL_SECONDS = STOP_KILL_SECONDS
"""Kept at the end of the stop (`stop_seconds`): what still stops this long before its end (the
workers of `--workers N`; one worker's writers and zygote) is SIGKILLed, and reaped until half
of it is left; the rest ends the process (the parent's resource tracker). A process SIGKILLed is
gone in milliseconds, unless it is in an uninterruptible wait (a hung disk), which no longer wait
would end."""
_EXIT_SECONDS = 0.1
"""Kept at the very end of one worker's stop for its exit (`StopWatch._kill`)."""
_REAP_SECONDS = 0.2
"""How long one worker reaps what it killed at the least: a watchdog woken late (a busy host)
still reaps the writers its zygote's death hands back to it, not leaving them to PID 1."""
KILLED_EXIT = 1
"""The exit status of a stop that had to kill what still stopped (calls or batches were cut);
also the parent of `--workers N`'s when a worker died or exited on its own (`supervise`)."""


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


class StopWatch:
    """Takes this process's stop signals (`signals`, blocked in every thread: `server.workers`
    blocks them first, and every thread and process started since inherits that) on a thread
    of its own and calls `on_stop` with the first (its number). The stop is bounded (`seconds`):
    `KILL_SECONDS` before its end the writers and their zygote are SIGKILLed and reaped
    (`_kill`), and the process exits `KILLED_EXIT`, whatever its other threads do.

    A worker of `--workers N` is bounded so too. Its parent's bound, which began at the same
    signal (forwarded: a moment before this one), kills it first while the parent lives; a
    parent SIGKILLed forwards nothing and bounds nothing, but the kernel sends the worker a
    signal then (`worker.PARENT_GONE`, among its `signals`: `orphans.signal_when_parent_dies`),
    which starts this bound, or finds it started. Before, a worker whose parent was gone
    drained without a bound: its writers stopped (hung), it ran on for a minute, unsupervised
    (no service manager waits for it)."""

    def __init__(self, signals: Iterable[signal.Signals], on_stop: Callable[[int], object],
                 seconds: float):
        self.signals = set(signals)
        self.on_stop = on_stop
        self.stop = Stop(seconds)
        self._killing = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stop-watch", daemon=True)
        self._thread.start()
        atexit.register(self._settle)

    @property
    def killing(self) -> bool:
        """The bound is being enforced (`_kill`): what still stopped is being killed, and the
        process exits `KILLED_EXIT`. The kill ends the main thread's waits (a writer's exit),
        so a stop that returns now was cut, not clean: its `stopped` line, logged after the
        kill's, read as a clean stop at the log's end (`worker._serve_one` asks this first;
        a kill that begins in the instant after may still follow that line)."""
        return self._killing.is_set()

    def _settle(self) -> None:
        """At this process's exit: once the bound is being enforced, let it end the process
        (`KILLED_EXIT`). What it kills ends the main thread's waits (a writer's exit), which
        then exited 0 while the kill was under way, cutting its reaping short."""
        if self._killing.is_set():
            self._thread.join()

    def _watch(self) -> None:
        signum = signal.sigwait(self.signals)
        self.stop.begin()  # first: whatever `on_stop` does (the loop may be closed)
        try:
            self.on_stop(signum)
        except Exception:  # noqa: BLE001 - the bound holds even if the stop cannot be asked for
            logger.exception("could not start the stop")
        while (left := self.stop.left(KILL_SECONDS)) > 0:
            time.sleep(left)  # CLOCK_MONOTONIC; no signal interrupts it (all are blocked)
        self._kill()

    def _kill(self) -> None:
        """SIGKILL the writers and their zygote and wait for the zygote to be reaped
        (`kill_zygote`), then every child of this process left (the writers of a zygote that
        died, now or before: a subreaper's), reap them until
        `_EXIT_SECONDS` before the bound's end (there is no resource tracker to end after them,
        as the parent of `--workers N` has), `_REAP_SECONDS` at least, and exit `KILLED_EXIT`
        (no atexit: the main thread may hold what they need). The log line goes on a thread of
        its own (`_say`), waited for `_EXIT_SECONDS` at most: a log stream that blocks (a full
        pipe nobody reads) held the main thread in its own line, with the handler's lock, and
        this one behind it, which then killed nothing and never exited."""
        self._killing.set()
        said = threading.Thread(target=self._say, name="stop-watch-log", daemon=True)
        said.start()
        kill_zygote(self.stop.left(_EXIT_SECONDS))
        orphans = Orphans(lambda: ())  # every child: this process waits for none any more
        orphans.kill(orphans.reap(), max(_REAP_SECONDS, self.stop.left(_EXIT_SECONDS)))
        said.join(_EXIT_SECONDS)
        os._exit(KILLED_EXIT)

    def _say(self) -> None:
        """The kill's one log line, and the streams flushed for `os._exit` (`_kill`)."""
        logger.error("still stopping %.0f s after the stop began (stop_seconds %g): killing the "
                     "writer processes and exiting %d", self.stop.seconds - KILL_SECONDS,
                     self.stop.seconds, KILLED_EXIT)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
