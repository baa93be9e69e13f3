"""Files written durably: on disk, with their names, before the code that wrote them goes on.

The rules every writer of a file that must survive a power loss follows (store copies, backups,
restores, bundles, keyrings, the auth config):

- A file's bytes are fsynced before anything depends on them: before it is renamed into place
  (a rename can reach the disk before the data it names, leaving an empty or torn file under
  the final name), and before a write elsewhere refers to it (a manifest naming its sha256).
- A rename or a new file is on disk only once its *directory* is fsynced: the name is an entry
  in the directory, and fsyncing the file does not write that entry. So the directory is
  fsynced after each rename or creation that must survive, and before the next step relies on
  it (two renames that must land in order get one directory fsync each).
- A file replaced whole is written to a temp file beside it (same directory, so the same
  filesystem, and the rename is atomic), fsynced, renamed over the target with `os.replace`,
  then the directory is fsynced (`replace`): a reader, or a restart after a crash, sees the old
  file or the new one, never part of one.

Writes that keep their own sequence, each saying why beside it: files written in place (the
data keys' pads, zeroed where they lie) or appended under a lock (the bundle scrub queue) fsync
their descriptor; a generated keyring is linked, not renamed (create-if-absent: concurrent
workers agree on one key), with the same fsyncs around the link; the audit log's lines and its
`audit.tip` are not fsynced (docs/operations.md says why), its `audit.head` is.

A directory made for state that must survive (the data dir, `store/`, `bundles/`, `audit/`,
`secrets_dir`) is made with `make_dirs`, which fsyncs the parent of every level it made: a new
directory's name is an entry in its parent like a file's, and lost, it takes everything under
it along. Scratch directories that are renamed into place or deleted are not.

A directory fsync the filesystem refuses as unsupported (EINVAL, ENOTSUP: some network and FUSE
filesystems) is skipped with one warning a process, as SQLite and PostgreSQL do: it has no
directory entries of its own to write, and failing every rename on it would stop the server
for nothing. Any other error (EIO) is raised.

Once a change is in place (renamed, linked, made), a directory fsync that fails raises
`Unconfirmed`, an OSError that says so: readers already see the change, so a command whose
last step it was reports it done, with that warning, not failed; a sequence whose next step
relies on it (a manifest naming the renamed file, keys wrapped under a new keyring) stops there.

This module imports nothing of ours but `contract.durable` (the fsyncs, `confirm`,
`Unconfirmed` and `make_dirs`, which training's bundle writes share; re-exported here), so any
layer of the server may use it (`store/` imports `security/`, so it could not live in either).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from contract.durable import Unconfirmed, confirm, fsync_path, fsync_tree, make_dirs

__all__ = ["Unconfirmed", "check_writable", "confirm", "fsync_path", "fsync_tree", "make_dirs",
           "replace", "reported", "write_file"]


@contextmanager
def reported(report: Callable[[Unconfirmed], None] | None) -> Iterator[None]:
    """Around a change's last step: its `Unconfirmed` handed to `report` (the change is in
    place: the caller goes on to report it done, with that warning), raised when `report` is
    None."""
    try:
        yield
    except Unconfirmed as err:
        if report is None:
            raise
        report(err)


def check_writable(directory: Path) -> None:
    """Raise the OSError (naming `directory`) of making a file in it, if that fails: a directory
    the server writes only when calls come (the audit log's) was found read-only at the first
    one, each audited call then logging an error, where a start refuses other directories it
    cannot write (`start_errors`). The file is removed at once; nothing is synced."""
    probe = directory / f".write-check-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # a check of this pid's a crash left: writable
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(directory)) from None
    os.unlink(probe)


def write_file(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write `data` (str: UTF-8) to `path`, created or truncated (with `mode`, that mode
    whatever the umask or the file's before), then fsync it and its directory. Not atomic: use
    it for a file nothing reads until the write returns (a temp file `replace` then renames, a
    marker in a staging dir)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 if mode is None else mode)
    with open(fd, "wb") as fh:
        if mode is not None:
            os.fchmod(fh.fileno(), mode)
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_path(path.parent)


def replace(tmp: Path, target: Path) -> None:
    """Rename the written file `tmp` over `target`, durably: `tmp`'s bytes fsynced first, the
    directory of `target` after (the rename on disk: `Unconfirmed` if that fails, `target` then
    being the new file). The caller removes `tmp` if anything else raises."""
    fsync_path(tmp)
    os.replace(tmp, target)
    confirm(target.parent)
