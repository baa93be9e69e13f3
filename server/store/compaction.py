"""Compaction: rewrite the LMDB environment with only its live records, then swap it in.

Freed pages of an LMDB file can still hold the bytes of deleted records, and so can the pages
still in use that a deleted record shared with live ones: LMDB's own compacted copy
(`env.copy(compact=True)`) copies those pages whole (on 20,000 users with 207 erased, 59 of
the erased users' tokens were still in its copy). `rewrite_records` writes every live record,
and nothing else, into a fresh file: no byte of a deleted record is left (0 of the 207). The
restore's re-erasure (`reerase`) uses it too. The swap needs the data dir's exclusive lock, so
it never runs under a live server (which would keep writing to the old file).
"""
from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..durable import Unconfirmed, confirm, reported
from ..errors import FailedPrecondition
from .errors import out_of_space
from .growth import drop_cached
from .lmdb_store import open_env
from .lock import check_restore_finished, lock_data_dir

__all__ = ["compact", "rewrite_records"]

BATCH_BYTES = 64 << 20
"""Bytes of keys and values a write transaction of the rewrite holds, at most (one record
more): ~16,000 pages of data, well inside LMDB's dirty list (2^17 pages); fewer commits leave
fewer pages behind (see `_copy_tables`)."""


def compact(data_dir: Path, unconfirmed: Callable[[Unconfirmed], None] | None = None
            ) -> tuple[int, int]:
    """Compact `data_dir/store` in place; returns (bytes before, bytes after).

    The compacted `data.mdb` replaces the old one with a single rename inside `store/`, so a
    crash at any moment leaves either file whole where servers look for it (the pad file is
    unchanged: nothing writes while the exclusive lock is held). `store/` not synced after that
    rename is `Unconfirmed`, handed to `unconfirmed` when given (the command reports the
    compaction done, sizes included, with its warning), raised otherwise."""
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
        try:
            with reported(unconfirmed):  # compacted all the same
                confirm(store)
        finally:
            shutil.rmtree(fresh)
        return before, (store / "data.mdb").stat().st_size
    finally:
        lock.close()


def _copy(store: Path, fresh: Path) -> None:
    rewrite_records(store, fresh, (store / "data.mdb").stat().st_size + (64 << 20))


def rewrite_records(store: Path, fresh: Path, map_size: int) -> None:
    """Write every record of the environment under `store` (nobody writing to it), table by
    table in key order, into a new environment under the empty dir `fresh`, fsynced: its
    data.mdb holds the live records and no byte of a deleted one. `map_size`: room for them
    (the old file's size is enough). A disk with less room than the old file is an ENOSPC
    OSError before anything is written: LMDB reports a full disk at a commit as an I/O error
    (EIO), which says nothing of the cause. The written file is dropped from the page cache,
    so the server that opens it next caches its pages one a folio (`growth.drop_cached`)."""
    need = (store / "data.mdb").stat().st_size  # the live records take at most as much
    if shutil.disk_usage(fresh).free < need:
        raise OSError(errno.ENOSPC, f"{need} bytes are needed to rewrite the store's live "
                      "records", str(fresh))
    src = open_env(store, readonly=True, lock=False, readahead=False)
    try:
        dst = open_env(fresh, map_size=map_size, sync=False, metasync=False)
        try:
            with src.begin() as read:
                _copy_tables(src, read, dst)
            dst.sync(True)
        finally:
            dst.close()
    finally:
        src.close()
    drop_cached(fresh / "data.mdb")  # synced, and unmapped now (`growth.drop_cached`)


def _copy_tables(src, read, dst) -> None:
    """Every table of `src` (read in `read`) into `dst`, each in key order, appended in write
    transactions of `BATCH_BYTES` across tables, the first of which also creates the tables.
    A transaction a table (and one to create each) made the copy of a nearly empty store bigger
    than the store: each commit rewrites the table directory's page and records the pages it
    freed, which the next commit does not reuse yet (a backup's 16 KiB copy of an empty store,
    14 tables, was compacted to 36 KiB)."""
    names = [bytes(k) for k, _ in read.cursor()]
    with dst.begin(write=True) as write:
        tables = [(src.open_db(n, txn=read, create=False), dst.open_db(n, txn=write))
                  for n in names]
        records = ((db, key, value) for src_db, db in tables
                   for key, value in read.cursor(db=src_db))
        more = _put_batch(write, records)
    while more:
        with dst.begin(write=True) as write:
            more = _put_batch(write, records)


def _put_batch(write, records) -> bool:
    """`records` (table, key, value) appended until `BATCH_BYTES` are; whether they were (so
    more may follow)."""
    held = 0
    for db, key, value in records:
        write.put(key, value, db=db, append=True)
        held += len(key) + len(value)
        if held >= BATCH_BYTES:
            return True
    return False
