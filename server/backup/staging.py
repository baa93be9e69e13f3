"""The staging dir a backup writes in beside its output, locked by its process, and the sweep
of those that backups killed midway left (each holds up to a whole store copy)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..processes import OWNER_LOCK, hold_dir, host_id, owner_alive, process_started, remove_if_owner_gone

__all__ = ["staging_dir", "sweep_leftovers"]


_host = host_id


def _owner() -> str:
    """`<host>.<pid>.<start ticks>` of this process (`processes`): in the names of what a
    backup writes beside its output before it is done, so a later backup on the same host
    tells a dead one's (another host's pids say nothing here: those are left alone)."""
    pid = os.getpid()
    return f"{_host()}.{pid}.{process_started(pid) or 0}"


_LEFTOVER = re.compile(r"(?:\.tailor-backup-|.+\.tailor-)([0-9a-f]{8})\.(\d+)\.(\d+)"
                       r"(?:-.+|\.partial)", re.DOTALL)
"""A staging dir `.tailor-backup-<host>.<pid>.<start>-*` or an archive
`<name>.tailor-<host>.<pid>.<start>.partial` (written beside the output by older versions)."""


def staging_dir(parent: Path) -> tuple[Path, int | None]:
    """A new staging dir `.tailor-backup-<owner>-*` in `parent`, and the fd of the lock this
    process holds on it till the backup ends (`processes.hold_dir`; its partial archive is
    written inside). Made under a name no sweep matches, locked, then renamed: no other backup
    ever finds it without its lock."""
    made = Path(tempfile.mkdtemp(prefix=".tailor-backup-new-", dir=parent))
    held = hold_dir(str(made))
    try:
        staging = parent / f".tailor-backup-{_owner()}-{made.name[len('.tailor-backup-new-'):]}"
        os.rename(made, staging)
    except BaseException:
        shutil.rmtree(made, ignore_errors=True)
        if held is not None:
            os.close(held)
        raise
    return staging, held


def sweep_leftovers(directory: Path) -> None:
    """Remove the staging dirs and partial archives that backups of this host killed midway
    left in `directory` (their process is gone): each holds up to a whole store copy. A
    staging dir with an `owner.lock` goes only once its lock can be taken: a pid says nothing
    of a backup in another pid namespace sharing the directory and the hostname (another
    container of the pod), whose running staging dir went. Those of older versions (no lock;
    their partial archives beside the output) are judged by their pid."""
    for path in directory.iterdir():
        match = _LEFTOVER.fullmatch(path.name)
        if match is None or match[1] != _host():
            continue
        if path.is_dir() and (path / OWNER_LOCK).exists():
            remove_if_owner_gone(str(path))
        elif owner_alive(int(match[2]), int(match[3]) or None):
            continue
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
