"""Whether a process still runs, asked of the owner recorded for some shared thing.

A worker's registry entry, a send job's claim and an upload directory each name the process
that owns it; that process may have died (SIGKILL, crash) without cleaning up, and the next
owner takes over only once it is gone. Worker processes run on one machine, so a pid is enough,
unless the pid has gone to another process since (a container restarts its pid numbering):
`owner_alive` also compares when the process started (`process_started`), which every owner
records beside its pid: send jobs (`owner_started`), worker registry entries
(`models.registry.worker_report`), upload/import directories (`models.staging.leftover_name`)
and the backup leftovers of older versions (`backup.staging._owner`). A record without it (written
before it was kept, or without /proc) is judged by its pid alone.

A pid says nothing about a process of another pid namespace: containers sharing a volume and a
hostname (one Kubernetes pod's, `docker run --network host`) each number their own. Where that
can happen (the workers' metrics directory in a shared temp dir, a backup's staging directory
beside its output), the owner holds a lock instead (`hold_dir`), which the kernel drops
however the owner dies, and the next one takes the directory only once it can take the lock
(`remove_if_owner_gone`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import socket

__all__ = ["OWNER_LOCK", "hold_dir", "host_id", "owner_alive", "pid_alive", "process_started",
           "remove_if_owner_gone"]

OWNER_LOCK = "owner.lock"
"""The file in a directory whose exclusive flock its owner holds for its life (`hold_dir`)."""


def host_id() -> str:
    """8 hex digits naming this host (its name), for names that record an owner in a directory
    other hosts may share: what another host owns is left alone. Containers may share a name
    (one pod's) but not their pids: where that matters, liveness is a lock (`hold_dir`)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """True unless no process `pid` exists; a pid this process may not signal, or one the OS
    cannot even take (a corrupt record), counts as alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def process_started(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (proc(5): field 22 of
    /proc/<pid>/stat); None where it cannot be read (no such process, no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])  # the name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def owner_alive(pid: int, started: int | None) -> bool:
    """`pid_alive`, and, given when the owner started (`process_started` at the time), the same
    process: a later one that was given its pid is not the owner."""
    if not pid_alive(pid):
        return False
    if started is None:
        return True
    now = process_started(pid)
    return now is None or now == started


def hold_dir(directory: str) -> int | None:
    """Hold an exclusive flock on `<directory>/owner.lock` for as long as the fd returned stays
    open (close it to let go; the kernel closes it when this process dies, SIGKILL included).
    The lock is taken on a file of another name, renamed into place only once held, so no one
    ever finds `owner.lock` unheld while its owner lives. None, and no `owner.lock`, where the
    filesystem takes no flock (ENOLCK: an NFS mount without its lock service): the directory
    is then judged as one without a lock."""
    staged = os.path.join(directory, f".{OWNER_LOCK}.{os.getpid()}")
    fd = os.open(staged, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(staged, os.path.join(directory, OWNER_LOCK))
    except OSError as err:
        os.close(fd)
        if err.errno != errno.ENOLCK:
            raise
        os.unlink(staged)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_if_owner_gone(directory: str) -> bool:
    """Remove `directory` if its owner is gone: it has an `owner.lock` (`hold_dir`) and the lock
    can be taken now, without waiting. A directory without one (another program's, an older
    Tailor's) or whose lock is held (by a process of any pid namespace sharing the filesystem)
    is left. True if removed."""
    try:
        fd = os.open(os.path.join(directory, OWNER_LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        with contextlib.suppress(OSError):  # held (EWOULDBLOCK), or no flock on this filesystem
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(directory, ignore_errors=True)  # under the lock: no one else takes it
            return True
        return False
    finally:
        os.close(fd)
