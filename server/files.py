"""The modes of what Tailor writes: its data dir, audit dir and keyrings are its account's alone.

The data dir holds the store (campaigns, the unsealed impressions table, keyed hashes, the
outbox, the wrapped data-key halves), the bundles (models and `users.npz`), the audit log and
the locks. Per-user records are sealed, but any account that can read the directory can copy
all of it; so every directory Tailor makes is 0700 and every file 0600, whatever the umask it
was started with:

- `private_umask`: `python -m server`'s commands run under umask 077 (as PostgreSQL's server
  does), set once in `server.__main__` before anything is written. Workers, writer processes and
  the backup, restore, compact, migrate, secrets, audit and rotate-key commands inherit it, so
  every `open`, `mkdir` and LMDB file made anywhere under them is private without a mode at each
  call site. `config-doc` keeps the caller's umask: it writes the repository's docs.
- An existing data dir is never chmodded: an operator may have opened it to a backup agent's
  group on purpose. `check_data_dir` warns once at `serve`'s start about one any other account
  may read or enter, naming the chmod to run, and refuses one every user may write or replace
  (as a keyring, `security.secrets`).

A program that embeds `TailorServer` in its own process keeps its own umask: the directories
`durable.make_dirs` makes are 0700 and the LMDB files 0600 there too, the other files follow it.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from contract.files import PRIVATE_UMASK

__all__ = ["PRIVATE_UMASK", "SHARED_COMMANDS", "check_data_dir", "private_tree", "private_umask"]

logger = logging.getLogger("tailor.files")


WHAT = "replace the store, the bundles it serves or the audit log"
"""What anyone could do with a data dir every user may write or replace."""


SHARED_COMMANDS = frozenset({"config-doc"})
"""`python -m server` commands that keep the caller's umask: they write no data of Tailor's."""


def private_umask(command: str) -> None:
    """For `command` (a `python -m server` command), this process and every process it starts
    create their files 0600 and directories 0700; `SHARED_COMMANDS` excepted."""
    if command not in SHARED_COMMANDS:
        os.umask(PRIVATE_UMASK)


def check_data_dir(path: Path) -> None:
    """Refuse a data dir every user may write or replace (`writable_by_all`); warn about one
    another account may read or enter. One not there yet (the server makes it 0700) is refused
    when a directory it would be made in is open to every user (`_unsafe_to_make`): else the
    first start would serve from it and the next refuse it."""
    from .errors import FailedPrecondition  # here, not at the top: `server.__main__` imports
    from .security.principals import writable_by_all  # this module before grpc is loaded
    try:
        if not os.path.lexists(path):
            unsafe = _unsafe_to_make(path)
            if unsafe:
                raise FailedPrecondition(f"data dir {path}: {unsafe}")
            return
        unsafe = writable_by_all(path, WHAT)
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:  # a link to nowhere: the server's own open reports it
        return
    except OSError as err:  # the server's own open reports it, with its reason
        logger.debug("cannot check the mode of %s: %s", path, err)
        return
    if unsafe:
        raise FailedPrecondition(f"data dir {path}: {unsafe}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("data dir %s: other accounts may read it (mode %04o): the store, bundles "
                       "and audit log under it are the server's alone; chmod -R go-rwx %s unless "
                       "an account (a backup agent's group) reads it on purpose", path, mode, path)


def _unsafe_to_make(path: Path) -> str | None:
    """Why a data dir not there yet may not be made at `path`: a directory it would be made in,
    or one above (or a link's), that every user may write without the sticky bit (anyone could
    put their own directory there first, or move ours aside), by the same test as
    `writable_by_all` of an existing one; None when there is none."""
    from .security.principals import directories_to_make, replaceable_through
    return replaceable_through(path, directories_to_make(path), WHAT)


def private_tree(root: Path) -> None:
    """Take the group and other bits off everything under `root` (and `root`), a copy Tailor has
    just made and not yet named: `shutil.copytree` and tar extraction keep their source's modes,
    which the umask does not narrow (a bundle imported from an operator's 0644 files)."""
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~PRIVATE_UMASK)
