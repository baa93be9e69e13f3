"""Hot copies of the LMDB store: a consistent, compacted snapshot taken while servers write.

LMDB's copy with compaction (`mdb_env_copy2(MDB_CP_COMPACT)`) reads the whole environment in one
read transaction, so the copy is one committed state, whatever writers do meanwhile, and it holds
only live pages. Readers never block writers, so a running server keeps serving; it only cannot
reuse the pages the copy's snapshot still pins until the copy ends.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from ..durable import fsync_path
from .datakeys import SLOT_BYTES, SLOT_COUNT_KEY, SLOTS_FILE, copy_slots, unshred_copy
from .errors import StorePadsMissing, StoreUnreadable
from .keys import layout_key
from .layouts import KINDS
from .lmdb_store import TABLES, open_env
from .migrate import PROGRESS_KEY, refuse_newer_layouts, refuse_unknown_progress
from .rekey import KEY_VERSION_KEY, refuse_newer_key_version

__all__ = ["snapshot_store", "read_value", "read_prefix", "add_missing", "check_copy"]

_ATTEMPTS = 3


def snapshot_store(store_dir: Path, dest_dir: Path) -> int:
    """Copy the store under `store_dir` into the empty `dest_dir` (compacted, fsynced).

    Returns the size of the copy in bytes. Safe while servers hold the store open.
    """
    if not (store_dir / "data.mdb").exists():
        raise FileNotFoundError(f"no LMDB store under {store_dir}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    before = dest_dir / (SLOTS_FILE + ".before")  # the pads as they were before the snapshot
    copy_slots(store_dir, dest_dir)
    if (dest_dir / SLOTS_FILE).exists():
        os.replace(dest_dir / SLOTS_FILE, before)
    for attempt in range(_ATTEMPTS):
        env = _open_readonly(store_dir)
        try:
            env.copy(str(dest_dir), compact=True)
            break
        except lmdb.MapResizedError:  # a server grew the map meanwhile: reopen at the new size
            (dest_dir / "data.mdb").unlink(missing_ok=True)
            if attempt == _ATTEMPTS - 1:
                raise
        finally:
            env.close()
    copy = dest_dir / "data.mdb"
    fsync_path(copy)  # its directory: by whoever names the copy (the backup's tar, a restore)
    copy_slots(store_dir, dest_dir)
    if before.exists():  # erasures between the snapshot and the pad copy
        if (dest_dir / SLOTS_FILE).exists():
            unshred_copy(dest_dir, before, lambda: _values(dest_dir, "datakeys"))
        before.unlink()
    return copy.stat().st_size


def _values(store_dir: Path, table: str):
    """Every value of `table` in the store copy under `store_dir` (nobody else has it open)."""
    env = open_env(store_dir, readonly=True, lock=False, readahead=False)
    with _reading(env, table) as txn:
        if txn is not None:
            for value in txn.cursor().iternext(keys=False, values=True):
                yield bytes(value)


def read_value(store_dir: Path, table: str, key: bytes) -> bytes | None:
    """One value of a store nobody else needs to be writing (e.g. a snapshot), or None."""
    _check_table(table)
    with _reading(_open_readonly(store_dir), table) as txn:
        return None if txn is None else txn.get(key)


def read_prefix(store_dir: Path, table: str, prefix: bytes) -> list[tuple[bytes, bytes]] | None:
    """Every (key, value) of `table` whose key starts with `prefix`, from one read snapshot of
    the store under `store_dir` (safe while servers write; [] when the table does not exist);
    None when the store cannot be read (damaged)."""
    _check_table(table)
    try:
        return _read_prefix(store_dir, table, prefix)
    except (lmdb.Error, StoreUnreadable):  # (the open's refusal of a damaged store)
        return None


def _read_prefix(store_dir: Path, table: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
    with _reading(_open_readonly(store_dir), table) as txn:
        if txn is None:
            return []
        cursor = txn.cursor()
        if not cursor.set_range(prefix):
            return []
        found = []
        for key, value in cursor:
            if not key.startswith(prefix):
                break
            found.append((bytes(key), bytes(value)))
        return found


def add_missing(store_dir: Path, table: str, items: list[tuple[bytes, bytes]],
                counter: bytes | None = None,
                newer: Callable[[bytes, bytes], bool] | None = None) -> list[bytes]:
    """Put the `items` whose key `table` lacks into the store under `store_dir` (no server may
    hold it: a restore's staging copy), in one transaction, and those for which
    `newer(stored value, item's value)` holds over the stored value; `counter`, a decimal count
    in the same table, grows by the number put. Returns the keys put."""
    env = open_env(store_dir, readahead=False,
                   map_size=(store_dir / "data.mdb").stat().st_size + (64 << 20))
    try:
        db = env.open_db(table.encode())
        with env.begin(write=True, db=db) as txn:
            added = [key for key, value in items if txn.put(key, value, overwrite=False)
                     or newer is not None and newer(bytes(txn.get(key)), value)
                     and txn.put(key, value)]
            if counter is not None and added:
                txn.put(counter, str(int(txn.get(counter) or b"0") + len(added)).encode())
        return added
    finally:
        env.close()


def check_copy(store_dir: Path) -> None:
    """StoreUnreadable unless the store copy under `store_dir` (nobody else has it open: a
    restore's staging copy) opens as LMDB, holds every page its last commit uses (a copy cut
    short does not: reading past its end would kill the reader with SIGBUS) and has the
    tables a store has; StorePadsMissing when its pad file lacks pads its data keys use;
    FailedPrecondition when a newer Tailor wrote it (a key version or record layout this code
    does not know: no server of this version would open it)."""
    env = open_env(store_dir, readonly=True, lock=False, readahead=False)
    try:
        used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        size = (store_dir / "data.mdb").stat().st_size
        if size < used:
            raise StoreUnreadable(store_dir, f"data.mdb holds {size} bytes, its last commit uses "
                                  f"{used} (cut short)")
        with env.begin() as txn:
            for name in TABLES:
                try:
                    env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue  # a table added after the store was written: made at first open
            meta = env.open_db(b"meta", txn=txn, create=False)
            keys = txn.get(SLOT_COUNT_KEY, db=meta)
            _refuse_newer_stamps(txn, meta)
        pads = store_dir / SLOTS_FILE
        have = pads.stat().st_size // SLOT_BYTES if pads.exists() else 0
        if int(keys or b"0") > have:  # served, every user would read as erased
            raise StorePadsMissing(store_dir, int(keys), have)
    except lmdb.Error as err:
        raise StoreUnreadable(store_dir, str(err)) from None
    finally:
        env.close()


def _refuse_newer_stamps(txn, meta) -> None:
    """The open-time refusals of a newer Tailor's store (`rekey`, `migrate`), on a copy."""
    refuse_newer_key_version(txn.get(KEY_VERSION_KEY, db=meta))
    stamps = {kind.name: txn.get(layout_key(kind.name), db=meta) for kind in KINDS}
    refuse_newer_layouts(KINDS, {name: None if raw is None else int(raw)
                                 for name, raw in stamps.items()})
    progress = txn.get(PROGRESS_KEY, db=meta)
    if progress is not None:  # a newer Tailor's migration under way, of a kind unknown here
        refuse_unknown_progress(KINDS, json.loads(progress))


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")


@contextmanager
def _reading(env: lmdb.Environment, table: str) -> Iterator[lmdb.Transaction | None]:
    """A read transaction on `table` of `env`, None when it has no such table; `env` is
    closed after."""
    try:
        try:
            db = env.open_db(table.encode(), create=False)
        except lmdb.NotFoundError:
            yield None
            return
        with env.begin(db=db) as txn:
            yield txn
    finally:
        env.close()


def _open_readonly(store_dir: Path) -> lmdb.Environment:
    # lock=True: register as a reader in lock.mdb, so live writers never reuse the pages we read.
    return open_env(store_dir, readonly=True, lock=True, readahead=False)
