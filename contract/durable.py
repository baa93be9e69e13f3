"""fsyncs that put a file's bytes, or a directory's names, on disk, and directories made with
their names on disk: the server's (`server.durable`, whose docstring says the rules, re-exports
these) and training's (a bundle written whole before it is named and reported done).

A directory fsync the filesystem refuses as unsupported (EINVAL, ENOTSUP: some network and FUSE
filesystems) is skipped with one warning a process, as SQLite and PostgreSQL do: it has no
directory entries of its own to write. Any other error (EIO) is raised.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

__all__ = ["Unconfirmed", "confirm", "fsync_path", "fsync_tree", "make_dirs"]

logger = logging.getLogger("tailor.durable")

_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP)
"""What a filesystem that cannot fsync a directory answers (ENOTSUP is EOPNOTSUPP on Linux)."""
_warned_unsupported = False


class Unconfirmed(OSError):
    """A change in place (renamed, linked, made) whose directory could not be fsynced: readers
    see it, a power loss may undo it. `str()` is the warning to give whoever made the change."""

    def __init__(self, directory: Path, err: OSError):
        super().__init__(err.errno, err.strerror)
        self.directory = directory
        self.warning = (f"{directory} could not be synced ({err.strerror or err}): the change "
                        "is in place, but may not survive a power loss")

    def __str__(self) -> str:
        return self.warning

    def __reduce__(self):  # OSError's would call __init__(errno, strerror): another process's
        return type(self), (self.directory, OSError(self.errno, self.strerror))  # (a worker's)


def _unsupported(fd: int, path: Path, err: OSError) -> bool:
    """Whether `err` is a directory fsync the filesystem does not support (warned once a
    process), not a failure."""
    global _warned_unsupported
    if err.errno not in _UNSUPPORTED or not stat.S_ISDIR(os.fstat(fd).st_mode):
        return False
    if not _warned_unsupported:
        _warned_unsupported = True
        logger.warning("the filesystem of %s does not support fsync on a directory (%s): "
                       "renames and new files rely on its own ordering to survive a power loss",
                       path, err.strerror)
    return True


def fsync_path(path: Path) -> None:
    """A file's bytes, or a directory's names, on disk (a directory whose filesystem cannot
    fsync one: skipped, warned once)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if not _unsupported(fd, path, err):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first, `root` last."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def confirm(directory: Path) -> None:
    """fsync `directory` after a change in it is in place; `Unconfirmed` if that fails."""
    try:
        fsync_path(directory)
    except OSError as err:
        raise Unconfirmed(directory, err) from err


def make_dirs(path: Path, mode: int = 0o700, exist_ok: bool = True) -> None:
    """`Path.mkdir(parents=True)` (`mode` for `path` itself: the server's account's alone by
    default, `contract.files`; an existing directory keeps its own), then the parent of every level it
    made fsynced, deepest first (`Unconfirmed` if one fails; a parent this account may not
    open is skipped with a warning): on disk, with everything later written and synced under
    it. Nothing is synced when `path` was there already."""
    missing = []
    for level in (path, *path.parents):
        if level.is_dir():
            break
        missing.append(level)
    if exist_ok and not missing:
        return
    path.mkdir(mode=mode, parents=True, exist_ok=exist_ok)
    for level in missing:  # made here or by a racing process: synced either way
        try:
            confirm(level.parent)
        except Unconfirmed as err:  # a parent this account may write in but not open (0733),
            if err.errno != errno.EACCES:  # as PostgreSQL, which skips such a directory
                raise
            logger.warning("cannot open %s to fsync it (%s): %s may not survive a power loss",
                           level.parent, err.strerror, level)
