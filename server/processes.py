"""Whether a process still runs, asked of the owner recorded for some shared thing.

A worker's registry entry, a send job's claim and an upload directory each name the process
that owns it; that process may have died (SIGKILL, crash) without cleaning up, and the next
owner takes over only once it is gone. Worker processes run on one machine, so a pid is enough.
"""
from __future__ import annotations

import os

__all__ = ["pid_alive"]


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
