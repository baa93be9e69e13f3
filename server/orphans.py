"""Child subreapers: what a process's dead descendants leave to it, and `Orphans`, which reaps them.

A process whose parent dies is re-parented to the nearest ancestor that is a child subreaper
(Linux's `PR_SET_CHILD_SUBREAPER`), or to PID 1, which in a container without an init that
reaps (tini) leaves it a zombie once it exits. A worker is the subreaper of its writers (their
zygote may die: `server.batching.zygote`). The parent of `--workers N` is the subreaper of
what a worker that dies (SIGKILL, the OOM killer) leaves: its zygote, which exits as its socket
closes, and its writers, which exit once they have answered what their stdin held. `Orphans`
reaps those, and only those: the children of this process that it did not start itself (its
own, the workers and multiprocessing's resource tracker, are waited for by their own code), by
pid, never any child (`waitpid(-1)` would take the exit status of a child another part of this
process waits for).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable

__all__ = ["Orphans", "become_subreaper", "signal_when_parent_dies"]

logger = logging.getLogger("tailor.orphans")

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_POLL_SECONDS = 0.05
_subreaper_of: int | None = None


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants, once per process; raises
    OSError (or AttributeError: not Linux) where it cannot."""
    global _subreaper_of
    if _subreaper_of == os.getpid():
        return
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _subreaper_of = os.getpid()


def signal_when_parent_dies(signum: int, parent: int) -> None:
    """Have the kernel send this process `signum` once its parent, pid `parent`, dies
    (Linux's `PR_SET_PDEATHSIG`; not kept by the processes this one forks), or at once if it
    died before the call (this process then has another parent). Raises OSError (or
    AttributeError: not Linux) where it cannot. The signal comes when the parent's thread that
    started this process ends: `server.supervisor` starts its workers on its main thread."""
    _prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


def _prctl(option: int, value: int) -> None:
    """Linux's `prctl(option, value)`; OSError when it fails (AttributeError: no `prctl`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _children() -> list[int]:
    """The pids whose parent is this process, zombies included (none where there is no /proc)."""
    me, found = os.getpid(), []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            parent = int(stat[stat.rindex(b")") + 2:].split()[1])  # the name may hold spaces
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        if parent == me:
            found.append(int(name))
    return found


class Orphans:
    """Reaps the children this process did not start: `own()` names those it did (running:
    a pid, once waited for, may be an orphan's later).

    An orphan keeps its pid until reaped here, so a pid found is that orphan's when it is
    waited for or signalled."""

    def __init__(self, own: Callable[[], Iterable[int | None]]):
        self._own = own
        self.reaped = 0

    def reap(self) -> list[int]:
        """Reap the orphans that have exited; returns those still running."""
        own = set(self._own())
        running = []
        for pid in _children():
            if pid in own:
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by whoever waits for it after all
                continue
            if done:
                self.reaped += 1
            else:
                running.append(pid)
        return running

    def finish(self, within: float, until: float) -> None:
        """Wait up to `within` seconds for every orphan to exit (a writer answers what it
        holds; the writers of a zygote that exits come here then), reaping them; SIGKILL and
        reap those still running after it, until `until` seconds after the call (a bound on
        the whole, `Settings.stop_seconds`). Logs how many were reaped."""
        began = time.monotonic()
        deadline = began + min(within, until)
        while (running := self.reap()) and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
        if running:
            logger.error("%d processes left by workers that died still ran after %.0f s: "
                         "killing them", len(running), time.monotonic() - began)
            self.kill(running, began + until - time.monotonic())
        if self.reaped:
            logger.info("reaped %d processes left by workers that died", self.reaped)

    def kill(self, running: list[int], within: float) -> None:
        """SIGKILL `running` (what `reap` returned) and reap them, and what they leave (a
        killed zygote's writers), for at most `within` seconds; once at least, however late.
        Also the single-worker server's end of its stop's bound (`server.stop_bound`)."""
        deadline = time.monotonic() + within
        while running:
            for pid in running:  # not reaped yet: the pid is still this orphan's, unless
                with contextlib.suppress(ProcessLookupError):  # another thread reaped it
                    os.kill(pid, signal.SIGKILL)  # since (one worker's zygote, by Popen)
            time.sleep(_POLL_SECONDS)
            running = self.reap()
            if time.monotonic() >= deadline:
                break
