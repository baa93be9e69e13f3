"""Compaction: rewrite the LMDB environment with only live pages, then swap it in.

Freed pages of an LMDB file can still hold the bytes of deleted records; a compacted copy
holds none of them. The swap needs the data dir's exclusive lock, so it never runs under a
live server (which would keep writing to the old file).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import FailedPrecondition
from .errors import out_of_space
from .lmdb_store import open_env
from .lock import check_restore_finished, lock_data_dir

__all__ = ["compact"]


def compact(data_dir: Path) -> tuple[int, int]:
    """Compact `data_dir/store` in place; returns (bytes before, bytes after).

    The compacted `data.mdb` replaces the old one with a single rename inside `store/`, so a
    crash at any moment leaves either file whole where servers look for it (the pad file is
    unchanged: nothing writes while the exclusive lock is held)."""
    store = data_dir / "store"
    check_restore_finished(data_dir)
    if not (store / "data.mdb").exists():
        raise FileNotFoundError(f"no LMDB store under {store}")
    lock = lock_data_dir(data_dir, exclusive=True)
    try:
        fresh = data_dir / "store.compacting"
        for path in (fresh, data_dir / "store.old"):  # leftovers of an earlier run
            shutil.rmtree(path, ignore_errors=True)
        fresh.mkdir()
        before = (store / "data.mdb").stat().st_size
        try:
            _copy(store, fresh)
        except BaseException as err:  # a partial copy (up to the whole store) is not left behind
            shutil.rmtree(fresh, ignore_errors=True)
            if out_of_space(err):
                raise FailedPrecondition(
                    f"cannot compact {store}: no space left on its disk for the compacted copy "
                    f"(up to {before} bytes; {shutil.disk_usage(data_dir).free} free); nothing "
                    "was changed") from None
            raise
        os.replace(fresh / "data.mdb", store / "data.mdb")
        _fsync_dir(store)
        shutil.rmtree(fresh)
        return before, (store / "data.mdb").stat().st_size
    finally:
        lock.close()


def _copy(store: Path, fresh: Path) -> None:
    env = open_env(store, readonly=False, lock=True)
    try:
        env.copy(str(fresh), compact=True)
    finally:
        env.close()
    with open(fresh / "data.mdb", "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
