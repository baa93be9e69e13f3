"""The parent of `--workers N`: start the workers, forward signals to them, wait for them all,
then reap what those that died left (`server.orphans`) and end multiprocessing's resource
tracker (`server.workers` holds the ports and the metrics dir around it)."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from multiprocessing import resource_tracker
from multiprocessing.connection import wait as wait_for

from .config import Settings
from .orphans import Orphans, become_subreaper
from .worker import STOP_SIGNALS, StartGate, _worker_main

__all__ = ["supervise"]

logger = logging.getLogger("tailor.workers")


def supervise(settings: Settings, reload_metrics) -> None:
    """Start the workers, forward signals to them, and wait for them all to exit."""
    procs: list = []
    gates: list = []  # the workers' start gate, once made
    stopping = False

    def forward(signum, _frame):
        """Stop every worker: a stop signal, or a worker that exited. Those waiting at the
        start gate for the others (one of them gone, or stopping too) stop waiting."""
        nonlocal stopping
        stopping = True
        for gate in gates:  # a flag in shared memory: no lock, safe in a signal handler
            gate.abort()
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signum)

    def forward_reload(signum, _frame):
        reload_metrics()
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signum)

    # Handled before anything can unblock them: multiprocessing's resource tracker, started
    # here (else by the first spawn, once they are blocked again), unblocks SIGINT and SIGTERM
    # on its way out (they would kill the parent, and the workers spawned after it).
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    resource_tracker.ensure_running()
    orphans = _orphans(procs)
    ctx = mp.get_context("spawn")
    gate = StartGate(ctx, settings.workers)
    gates.append(gate)
    # Blocked again while the workers spawn: they inherit the mask and handle a stop signal
    # once started (they drain); SIGHUP stays ignored (inherited) until they handle it.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if stopping:  # a stop signal before any worker: none is started
        logger.info("stopped before the workers started")
    else:
        procs.extend(ctx.Process(target=_worker_main, args=(settings, i, gate),
                                 name=f"tailor-worker-{i}") for i in range(settings.workers))
        for proc in procs:
            proc.start()
    signal.signal(signal.SIGHUP, forward_reload)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one that came meanwhile goes now
    failed = 0
    running = {proc.sentinel: proc for proc in procs}
    while running:  # whichever worker ends first, not the first one started
        one_gone = len(running) < len(procs)  # what it left may exit any moment
        for sentinel in wait_for(list(running), _REAP_SECONDS if one_gone else None):
            proc = running.pop(sentinel)
            proc.join()
            if not stopping:  # on its own, even cleanly (a stop signal sent to it alone):
                logger.error("worker %s exited with %s; stopping the others", proc.name,
                             proc.exitcode)  # the port would serve one worker short
                failed = failed or proc.exitcode or 1
                forward(signal.SIGTERM, None)
            elif proc.exitcode:  # killed or crashed mid-drain: its calls in flight were cut
                logger.error("worker %s exited with %s while the server stopped", proc.name,
                             proc.exitcode)
                failed = failed or proc.exitcode
        orphans.reap()
    orphans.finish(_ORPHANS_SECONDS)
    _stop_resource_tracker()
    if failed:
        raise SystemExit(2 if failed == 2 else 1)


_REAP_SECONDS = 0.2
"""How often the parent reaps what a worker that died left (`_orphans`) while the others stop."""
_ORPHANS_SECONDS = 10.0
"""How long the parent waits, once its workers are gone, for what they left to exit, before it
kills what still runs: a writer answers the batches its stdin held (one commit), then exits."""


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
