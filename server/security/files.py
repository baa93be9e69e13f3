"""Rewriting a file the server reads as another account (`server token`, `secrets rotate`).

Both commands write a new copy beside the file and rename it over the old one, so a reload
never reads half a file. The copy belongs to whoever runs the command: run with sudo against
a server running as its own account, the auth config or keyring became root's, mode 0600,
and the server could no longer read it (the SIGHUP reload failed, so a revoked token kept
working; the next start failed). `keep_owner` gives the copy the old file's owner, group and
mode, or refuses when this account may not. `directory_locked` serializes the commands that
read a file, change it and write it back, so two at once do not drop each other's change.
`write_private` writes such a copy owner-only from its creation on.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..errors import FailedPrecondition

__all__ = ["cannot_write", "directory_locked", "keep_owner", "like_siblings"]


def _owner(uid: int, gid: int) -> str:
    """`name:group (uid U, gid G)`, the numbers alone where the host has no name for them."""
    import grp
    import pwd
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{user}:{group} (uid {uid}, gid {gid})"


def keep_owner(tmp: Path, path: Path, what: str) -> None:
    """Give `tmp`, about to replace `path`, the owner, group and mode of `path` (if it exists).
    When this account may not (the file is another user's, or of a group it is not in), `tmp`
    is removed and FailedPrecondition says so, `what` naming the file."""
    try:
        old = path.stat()
    except FileNotFoundError:
        return
    try:
        new = tmp.stat()
        if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
            os.chown(tmp, old.st_uid, old.st_gid)
        os.chmod(tmp, stat.S_IMODE(old.st_mode))
    except PermissionError:
        tmp.unlink(missing_ok=True)
        raise FailedPrecondition(
            f"{what}: it belongs to {_owner(old.st_uid, old.st_gid)}; rewritten by "
            f"{_owner(os.geteuid(), os.getegid())} it would be this account's, and the server "
            "may no longer read it: run this command as its owner (or as root); nothing was "
            "changed") from None


def like_siblings(tmp: Path, pattern: str) -> None:
    """Give `tmp`, a new file about to appear in its directory, the owner, group and mode of a
    file beside it matching `pattern` (else the directory's owner and group), when run as root:
    created by `sudo python -m server secrets init` among the keyrings of a server running as
    its own account, it was root's, mode 0600, and that server could not read it. Run as any
    other account, the new file is that account's (it could give it no other owner)."""
    if os.geteuid() != 0:
        return
    siblings = sorted(p for p in tmp.parent.glob(pattern) if not p.name.startswith("."))
    for sibling in siblings:
        with contextlib.suppress(OSError):
            model = sibling.stat()
            if stat.S_ISREG(model.st_mode):
                os.chown(tmp, model.st_uid, model.st_gid)
                os.chmod(tmp, stat.S_IMODE(model.st_mode))
                return
    directory = tmp.parent.stat()
    os.chown(tmp, directory.st_uid, directory.st_gid)


@contextlib.contextmanager
def directory_locked(path: Path) -> Iterator[None]:
    """`path`'s directory locked (an exclusive `flock` on the directory itself: no lock file
    to create, whoever runs the command) from reading `path` to renaming its new copy."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        yield
    finally:
        os.close(fd)


def cannot_write(tmp: Path, err: OSError) -> str:
    """Why the new copy `tmp` could not be written beside the file, and what to do."""
    return (f"cannot write its new copy {tmp} ({err.strerror}): run this command as an account "
            f"that may write {tmp.parent} (the file's owner, or root); nothing was changed")


def write_private(tmp: Path, text: str) -> None:
    """Write `text` to the new copy `tmp`, owner-only (0600) from its creation on: a copy
    written with the umask's mode (0644) and chmodded after was every local user's to read
    for that moment (the auth config's token hashes, a keyring's keys). A copy left by a
    command that died is removed first: opened again, it would keep its old mode."""
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
