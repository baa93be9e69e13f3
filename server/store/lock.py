"""The data dir's locks: a lock file beside the store (servers hold it shared, compaction
needs it exclusive), and a directory's own lock (bundle rewrites exclusive, their readers
shared)."""
from __future__ import annotations

import fcntl
import os
import shlex
from contextlib import contextmanager
from pathlib import Path

from ..durable import make_dirs
from ..errors import FailedPrecondition

__all__ = ["RESTORING", "check_restore_finished", "lock_data_dir", "locked_dir", "restore_again"]

RESTORING = ".restoring"
"""A restore's staging dir inside the data dir, there until the restore has swapped its copy in
(`server.backup.restore`): a restore killed midway leaves it, maybe with no `store/` at all."""


def lock_data_dir(data_dir: Path, exclusive: bool, restoring: bool = False):
    """Take the data dir's lock (non-blocking); the returned file holds it until closed. Refused
    while a restore left the data dir unfinished (`RESTORING`), unless for the restore itself:
    a server would serve (or make afresh) whatever store the killed restore left."""
    try:
        make_dirs(data_dir)
        fh = open(data_dir / "tailor.lock", "a+")
    except OSError as err:  # a file in the way, no permission, a read-only file system
        raise FailedPrecondition(f"cannot use {data_dir} as a data dir: "
                                 f"{err.strerror or err}") from None
    try:
        fcntl.flock(fh, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise FailedPrecondition(
            f"{data_dir} is in use by a running server" if exclusive
            else f"{data_dir} is being compacted; start the server when it is done") from None
    if not restoring:
        try:
            check_restore_finished(data_dir)
        except FailedPrecondition:
            fh.close()
            raise
    return fh


def restore_again(data_dir: Path) -> str:
    """What to do about an unfinished restore into `data_dir`: run it again with --force. The
    store or bundles it may have swapped in already make the data dir not empty, which a
    restore without --force refuses (it said "restore into an empty dir, or pass --force",
    after a restore into an empty dir). The data dir is quoted as a shell needs it."""
    return (f"run `python -m server restore --from BACKUP --data-dir {shlex.quote(str(data_dir))} "
            "--force` again "
            "with the same backup (--force: it replaces what the unfinished restore swapped in)")


def check_restore_finished(data_dir: Path) -> None:
    """FailedPrecondition when a restore into `data_dir` was killed before it finished (the
    commands that look for `store/` before they lock call it first, for this message)."""
    if (data_dir / RESTORING).exists():
        raise FailedPrecondition(f"a restore into {data_dir} did not finish ({RESTORING} is there): "
                                 f"{restore_again(data_dir)}")


@contextmanager
def locked_dir(path: Path, shared: bool = False):
    """An exclusive lock on the directory `path` itself (flock on its descriptor: no file),
    waited for; `shared`: a reader's, which waits for any exclusive holder."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
