"""Whether a process still runs, asked of the owner recorded for some shared thing.

A worker's registry entry, a send job's claim and an upload directory each name the process
that owns it; that process may have died (SIGKILL, crash) without cleaning up, and the next
owner takes over only once it is gone. Worker processes run on one machine, so a pid is enough,
unless the pid has gone to another process since (a container restarts its pid numbering):
`owner_alive` also compares when the process started (`process_started`), which every owner
records beside its pid: send jobs (`owner_started`), worker registry entries
(`models.registry.worker_report`), upload/import directories (`models.staging.leftover_name`),
backup leftovers (`backup._owner`) and the workers' metrics directory (`workers._metrics_dir`).
A record without it (written before it was kept, or without /proc) is judged by its pid alone.
"""
from __future__ import annotations

import hashlib
import os
import socket

__all__ = ["host_id", "owner_alive", "pid_alive", "process_started"]


def host_id() -> str:
    """8 hex digits naming this host (its name: each container has its own, and its own pids),
    for names that record an owner in a directory other hosts may share: a pid of another
    host (or container) says nothing here, so what it owns is left alone."""
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
