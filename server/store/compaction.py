"""Compaction: rewrite the LMDB environment with only live pages, then swap it in.

Freed pages of an LMDB file can still hold the bytes of deleted records; a compacted copy
holds none of them. The swap needs the data dir's exclusive lock, so it never runs under a
live server (which would keep writing to the old file).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import lmdb

from .datakeys import copy_slots
from .lmdb_store import TABLES
from .lock import lock_data_dir

__all__ = ["compact"]


def compact(data_dir: Path) -> tuple[int, int]:
    """Compact `data_dir/store` in place; returns (bytes before, bytes after)."""
    store = data_dir / "store"
    if not (store / "data.mdb").exists():
        raise FileNotFoundError(f"no LMDB store under {store}")
    lock = lock_data_dir(data_dir, exclusive=True)
    try:
        fresh, old = data_dir / "store.compacting", data_dir / "store.old"
        for path in (fresh, old):
            shutil.rmtree(path, ignore_errors=True)
        fresh.mkdir()
        before = (store / "data.mdb").stat().st_size
        env = lmdb.open(str(store), max_dbs=len(TABLES) + 4, readonly=False, lock=True)
        try:
            env.copy(str(fresh), compact=True)
        finally:
            env.close()
        with open(fresh / "data.mdb", "rb") as fh:
            os.fsync(fh.fileno())
        copy_slots(store, fresh)
        os.replace(store, old)
        os.replace(fresh, store)
        _fsync_dir(data_dir)
        shutil.rmtree(old)
        return before, (store / "data.mdb").stat().st_size
    finally:
        lock.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
