"""The zygote process: the fork server of `server.batching.zygote` (the server's side).

    python -P -m server.batching.zygote_process SOCKET_FD MODULE...   (started by `zygote()` only)

It imports `MODULE...` once (`zygote.PRELOAD`), then, for each request on its socket, forks a
child that takes the server's pipes, environment, working directory and priority and runs
`server.batching.child.main` (`_run_child`); it answers `{"pid": ...}` with the child's pidfd
(`_pidfd`), reaps its children as they exit and reports `{"exit": pid, "code": ...}` (`_reap`),
and exits when its socket closes. The protocol is described in `server.batching.zygote`.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Mapping, Sequence

from ..logging import configure_logging
from .logging import child_logger

__all__ = ["main"]

_MESSAGE_BYTES = 1 << 20
"""The largest message either side of the zygote's socket reads."""


def _name_process(name: str) -> None:
    """This process's name as `ps` and `pgrep` show it (its command line stays the zygote's)."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:  # not Linux
        pass


def _lower_priority(niceness: int, name: str) -> None:
    """Run this child at `niceness` and under the batch scheduling policy (`SCHED_BATCH`),
    before it has opened the store.

    Niceness sets the child's share when the cores are busy. `SCHED_BATCH` stops its wake-ups
    from preempting whatever runs (serving, or the load generator beside it on a small
    machine): a group arriving wakes the child, which then waits for the running task's slice
    to end instead of cutting in, so a flush's few milliseconds of work fill the gaps rather
    than delay the calls in flight. Its share under load is the niceness's, as before: a writer
    holding the store's write lock is not starved (which `SCHED_IDLE` would risk). Not allowed,
    it is logged like the rest of the child's log (the line went to stderr as plain text)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        if hasattr(os, "SCHED_BATCH"):  # Linux
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as err:  # not allowed
        child_logger.warning("could not lower the %s writer's priority: %s", name, err)


def _run_child(request: dict, fds: list[int], base_env: Mapping[str, str]) -> int:
    """In the forked child: take the server's pipes, environment and directory, run the
    writer. Returns the exit code."""
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        env = {k: v for k, v in base_env.items() if k not in request["unset"]}
        os.environ.clear()
        os.environ.update({**env, **request["env"]})
        os.chdir(request["cwd"])
        _name_process(f"tailor-{request['name']}")
        configure_logging()  # as the server's, from the environment it sent
        if request["niceness"] is not None:
            _lower_priority(request["niceness"], request["name"])
        from .child import main
        main(request["argv"])
        return 0
    except SystemExit as done:
        return _exit_status(done.code)
    except BaseException:  # noqa: BLE001 - reported on stderr, as an interpreter would
        traceback.print_exc()
        return 1
    finally:
        atexit._run_exitfuncs()  # the writer's own (the legacy id converter's join)


def _exit_status(code: object) -> int:
    """The status an interpreter exits with for `sys.exit(code)`: 0 for None, the number, or
    1 with the message on stderr (a child ends by `os._exit`, which does neither)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _fork(request: dict, fds: list[int], closing: Sequence[int],
          base_env: Mapping[str, str]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in closing:
                os.close(fd)
            code = _run_child(request, fds, base_env)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _pidfd(pid: int) -> list[int]:
    """A pidfd of the child just forked, for the server (none without pidfd_open: Linux < 5.3,
    or not Linux). Opened here, by its parent, before it can have been reaped: it refers to
    that child and no process that takes its pid later."""
    try:
        return [os.pidfd_open(pid)]
    except (AttributeError, OSError):
        return []


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())
        except OSError:
            return  # the server is gone: nobody to tell


def main(argv: Sequence[str]) -> None:
    for name in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(name, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    base_env = dict(os.environ)  # the server's `Zygote.env`, before the preloads run
    _name_process("tailor-zygote")
    for module in argv[1:]:
        importlib.import_module(module)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up pipe is written on each one
    signal.set_wakeup_fd(wake_w)
    while True:
        readable = select.select([sock, wake_r], [], [])[0]
        if wake_r in readable:
            while True:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    break
            _reap(sock)
        if sock in readable:
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MESSAGE_BYTES, 3)
            except OSError:
                data, fds = b"", []
            if not data:
                return  # the server closed its end, or died
            pidfds = []
            try:
                reply = {"pid": _fork(json.loads(data), fds, (sock.fileno(), wake_r, wake_w),
                                      base_env)}
                pidfds = _pidfd(reply["pid"])
            except OSError as err:
                reply = {"pid": None, "error": str(err)}
            finally:
                for fd in fds:
                    os.close(fd)
            try:
                if pidfds:
                    socket.send_fds(sock, [json.dumps(reply).encode()], pidfds)
                else:
                    sock.send(json.dumps(reply).encode())
            except OSError:
                return  # the server is gone
            finally:
                for fd in pidfds:
                    os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
