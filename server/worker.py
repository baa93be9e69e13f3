"""One worker process: serve until SIGINT/SIGTERM, then drain (`server.workers` starts it).

With `--workers N` each worker is spawned by the parent (`server.supervisor`) and turns SERVING
only once every worker listens (`StartGate`); it stops as on a stop signal when the parent is
gone. With one worker, `server.workers.serve` runs `_serve_one` in its own process.
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import Settings
from .errors import TailorError
from .heartbeats import Heartbeats
from .logging import configure_logging
from .orphans import signal_when_parent_dies
from .start_errors import serve_flags, start_error
from .stop_bound import StopWatch

if TYPE_CHECKING:
    from .app import TailorServer

__all__ = ["PARENT_GONE", "REFUSED_EXIT", "STOP_SIGNALS", "StartGate"]

logger = logging.getLogger("tailor.workers")


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PARENT_GONE = signal.SIGUSR2
"""The signal the kernel sends a worker of `--workers N` when its parent dies
(`PR_SET_PDEATHSIG`: `orphans.signal_when_parent_dies`); blocked from the start, as the stop
signals are (`workers.serve`: a worker inherits the mask, and threads run before its own code
does), and taken with them by `stop_bound.StopWatch`. A signal of its own, not SIGTERM: the
stop it starts may end before the loop reads the parent's sentinel (a worker with nothing to
drain stopped in 44 ms), and, as a SIGTERM, it looked like the parent's own forwarded stop: the
worker never said why it stopped. Its new parent's pid does not tell either: a parent SIGKILLed
signals when the thread that started the worker exits, before its other threads do."""
REFUSED_EXIT = 2
"""A worker's exit when it refused to start (a port in use, a bundle refused, a full disk:
one line says why), and then its parent's (`server.supervisor`), told apart from a stop that
cut calls."""


class StartGate:
    """Where the workers wait for each other before turning SERVING: a "listening" flag per
    worker and the parent's "abort" flag, in shared memory and without a lock, so a worker that
    dies at any moment (SIGKILL, a segfault) leaves nothing held: the parent aborts and the
    others give up at once. (A multiprocessing Barrier's abort waits for every waiter's
    acknowledgement, a dead one's too: the parent then hung, deaf to SIGTERM.)"""

    POLL_SECONDS = 0.05

    def __init__(self, ctx, workers: int):
        self._up = ctx.RawArray("b", workers)
        self._abort = ctx.RawValue("b", 0)

    def abort(self) -> None:
        """Make every `wait` give up (a worker failed, or the server stops)."""
        self._abort.value = 1

    def wait(self, worker: int, stopped=lambda: False) -> bool:
        """Say worker `worker` listens, then wait for all the others: True once every one
        does; False if the gate is aborted or `stopped()` first."""
        self._up[worker] = 1
        while not (self._abort.value or stopped()):
            if all(self._up):
                return True
            time.sleep(self.POLL_SECONDS)
        return False


async def _serve_one(settings: Settings, all_up=None, on_hup=lambda: None) -> None:
    """Serve until SIGINT/SIGTERM, then drain (`TailorServer.stop`). With `all_up` (this
    worker's index, the `StartGate` and the `Heartbeats` shared by the workers), health turns
    SERVING only once every worker is listening, so a SERVING answer means the port is whole,
    and from then on the loop stamps its heartbeat for the parent. SIGHUP re-reads
    the TLS certificate and key (and calls `on_hup`).

    The stop signals arrive blocked (`serve` blocks them before anything else, and spawned
    workers inherit the mask) and stay blocked: a thread of their own takes them
    (`stop_bound.StopWatch`), so a signal at any moment of the start drains instead of killing
    the process, and the stop is bounded (`stop_seconds`: one worker has no parent, and a
    worker's parent may be gone) even if this loop is stuck."""
    # Imported here, not at the top: the parent of `--workers N` imports this module and never
    # serves (server.app loads the whole server: 1.2-1.4 s of CPU it paid at every start).
    from .app import TailorServer
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    server = TailorServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    gone = _stop_with_parent(loop, stop) if all_up is not None else None

    watch = StopWatch(STOP_SIGNALS | {PARENT_GONE} if gone is not None else STOP_SIGNALS,
                      _stopper(loop, stop, gone), settings.stop_seconds)
    server.reloaders.append(on_hup)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    await _start(server, all_up, stop)  # a stop signal meanwhile drains right after
    await stop.wait()
    logger.info("draining: health NOT_SERVING, in-flight calls have %.1fs", settings.grace_seconds)
    await server.stop()
    if not watch.killing:  # else the bound's kill cut the stop short, and its line says so
        logger.info("stopped")
    _deaf_once_stopped(loop)


def _stopper(loop: asyncio.AbstractEventLoop, stop: asyncio.Event,
             gone: Callable[[], None] | None) -> Callable[[int], None]:
    """What the stop-watch thread calls with the first stop signal: set `stop` on `loop`
    (`gone` first, for `PARENT_GONE`). Once the loop is closed (the start refused, or the stop
    done) there is nothing to start: a SIGTERM the parent forwarded then, when another worker
    refused its start, logged `could not start the stop` with a traceback (RuntimeError: Event
    loop is closed) beside the refusal's one line."""
    def on_stop(signum: int) -> None:
        if signum == PARENT_GONE and gone is not None:
            gone()
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:
            if not loop.is_closed():
                raise
    return on_stop


def _deaf_once_stopped(loop: asyncio.AbstractEventLoop) -> None:
    """Ignore SIGHUP from now on: the server has stopped, and the process only exits. The
    loop's handler goes with it (at the end of `asyncio.run`), and a SIGHUP that came then (a
    reload by name, forwarded by the parent) killed the process as it exited (-1): a clean
    stop the parent logged as a worker cut mid-drain, exiting 1. The stop signals need no
    such care: they stay blocked in every thread (`stop_bound.StopWatch` took the first), so
    a later one waits, pending, and never acts. (A SIGHUP in the instant between the
    handler's removal and its SIG_IGN still acts: no public call swaps them at once.)"""
    loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _stop_with_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event
                      ) -> Callable[[], None] | None:
    """Drain as on a stop signal once the parent is gone. A parent SIGKILLed (`kill -9`, the
    OOM killer) forwards nothing: its workers would serve on unsupervised (no restart when one
    dies, no stop, no metrics), and a server started again beside them (SO_REUSEPORT) would
    share the port with them. The parent's sentinel (the spawn pipe it holds open) turns
    readable when it exits; the kernel's `PARENT_GONE` to `stop_bound.StopWatch` starts the
    stop's bound then too, even with this loop stuck (`_worker_main`).

    Returns what says so (None without a parent), once, whichever comes first: called on the
    loop by the sentinel and on the stop-watch thread by `PARENT_GONE`."""
    parent = mp.parent_process()
    if parent is None:
        return None
    once = threading.Lock()

    def said() -> None:
        if once.acquire(blocking=False):
            logger.error("the parent process is gone: stopping this worker")

    def read() -> None:
        loop.remove_reader(parent.sentinel)
        said()
        stop.set()
    loop.add_reader(parent.sentinel, read)
    return said


async def _start(server: TailorServer, all_up, stop: asyncio.Event) -> None:
    await server.start(serving=all_up is None)
    if all_up is not None:  # however long the others take (a migration): the parent aborts
        worker, gate, beats = all_up  # the gate when a worker dies or a stop signal comes (`supervise`)
        if not await asyncio.get_running_loop().run_in_executor(None, gate.wait, worker,
                                                                stop.is_set):
            if stop.is_set():
                logger.info("stopping before every worker was up: not serving")
            else:
                logger.error("another worker failed to start: not serving")
            return
        await server.set_serving(True)
        beats.keep_beating(asyncio.get_running_loop(), worker)


def _worker_main(settings: Settings, worker: int, gate: StartGate, beats: Heartbeats) -> None:
    configure_logging(settings.log_format, settings.log_level)
    try:  # the parent SIGKILLed bounds this worker's stop no more: its own bound must start
        signal_when_parent_dies(PARENT_GONE, mp.parent_process().pid)
    except (OSError, AttributeError) as err:  # not Linux: the sentinel still stops it, unbounded
        logger.warning("a parent that dies will not start this worker's stop bound: %s", err)
    try:
        asyncio.run(_serve_one(settings, (worker, gate, beats)))
    except TailorError as err:  # a port in use, a bundle refused: one line, and the parent stops
        logger.error("%s", err)
        gate.abort()
        raise SystemExit(REFUSED_EXIT) from None
    except OSError as err:
        # one the host causes (a full disk, a store dir it may not write): the line one process
        # prints (`start_errors`), where each worker died of it with a traceback, exit 1
        message = start_error(err, settings, serve_flags())
        gate.abort()
        if message is None:  # a bug: its traceback
            raise
        logger.error("%s", message)
        raise SystemExit(REFUSED_EXIT) from None
    except BaseException:  # a crash: the others stop waiting for this worker now
        gate.abort()
        raise
