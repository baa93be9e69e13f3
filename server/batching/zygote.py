"""`Zygote`: the server's side of the process the writer children are forked from
(`server.batching.process_runner`); the zygote process itself is `server.batching.zygote_process`.

A writer child started as a fresh interpreter spent ~0.3-0.5 s of CPU importing numpy, LMDB,
the kernels and its factory's modules before it could open the store: at every server start
(two children), in every worker, and again at every restart after a crash. The zygote imports
those modules once (`PRELOAD`), then forks a child per request, which runs
`server.batching.child.main` with the pipes, environment, working directory and priority the
server asked for: a start or a restart costs a fork (a few ms).

One zygote serves every writer of a process (`zygote()`), started at the first child. Its
socket to the server is a `SOCK_SEQPACKET` pair: a request is one message (JSON, the child's
environment as changes to the zygote's, with the child's stdin, stdout and stderr as
`SCM_RIGHTS` descriptors); the zygote answers each with `{"pid": ...}` in request order (with
the child's pidfd as a descriptor, where Linux has them: the server signals a child by it, never
by a pid another process may have taken since), and `{"exit": pid, "code": ...}` when it reaps
a child (the code as `subprocess` gives it: negative for a signal). The zygote ignores SIGINT, SIGTERM and
SIGHUP, like the children, and exits when the socket closes: the server closed it or died. Its
children then go on until their own stdin closes. If the zygote dies, the children it had go on
too, and the next child starts a new zygote; the server reaps the dead zygote at once, and, a
child subreaper (Linux: `_subreaper`), gets its children back and waits for them itself (by
pidfd or pid, only those: `ZygoteChild._adopt`), so they end neither as zombies of a PID 1 that
does not reap nor with their exit code unknown.

Children run the code the zygote loaded when it started (the server's, which started it), not
what is on disk at their own start. The zygote runs `python -P -m`: the server's tree first on
its path (`_environment`), never the working directory's (`python -m` puts it first, and a
`server` module or package there, a server started from another checkout by its console
script, ran in its place). `ps` names them `tailor-<writer>`, cut to 15 characters
(`tailor-campaign`, `tailor-impressi`), and the zygote `tailor-zygote`.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..orphans import become_subreaper
from .logging import process_logger as logger
from .zygote_process import _MESSAGE_BYTES

__all__ = ["PRELOAD", "Zygote", "ZygoteChild", "kill_zygote", "zygote"]

PRELOAD = ("server.batching.child", "server.campaigns.repository", "server.impressions.writer")
"""Modules the zygote imports before its first fork: what the server's two writers load."""

ENV = {"OPENBLAS_NUM_THREADS": "1"}
"""Set for the zygote and every child, over the server's environment. A writer's numpy work is
small arrays a batch: OpenBLAS's thread pool, which it starts at import (one thread a core),
cost ~0.09 s of CPU a start and left threads that compete with serving, for no speed-up."""

_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
"""A descriptor received (a child's pidfd) is not inherited by what this process starts."""
_PROJECT = str(Path(__file__).resolve().parents[2])
_ZYGOTE_EXIT_SECONDS = 10.0
"""How long a zygote whose socket closed is waited for (it closes its files a moment before it
can be reaped, and its children come back to this process only then)."""


class ZygoteChild:
    """A child forked by the zygote, with what `process_runner` uses of a `subprocess.Popen`:
    `stdin` and `stdout` (unbuffered binary pipes), `pid`, `poll()`, `wait()`, `kill()`."""

    START_SECONDS = 30.0
    """How long the zygote may take to answer a request for a child: its own start first (its
    imports, ~0.5 s of CPU, more on a busy machine), then a fork (a few ms). One that has not
    answered by then (stopped, stuck) is not waited for."""

    def __init__(self, stdin_fd: int, stdout_fd: int):
        self.stdin = open(stdin_fd, "wb", buffering=0)  # noqa: SIM115 - closed by the runner
        self.stdout = open(stdout_fd, "rb", buffering=0)  # noqa: SIM115
        self.returncode: int | None = None
        self._pid: int | None = None
        self._pidfd: int | None = None
        """The child's pidfd, from the zygote (None where pidfd_open is not available): it
        signals this process only, even once its pid is free again."""
        self._lock = threading.Lock()  # the pidfd is closed on one thread, used on another
        self.forked: bool | None = None
        """Whether the zygote forked this child: False once it said it could not (the child
        never ran, and nothing sent to it was written), None while it has not said (or never
        will: given up on, or a zygote that died first, may have forked it after all)."""
        self.asked = time.monotonic()
        """When the zygote was asked for this child (`Zygote.spawn`)."""
        self._started = threading.Event()
        self._ended = threading.Event()

    @property
    def pid(self) -> int | None:
        """The child's pid (None if the zygote could not fork it, or has not answered within
        `START_SECONDS`: a stopped zygote blocked this, and the event loop reading it, for ever)."""
        self._started.wait(self.START_SECONDS)
        return self._pid

    def answered(self) -> bool:
        """Whether the zygote has answered (or the child is given up on)."""
        return self._started.is_set()

    def abandon(self) -> None:
        """Give up on a child the zygote has not answered for: it ends now, its code unknown.
        Forked later, it finds its pipes closed, and exits."""
        self._exited(None)

    def poll(self) -> int | None:
        return self.returncode if self._ended.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code (None if it could not be known); `subprocess.TimeoutExpired` after
        `timeout` seconds."""
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired("writer child", timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the child, if it is still running. By its pidfd: the zygote reaps a child at
        once, and its pid, free from then on, could be another process's by the time the exit
        is reported here; `os.kill` only where there is no pidfd."""
        with self._lock:
            if self._pid is None or self._ended.is_set():
                return
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                else:
                    os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:  # already gone; its exit is on its way
                pass

    def _forked(self, pid: int | None, pidfd: int | None = None) -> None:
        with self._lock:
            if self._ended.is_set():  # given up on before the zygote answered
                if pidfd is not None:
                    os.close(pidfd)
                return
            self._pid, self._pidfd = pid, pidfd
            self.forked = pid is not None
        self._started.set()
        if pid is None:
            self._exited(None)

    def _adopt(self) -> None:
        """Wait for the child, which the zygote's death left to this process (a subreaper):
        its exit is then this process's to reap, and its code to log."""
        threading.Thread(target=self._wait_as_parent, name="writer-orphan", daemon=True).start()

    def _wait_as_parent(self) -> None:
        """By its pidfd where there is one (this child only, whatever took its pid since);
        by pid otherwise (which stays this child's until this process reaps it, unless the
        zygote had reaped it first). No exit code if it is not this process's child."""
        try:
            if self._pidfd is not None:
                info = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
                code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            else:
                code = os.waitstatus_to_exitcode(os.waitpid(self._pid, 0)[1])
        except ChildProcessError:  # the zygote had reaped it, and died before saying so
            code = None
        self._exited(code)

    def _exited(self, code: int | None) -> None:
        with self._lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            self.returncode = code
            self._ended.set()
        self._started.set()


class Zygote:
    """The server's side: starts the zygote process and asks it for children."""

    def __init__(self, preload: Sequence[str] = PRELOAD):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.env = env = _environment({})
            """The zygote's environment, which a request sends only the differences from."""
            self.proc = subprocess.Popen(  # -P: not the working directory's `server` first
                [sys.executable, "-P", "-m", "server.batching.zygote_process",
                 str(theirs.fileno()), *preload],
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env,
                start_new_session=True)
        self.sock = ours
        self.owner = os.getpid()
        self.adopts = _subreaper()
        """Whether the children left by this zygote's death come back to this process."""
        self.alive = True
        self.closing = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._pending: deque[ZygoteChild] = deque()
        self._children: dict[int, ZygoteChild] = {}
        threading.Thread(target=self._read, name="writer-zygote", daemon=True).start()

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str],
              niceness: int | None = None) -> ZygoteChild:
        """A new child running `server.batching.child.main(argv)` with `env` over this
        process's environment (`_environment`), in this process's working directory, its
        stderr this process's, at `niceness` under `SCHED_BATCH` if given (`_lower_priority`).
        Its process name (`ps`, `pgrep`) is `tailor-<name>`, cut to the kernel's 15 characters."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        child = ZygoteChild(stdin_w, stdout_r)
        request = json.dumps({"name": name, "argv": list(argv),
                              **_env_change(self.env, _environment(env)),
                              "cwd": os.getcwd(), "niceness": niceness}).encode()
        try:
            with self._lock:
                if not self.alive:
                    raise OSError("the writer zygote has exited")
                self._check_answering()
                socket.send_fds(self.sock, [request], [stdin_r, stdout_w, 2])
                self._pending.append(child)
        except OSError:
            child.stdin.close()
            child.stdout.close()
            raise
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        return child

    def _check_answering(self) -> None:
        """Refuse a request while the oldest one has waited `ZygoteChild.START_SECONDS` (the
        zygote is stopped or stuck; its start was given up on). Each retry queued one more:
        after ~280 the socket was full and `send_fds` blocked the event loop for good, and a
        zygote that went on forked them all at once. Answered again, it is asked again."""
        if self._pending:
            silent = time.monotonic() - self._pending[0].asked
            if silent > ZygoteChild.START_SECONDS:
                raise OSError(f"the writer zygote has not answered for {silent:.0f} s")

    def _read(self) -> None:
        """Route the zygote's messages until its socket closes; then every child still known
        ends with an unknown code, and the next `zygote()` starts a new one."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, _MESSAGE_BYTES, 1, _CLOEXEC)
            except OSError:
                data, fds = b"", []
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                if "exit" in message:
                    child = self._children.pop(message["exit"], None)
                    if child is not None:
                        child._exited(message["code"])
                    continue
                child = self._pending.popleft()
                if message.get("pid") is not None:
                    self._children[message["pid"]] = child
            if message.get("pid") is None:
                logger.error("the writer zygote could not start a child: %s", message.get("error"))
            child._forked(message.get("pid"), fds[0] if fds else None)
        self._end()

    def _end(self) -> None:
        """The socket closed: reap the zygote (it stayed a zombie until the next one started);
        the children it had end with an unknown code, or, back to this process (a subreaper),
        are waited for here."""
        with self._lock:
            self.alive = False
            orphans = [*self._pending, *self._children.values()]
            self._pending.clear()
            self._children.clear()
        if self.closing:  # a stopped zygote would not see the end of its socket
            self.proc.kill()  # reaped only here (so its pid is still its own)
        try:
            code = self.proc.wait(_ZYGOTE_EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        if not self.closing:
            logger.warning("the writer zygote exited (code %s); %d children left to their pipes",
                           code, len(orphans))
        for child in orphans:
            if self.adopts and not self.closing and child._pid is not None:
                child._adopt()
            else:  # no threads started as the interpreter exits
                child._exited(None)
        self._done.set()

    def close(self) -> None:
        """End the zygote (its socket closed, then SIGKILL: it holds nothing, and its
        children are in sessions of their own) and wait until it is reaped, at most
        `_ZYGOTE_EXIT_SECONDS`: at this process's exit (`_close_at_exit`). It outlived this
        process by a moment, and was then left to PID 1, a zombie where that does not reap; a
        stopped one held the exit for the whole bound, then stayed stopped."""
        self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # end of file for both ends
        except OSError:
            pass
        self._done.wait(_ZYGOTE_EXIT_SECONDS)


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment, then `ENV`, then `extra`, with the project on PYTHONPATH:
    the zygote's (`extra` empty) and each child's (its writer's variables)."""
    return {**os.environ, **ENV, **extra, "PYTHONPATH": os.pathsep.join(
        p for p in (_PROJECT, os.environ.get("PYTHONPATH")) if p)}


def _env_change(base: Mapping[str, str], env: Mapping[str, str]) -> dict:
    """`env` as what changes in `base`: a request is one socket message (~200 kB at most by
    default), and the whole environment of a server may be larger (exec takes ~2 MB)."""
    return {"env": {k: v for k, v in env.items() if base.get(k) != v},
            "unset": [k for k in base if k not in env]}


def _subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (`orphans.become_subreaper`);
    whether it is one.

    A writer whose zygote died goes on (its pipes are the server's), re-parented: to PID 1
    otherwise, which in a container without an init that reaps (tini) left it a zombie once
    it exited, and its exit code unknown. This process reaps only the pids it knows are its
    writers (`ZygoteChild._adopt`), never any child (`waitpid(-1)`): what else it starts
    keeps its own exit statuses."""
    try:
        become_subreaper()
    except (OSError, AttributeError) as err:  # not Linux, or not allowed
        logger.warning("writers whose zygote dies will not come back to this process: %s", err)
        return False
    return True


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


@atexit.register
def _close_at_exit() -> None:
    """Reap this process's zygote as it exits (not a zygote this one was forked from)."""
    if _zygote is not None and _zygote.owner == os.getpid() and _zygote.alive:
        _zygote.close()


def kill_zygote(within: float = _ZYGOTE_EXIT_SECONDS) -> None:
    """SIGKILL this process's zygote and the writers it forked, and wait up to `within`
    seconds for the zygote to be reaped: at the end of the stop's bound of a server of one
    worker (`server.stop_bound`), which then reaps what is left (`Orphans`).

    Each writer leads a session of its own (`zygote_process._run_child`), out of the zygote's
    process group, so it is killed by its pidfd (`ZygoteChild.kill`). Killing the group alone
    left a stopped (hung) writer running; and the reaping that came next listed this process's
    children before the zygote's death had handed its writers back (~1 stop in 10 on a busy
    host): it found none, and the server exited, leaving them to PID 1, stopped. Once the
    zygote is reaped its writers are this process's children (a subreaper), or gone."""
    z = _zygote
    if z is None or z.owner != os.getpid():
        return
    for child in list(z._children.values()):  # one C call: no reader thread's change midway
        child.kill()
    if z.proc.poll() is None:  # not reaped: the pid, the group's id, is still the zygote's
        try:
            os.killpg(z.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # reaped meanwhile
            pass
    try:
        z.proc.wait(within)
    except subprocess.TimeoutExpired:  # an uninterruptible wait (a hung disk)
        pass


def zygote() -> Zygote:
    """This process's zygote, started at the first call (and again if it died, or if this
    process was forked from the one that started it)."""
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive or _zygote.owner != os.getpid():
            _zygote = Zygote()
        return _zygote
