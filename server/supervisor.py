"""The parent of `--workers N`: start the workers, forward signals to them, wait for them all,
then reap what those that died left (`server.orphans`) and end multiprocessing's resource
tracker (`server.workers` holds the ports and the metrics dir around it)."""
from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import wait as wait_for

from .config import Settings
from .heartbeats import Heartbeats
from .orphans import Orphans, become_subreaper
from .stop_bound import KILL_SECONDS as _KILL_SECONDS
from .stop_bound import KILLED_EXIT
from .stop_bound import Stop as _Stop
from .worker import REFUSED_EXIT, STOP_SIGNALS, StartGate, _worker_main

__all__ = ["supervise"]

logger = logging.getLogger("tailor.workers")


def supervise(settings: Settings, reload_metrics) -> None:
    """Start the workers, forward signals to them, and wait for them all to exit; the whole
    stop, from its start (a stop signal, a worker's own exit) until this returns, takes at
    most `settings.stop_seconds` (`_Stop`)."""
    procs: list = []
    gates: list = []  # the workers' start gate, once made
    stop = _Stop(settings.stop_seconds)
    done, claim = threading.Event(), threading.Lock()

    def forward(signum, _frame):
        """Stop every worker: a stop signal, or a worker that exited. Those waiting at the
        start gate for the others (one of them gone, or stopping too) stop waiting."""
        stop.begin()
        for gate in gates:  # a flag in shared memory: no lock, safe in a signal handler
            gate.abort()
        _signal_workers(procs, signum)

    def forward_reload(signum, _frame):
        reload_metrics()
        _signal_workers(procs, signum)

    # Handled before anything can unblock them: multiprocessing's resource tracker, started
    # here (else by the first spawn, once they are blocked again), unblocks SIGINT and SIGTERM
    # on its way out (they would kill the parent, and the workers spawned after it).
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    resource_tracker.ensure_running()
    orphans = _orphans(procs)
    ctx = mp.get_context("spawn")
    gate, beats = StartGate(ctx, settings.workers), Heartbeats(ctx, settings.workers)
    gates.append(gate)
    # Blocked again while the workers spawn: they inherit the mask and handle a stop signal
    # once started (they drain); SIGHUP stays ignored (inherited) until they handle it.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    _hold_the_bound(stop, done, claim)  # its thread never takes them (they are for `forward`)
    if stop.began:  # a stop signal before any worker: none is started
        logger.info("stopped before the workers started")
    else:
        procs.extend(ctx.Process(target=_worker_main, args=(settings, i, gate, beats),
                                 name=f"tailor-worker-{i}") for i in range(settings.workers))
        for proc in procs:
            proc.start()
    signal.signal(signal.SIGHUP, forward_reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile goes now
    hung = _HangWatch(procs, beats, settings.worker_hang_seconds, stop)
    failed, running = _wait_for_workers(procs, orphans, stop, forward, hung)
    killed = _kill_workers(running, stop)
    failed = failed or killed
    orphans.finish(min(_ORPHANS_SECONDS, stop.left(_KILL_SECONDS)), stop.left(_KILL_SECONDS / 2))
    with claim:  # what is left logs nothing, and ends by the bound's end (`_hold_the_bound`)
        done.set()
    _stop_resource_tracker(min(5.0, stop.left()))
    stop.close()
    for sig in (*STOP_SIGNALS, signal.SIGHUP):  # the stop is done: one now has nothing to do
        signal.signal(sig, signal.SIG_IGN)  # (at exit, Python puts back SIG_DFL: it killed this)
    if failed:  # a worker refused to start, or one was killed, crashed or exited on its own
        raise SystemExit(REFUSED_EXIT if failed == REFUSED_EXIT else KILLED_EXIT)


_REAP_SECONDS = 0.2
"""How often the parent reaps what a worker that died left (`_orphans`) while the others stop."""
_ORPHANS_SECONDS = 10.0
"""How long the parent waits, once its workers are gone, for what they left to exit, before it
kills what still runs: a writer answers the batches its stdin held (one commit), then exits.
Less if the stop's bound (`stop_seconds`) comes first."""


_WATCH_SECONDS = 1.0
"""How often the parent's `_hold_the_bound` looks whether the stop began (then it sleeps until
the bound's end)."""


def _hold_the_bound(stop: _Stop, done: threading.Event, claim: threading.Lock) -> None:
    """End this process at the stop's bound if its main thread has not got past the logging of
    its stop by then (`done`, set holding `claim`): blocked in a log line (a full pipe nobody
    reads: a stuck log collector, `| less`), holding the logging handler's lock, it killed
    nothing (it logs its kill first) and never exited. `_KILL_SECONDS / 2` before the end, a
    thread of its own then SIGKILLs and reaps every child of this process left (the workers,
    what they left), ends the resource tracker, logs nothing (the stream blocks) and exits
    `KILLED_EXIT`, as the kill does. Its thread blocks every signal the parent handles (the
    stop signals inherited: started while they are blocked), so the kernel gives them to the
    main thread, whose blocked write they interrupt (EINTR, retried once `forward` has run): a
    stop signal still begins the stop."""
    def watch() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # `forward_reload`'s
        while not done.wait(min(_WATCH_SECONDS, stop.left(_KILL_SECONDS / 2))):
            if stop.left(_KILL_SECONDS / 2) == 0:
                with claim:  # the main thread, once past its logging, waits here to be ended
                    if done.is_set():
                        return
                    _end_at_the_bound(stop)
    threading.Thread(target=watch, name="stop-bound", daemon=True).start()


def _end_at_the_bound(stop: _Stop) -> None:
    """`_hold_the_bound`'s end: every child but the resource tracker SIGKILLed and reaped, the
    tracker ended (`_stop_resource_tracker`), exit `KILLED_EXIT` (no atexit: it would log)."""
    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    orphans = Orphans(lambda: [tracker])
    orphans.kill(orphans.reap(), _KILL_SECONDS / 4)
    _stop_resource_tracker(stop.left())
    os._exit(KILLED_EXIT)


def _signal_workers(procs: list, signum: int) -> None:
    """Send `signum` to the workers still running. A handler that runs inside another (two
    signals in a row) may reap a worker between the other's check and its kill: that
    ProcessLookupError ended the supervision (a traceback, the workers left to themselves)."""
    for proc in procs:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)


def _wait_for_workers(procs: list, orphans: Orphans, stop: _Stop,
                      forward: Callable, hung: _HangWatch) -> tuple[int, dict]:
    """Wait for the workers, whichever ends first, until `_KILL_SECONDS` before the stop's
    end, reaping what dead ones left meanwhile and killing a hung one (`hung`). Returns the
    exit status so far and the workers still running (by sentinel)."""
    failed = 0
    running = {proc.sentinel: proc for proc in procs}
    while running and (timeout := stop.left(_KILL_SECONDS)) > 0:
        if len(running) < len(procs):  # what one that is gone left may exit any moment
            timeout = min(timeout, _REAP_SECONDS)
        timeout = hung.kill_silent(timeout)
        for ready in wait_for([*running, stop.wake], None if timeout == math.inf else timeout):
            if ready == stop.wake:
                stop.woken()
                continue
            code = _worker_gone(running.pop(ready), stop, forward)
            failed = failed or code
        orphans.reap()
    return failed, running


_PAUSED_SECONDS = 2 * Heartbeats.BEAT_SECONDS
"""A gap between two of `_HangWatch`'s looks (one a heartbeat at most) longer than this: the
parent did not run meanwhile, its workers most likely neither (every process of the server
stopped, then resumed: the parent, running first, took every worker for hung and killed it)."""


class _HangWatch:
    """The parent's side of `server.heartbeats`: a serving worker whose loop has not stamped
    its heartbeat for `seconds` (0: never checked) is SIGKILLed, once, with a line saying why;
    its exit then stops the others (`_worker_gone`). Not while the server stops; time the
    parent itself did not run (`_PAUSED_SECONDS`) counts for no worker."""

    def __init__(self, procs: list, beats: Heartbeats, seconds: float, stop: _Stop):
        self.procs, self.beats, self.seconds, self.stop = procs, beats, seconds, stop
        self.looked = self.resumed = time.monotonic()

    def kill_silent(self, timeout: float) -> float:
        """Kill the workers silent too long; the wait until the next look (`timeout` at most)."""
        if not self.seconds or self.stop.began:
            return timeout
        now = time.monotonic()
        if now - self.looked > _PAUSED_SECONDS:  # this process did not run either: the whole
            self.resumed = now  # server was paused (Ctrl-Z, a cgroup freeze); its workers had
        self.looked = now  # no chance to stamp: their silence counts from now
        for i, proc in enumerate(self.procs):
            silent = min(self.beats.silent_for(i), now - self.resumed)
            if silent > self.seconds and proc.exitcode is None:
                self.beats.forget(i)
                logger.error("worker %s (pid %d) has not run its event loop for %.0f s "
                             "(worker_hang_seconds %g: stopped, or hung): killing it", proc.name,
                             proc.pid, silent, self.seconds)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        return min(timeout, Heartbeats.BEAT_SECONDS)


def _worker_gone(proc, stop: _Stop, forward: Callable) -> int:
    """Log a worker's end; a worker that ends on its own stops the others. Its exit status
    for the parent's (0: none to give)."""
    proc.join()
    _forget(proc)
    if not stop.began:  # on its own, even cleanly (a stop signal sent to it alone):
        logger.error("worker %s exited with %s; stopping the others", proc.name,
                     proc.exitcode)  # the port would serve one worker short
        forward(signal.SIGTERM, None)
        return proc.exitcode or KILLED_EXIT
    if proc.exitcode:  # killed or crashed mid-drain: its calls in flight were cut
        logger.error("worker %s exited with %s while the server stopped", proc.name,
                     proc.exitcode)
    return proc.exitcode or 0


def _forget(proc) -> None:
    """A worker gone leaves the live gauges (`metrics.forget_worker`); imported here, not at
    start: the parent imports the metrics only when it serves them."""
    from .metrics import forget_worker
    forget_worker(proc.pid)


def _kill_workers(running: dict, stop: _Stop) -> int:
    """SIGKILL the workers still stopping at the end of the stop's bound, and reap them (what
    they leave is the orphans' to end); `KILLED_EXIT` if there were any (their calls in flight
    cut)."""
    if not running:
        return 0
    logger.error("%d workers still stopping %.0f s after the stop began (stop_seconds %g): "
                 "killing them", len(running), max(0.0, stop.seconds - _KILL_SECONDS), stop.seconds)
    for proc in running.values():
        with contextlib.suppress(ProcessLookupError):  # not reaped yet: still its pid
            os.kill(proc.pid, signal.SIGKILL)
    for proc in running.values():
        proc.join(stop.left(_KILL_SECONDS / 2))  # reaped: its children are this process's
        if proc.exitcode is not None:
            _forget(proc)
    return KILLED_EXIT


def _orphans(procs: list) -> Orphans:
    """Make this process the subreaper of the workers' descendants (`server.orphans`): a worker
    that dies (SIGKILL, the OOM killer) leaves its zygote and writers to this process, not to
    PID 1, which in a container without an init that reaps left each a zombie once it exited.
    They are reaped by pid; the workers and the resource tracker, this process's own, are not
    (a process this one ever starts otherwise must be listed in `own` too)."""
    try:
        become_subreaper()
    except (OSError, AttributeError) as err:  # not Linux, or not allowed
        logger.warning("what a worker that dies leaves will not come back to this process: %s",
                       err)

    def own() -> list[int | None]:
        tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
        return [tracker, *(proc.pid for proc in procs if proc.exitcode is None)]
    return Orphans(own)


def _stop_resource_tracker(within: float = 5.0) -> None:
    """End multiprocessing's resource tracker (its pipe closed: it cleans up what the workers
    left registered, as at this process's exit) and reap it, waiting at most `within` seconds
    (a process that kept its pipe open keeps it running). It ended a moment after this process,
    and was then left to PID 1: a zombie where that does not reap (a container without tini)."""
    tracker = resource_tracker._resource_tracker  # Python 3.11's `_stop` waits for ever
    fd, pid = getattr(tracker, "_fd", None), getattr(tracker, "_pid", None)
    if fd is None or pid is None:
        return
    tracker._fd = tracker._pid = None
    os.close(fd)
    deadline = time.monotonic() + within
    try:
        while not os.waitpid(pid, os.WNOHANG)[0] and time.monotonic() < deadline:
            time.sleep(0.01)
    except ChildProcessError:  # not this process's child
        pass
