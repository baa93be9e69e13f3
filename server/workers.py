"""Run the server: one process, or N worker processes sharing one port (SO_REUSEPORT).

`serve` checks what a start needs (exposure, secrets, TLS files), then serves in this process
(one worker: `server.worker`) or, with `--workers N`, holds the ports and the workers' metrics
dir for the parent's life and supervises the workers (`server.supervisor`).
"""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from .config import Settings, changed_settings
from .cpus import usable_cpus
from .durable import check_writable
from .errors import FailedPrecondition
from .files import check_data_dir
from .logging import configure_logging, hand_down
from .processes import hold_dir, host_id, process_started, remove_if_owner_gone
from .security.hosts import with_port
from .security.transport import ServerTls, check_exposure
from .store.crypto import secrets_for_store
from .supervisor import supervise
from .worker import PARENT_GONE, STOP_SIGNALS, _serve_one

__all__ = ["serve"]

logger = logging.getLogger("tailor.workers")


def _too_many_workers(workers: int, cpus: int) -> str:
    """A start with more workers than CPUs is served, with a warning naming the flag: each worker
    loads the bundle and forks its own writers, so the ones past the CPUs add memory and start
    time, not throughput (64 workers on 2 CPUs: not serving 36 s later, and their stop took the
    whole 25 s bound, killing them)."""
    return (f"--workers {workers} is more than the {cpus} CPU(s) this server may run on (its "
            f"affinity and CPU quota): the "
            f"workers past {cpus} add memory and start time, not throughput; give --workers "
            f"{cpus} or fewer (TAILOR_WORKERS)")


def serve(settings: Settings, reread: Callable[[], Settings] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; SIGHUP re-reads certificates (every worker). `reread`: the
    settings as a start now would load them (the `--config` file), which a SIGHUP compares
    with the running ones (`_say_settings`): they take a restart, so the log says so."""
    # Stop signals wait (blocked) for the thread that takes them (`stop_bound.StopWatch`; the
    # parent of --workers unblocks them once handled), SIGHUP is ignored until handled; spawned
    # workers inherit both, and `PARENT_GONE` blocked (their StopWatch takes it; never sent here).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS | {PARENT_GONE})
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Inherited by the spawned workers and their writer processes, which log the same way.
    hand_down(settings.log_format, settings.log_level)
    configure_logging(settings.log_format, settings.log_level)
    warning = check_exposure(settings)  # an exposed bind without TLS and auth stops here
    if warning:
        logger.warning(warning)
    if settings.workers > (cpus := usable_cpus()):
        logger.warning(_too_many_workers(settings.workers, cpus))
    try:  # once, before any worker: generated development secrets are then shared by all
        check_data_dir(settings.data_dir)  # (its mode warned about once, not per worker)
        secrets_for_store(settings)  # (none over a store keyed under a key they lack)
    except FailedPrecondition as err:
        raise SystemExit(f"refusing to start: {err}") from None
    _check_audit_dir(settings.audit_dir)  # its OSError: `start_errors`' one line
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


def _check_audit_dir(path: Path) -> None:
    """Refuse, once and before any worker, an audit dir this account may not write
    (`durable.check_writable`). Each worker refuses it too (`TailorServer`), but with
    `--workers 2` each did so in a log line of its own, and the start ended without the one
    `error:` line. One not there yet is left for the server to make, as before."""
    if path.is_dir():
        check_writable(path)


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
    merged /metrics, and the workers themselves (`supervisor.supervise`); `said`: the parent's
    part of a SIGHUP after the metrics port's (`_say_settings`)."""
    reload_metrics = None
    metrics_dir, held = _metrics_dir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the spawned workers
    try:
        if settings.metrics_port:  # before any worker: a port in use stops here, alone
            reload_metrics = _serve_metrics(settings, tls)
        supervise(settings, _both(reload_metrics, said))
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
