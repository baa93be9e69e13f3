"""Run the server: one process, or N worker processes sharing one port (SO_REUSEPORT)."""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import wait as wait_for

from .app import TailorServer
from .config import Settings, changed_settings
from .errors import FailedPrecondition, TailorError
from .logging import configure_logging
from .orphans import Orphans, become_subreaper
from .processes import hold_dir, host_id, process_started, remove_if_owner_gone
from .security.hosts import with_port
from .security.secrets import Secrets
from .security.transport import ServerTls, check_exposure

__all__ = ["serve"]

logger = logging.getLogger("tailor.workers")


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


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
    worker's index and the `StartGate` shared by the workers), health turns SERVING only once
    every worker is listening, so a SERVING answer means the port is whole. SIGHUP re-reads
    the TLS certificate and key (and calls `on_hup`).

    The stop signals arrive blocked (`serve` blocks them before anything else, and spawned
    workers inherit the mask): they are unblocked only once handled, before the port listens,
    so a signal at any moment of the start drains instead of killing the process."""
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
    server = TailorServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    server.reloaders.append(on_hup)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    if all_up is not None:
        _stop_with_parent(loop, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    await _start(server, all_up, stop)  # a stop signal meanwhile drains right after
    await stop.wait()
    logger.info("draining: health NOT_SERVING, in-flight calls have %.1fs", settings.grace_seconds)
    await server.stop()
    logger.info("stopped")


def _stop_with_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Drain as on a stop signal once the parent is gone. A parent SIGKILLed (`kill -9`, the
    OOM killer) forwards nothing: its workers would serve on unsupervised (no restart when one
    dies, no stop, no metrics), and a server started again beside them (SO_REUSEPORT) would
    share the port with them. The parent's sentinel (the spawn pipe it holds open) turns
    readable when it exits."""
    parent = mp.parent_process()
    if parent is None:
        return

    def gone() -> None:
        loop.remove_reader(parent.sentinel)
        if not stop.is_set():
            logger.error("the parent process is gone: stopping this worker")
            stop.set()
    loop.add_reader(parent.sentinel, gone)


async def _start(server: TailorServer, all_up, stop: asyncio.Event) -> None:
    await server.start(serving=all_up is None)
    if all_up is not None:  # however long the others take (a migration): the parent aborts
        worker, gate = all_up  # the gate when a worker dies or a stop signal comes (`_supervise`)
        if not await asyncio.get_running_loop().run_in_executor(None, gate.wait, worker,
                                                                stop.is_set):
            if stop.is_set():
                logger.info("stopping before every worker was up: not serving")
            else:
                logger.error("another worker failed to start: not serving")
            return
        await server.set_serving(True)


def _worker_main(settings: Settings, worker: int, gate: StartGate) -> None:
    configure_logging(settings.log_format, settings.log_level)
    try:
        asyncio.run(_serve_one(settings, (worker, gate)))
    except TailorError as err:  # a port in use, a bundle refused: one line, and the parent stops
        logger.error("%s", err)
        gate.abort()
        raise SystemExit(2) from None
    except BaseException:  # a crash: the others stop waiting for this worker now
        gate.abort()
        raise


def serve(settings: Settings, reread: Callable[[], Settings] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; SIGHUP re-reads certificates (every worker). `reread`: the
    settings as a start now would load them (the `--config` file), which a SIGHUP compares
    with the running ones (`_say_settings`): they take a restart, so the log says so."""
    # Until handled: stop signals wait (blocked), SIGHUP is ignored; spawned workers inherit both.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Inherited by the spawned workers and their writer processes, which log the same way.
    os.environ.update(TAILOR_LOG_FORMAT=settings.log_format, TAILOR_LOG_LEVEL=settings.log_level)
    configure_logging(settings.log_format, settings.log_level)
    warning = check_exposure(settings)  # an exposed bind without TLS and auth stops here
    if warning:
        logger.warning(warning)
    try:  # once, before any worker: generated development secrets are then shared by all
        Secrets.for_server(settings)
    except FailedPrecondition as err:
        raise SystemExit(f"refusing to start: {err}") from None
    tls = ServerTls.from_settings(settings)  # unreadable files stop here, before any worker
    said = (lambda: None) if reread is None else functools.partial(_say_settings, settings, reread)
    if settings.workers == 1:
        reload_metrics = _serve_metrics(settings, tls) if settings.metrics_port else None
        asyncio.run(_serve_one(settings, on_hup=_both(reload_metrics, said)))
        return
    if settings.port == 0:
        raise FailedPrecondition("--workers > 1 needs an explicit --port (the workers share it)")
    held = _hold_the_port(settings.host, settings.port)  # till the parent exits
    try:
        if settings.public_http_port:
            held += _hold_the_port(settings.host, settings.public_http_port, " (public HTTP)")
        _serve_workers(settings, tls, said)
    finally:
        for sock in held:
            sock.close()


def _both(first: Callable[[], object] | None, then: Callable[[], object]) -> Callable[[], None]:
    """One SIGHUP reloader running `first` (if any), then `then`."""
    def reload() -> None:
        if first is not None:
            first()
        then()
    return reload


def _say_settings(running: Settings, reread: Callable[[], Settings]) -> None:
    """At a SIGHUP, once per server: the settings a start would load now (the `--config` file
    edited since) are not applied, so say which differ, or why they would not load (then the
    next start, a crash's restart too, would refuse them); nothing when they are the same."""
    try:
        now = reread()
    except FailedPrecondition as err:
        logger.error("SIGHUP: the settings do not load now, and a restart would refuse them "
                     "(the running ones stay): %s", err)
        return
    except Exception:  # noqa: BLE001 - in the parent's signal handler, it would end supervision
        logger.exception("SIGHUP: reading the settings again failed (the running ones stay)")
        return
    changed = changed_settings(running, now)
    if changed:
        logger.warning("SIGHUP: settings changed since the start take a restart (the running "
                       "values stay): %s", ", ".join(changed))


def _serve_metrics(settings: Settings, tls: ServerTls | None):
    """/metrics on `metrics_host` (`metrics.serve_metrics`); returns its SIGHUP reloader."""
    from .metrics import serve_metrics
    return serve_metrics(settings.metrics_port, settings.metrics_host.strip("[]"), tls,
                         settings.limits)


def _serve_workers(settings: Settings, tls: ServerTls | None, said: Callable[[], None]) -> None:
    """The parent of `--workers N`, once its ports are held: the workers' metrics dir, the
    merged /metrics, and the workers themselves (`_supervise`); `said`: the parent's part of
    a SIGHUP after the metrics port's (`_say_settings`)."""
    reload_metrics = None
    metrics_dir, held = _metrics_dir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned workers
    try:
        if settings.metrics_port:  # before any worker: a port in use stops here, alone
            reload_metrics = _serve_metrics(settings, tls)
        _supervise(settings, _both(reload_metrics, said))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if held is not None:
            os.close(held)


_METRICS_DIR = re.compile(r"tailor-metrics-([0-9a-f]{8})\.(\d+)\.(\d+)-")
"""A parent's metrics dir: `tailor-metrics-<host>.<pid>.<start ticks>-<random>`."""


def _metrics_dir() -> tuple[str, int | None]:
    """A new `PROMETHEUS_MULTIPROC_DIR` for the workers, and the fd of the lock this process
    holds on it for its life (`processes.hold_dir`), once the dirs of parents that are gone are
    removed. The parent removes its own when it exits; a parent SIGKILLed (the OOM killer, a
    stop timeout) cannot, and in a temp dir that outlives the process (a Kubernetes emptyDir
    across container restarts) one more was left at each such restart. A dir is removed only
    once its lock can be taken (`processes.remove_if_owner_gone`): its pid says nothing of a
    parent in another pid namespace sharing the temp dir and the hostname (another container of
    the pod), whose running dir was removed. A dir without a lock (an older Tailor's) is left."""
    parent = tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except OSError:
        names = []
    for name in names:
        owner = _METRICS_DIR.match(name)  # another host's (a shared temp dir): left alone
        if owner and owner[1] == host_id() and remove_if_owner_gone(os.path.join(parent, name)):
            logger.info("removed %s, the metrics dir of a server that is gone", name)
    pid = os.getpid()
    made = tempfile.mkdtemp(prefix=f"tailor-metrics-{host_id()}.{pid}.{process_started(pid) or 0}-")
    try:
        return made, hold_dir(made)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        raise


def _hold_the_port(host: str, port: int, what: str = "") -> list[socket.socket]:
    """Refuse a port something already listens on, before any worker starts, and keep it from
    anyone else until the workers are gone. The workers bind with SO_REUSEPORT, which the kernel
    grants to every socket of the same user asking for it: a second server started by mistake
    on the port of a running one (its workers too) would share it, each connection landing on
    one server or the other, with its own data dir. A bind without SO_REUSEPORT fails while any
    socket is bound there.

    The sockets returned stay bound (never listening: no connection reaches them) with
    SO_REUSEPORT on and SO_REUSEADDR off: the workers' own binds (SO_REUSEPORT) share the port
    with them, another server's check (this one, without SO_REUSEPORT) and a single-worker
    server's bind fail from now on, even in the second or more before the workers listen.
    SO_REUSEADDR is on only for the bind itself, so a connection in TIME_WAIT is no obstacle.
    Other bind errors (not an address of this machine) are left to the workers' own bind,
    which names them."""
    try:
        addresses = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return []
    held, seen = [], set()
    both = {socket.AF_INET, socket.AF_INET6} <= {a[0] for a in addresses}
    for family, kind, proto, _, address in addresses:
        if address in seen:  # a name listed twice: bound once
            continue
        seen.add(address)
        sock = socket.socket(family, kind, proto)
        if family == socket.AF_INET6 and both:  # "::" beside "0.0.0.0": each its own family
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            sock.close()
            if err.errno == errno.EADDRINUSE:
                for other in held:
                    other.close()
                raise FailedPrecondition(
                    f"could not listen on {with_port(host, port)}{what}: the port is in use "
                    "(another server's workers may be serving it)") from None
            continue
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.append(sock)
    return held


def _supervise(settings: Settings, reload_metrics) -> None:
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
