"""LMDB environment with named tables.

One write transaction per batch, one read-only transaction per request; the map grows by
doubling when full (up to a ceiling, past which writes raise `StoreFull`, RESOURCE_EXHAUSTED,
and nothing of the failed batch is written; so do writes on a full disk, `StoreDiskFull`).
The last `erasure_reserve` bytes below the ceiling are kept for erasure (DeleteProfile,
retention): ordinary writes stop short of them, so a full store can
still forget a person. Several processes may open the same directory: LMDB serialises
writers across processes and readers never block. A process changes its map size (growing
it, or adopting a size another process grew it to) only while none of its other threads has a
transaction open (`remap.MapGate`): the change invalidates every open one. A transaction that
finds the map grown by another process past this process's adopts it and begins again, an
open's first ones too (the tables' `open_db`): `lmdb.open` sized the map at the pages in use
then, and other processes may write more before them.
A process killed inside a read transaction (a backup SIGKILLed while it copies, an OOM kill)
leaves its slot in LMDB's reader table, and the snapshot it names keeps every page freed since
from being reused: the file would grow with every write while any process holds the store open.
Each open, and each server every `store_metrics_seconds`, frees such slots
(`clear_stale_readers`).

With a `StoreCrypto`, the per-user tables (`keys.USER_TABLES`) are `SealedTable`s: their
records are AES-GCM ciphertext under per-user data keys (`datakeys`), sealed and opened at the
table boundary; `shred` destroys a user's key (erasure). Keys are keyed hashes of ids (`tokens`).

Repositories hold `Table`s (`store.table(name)`) and hand them the transaction `read()` yields
or `write(fn)` passes to `fn`; they never call the transaction themselves, so every LMDB call
is in this package. Keys come from `keys`, record layouts and their versions from `layouts`;
opening a store migrates older key versions and layouts first (`rekey`, `migrate`).
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import lmdb

from ..durable import make_dirs
from .crypto import StoreCrypto, store_id_origin
from .datakeys import SLOT_BYTES, SLOT_COUNT_KEY, SLOTS_FILE, DataKeys
from .errors import StoreDiskFull, StoreFull, StoreKeyMismatch, StorePadsMissing, StoreUnreadable
from .growth import GrowthFill
from .keys import USER_TABLES
from .layouts import KINDS, RecordKind
from .migrate import open_layouts
from .rekey import format_first, open_format
from .remap import MapGate
from .sealed import SealedTable, seal, unseal
from .sweeps import DEFAULT_PACE, SweepPace
from .table import Table
from .tokens import TOKEN_CHARS, user_token

__all__ = ["Store", "TABLES", "open_env"]

logger = logging.getLogger("tailor.store")

TABLES = ("meta", "profiles", "events", "dedupe", "bandit", "decisions", "campaigns", "contacts",
          "suppression", "sends", "catalog", "impressions", "datakeys", "outbox")
"""Every named table. Add a table here; nothing else opens LMDB."""

T = TypeVar("T")

ADOPT_TRIES = 3
"""Times a transaction's begin is tried again when the map was grown by another process: before
each, it adopts the new size (`_adopt_map`), or waits for another thread of this one that does
(`Store._adopt_and_retry`)."""
DISK_FULL_BYTES = 1 << 20
"""A write that failed with its store's filesystem below this free is refused as the disk being
full (`StoreDiskFull`): LMDB writes until the disk is full, so what is left is less than a
commit's last write (64 pages)."""

ERASURE_RESERVE = 64 << 20
"""Headroom kept for erasure at the map ceiling (at most an eighth of the ceiling)."""


def open_env(path: Path | str, **options) -> lmdb.Environment:
    """`lmdb.open` of the store directory `path` with room for every table; a file that does not
    open as LMDB (damaged, cut short, not a store) or cannot be opened is a `StoreUnreadable`
    (one line: FAILED_PRECONDITION, or the admin command's error), not an `lmdb.Error`."""
    try:
        return lmdb.open(str(path), max_dbs=len(TABLES) + 4, mode=0o600, **options)  # server.files
    except lmdb.Error as err:
        reason = str(err).removeprefix(f"{path}: ")
        if isinstance(err, (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError)):
            reason += " (damaged, or not a Tailor store: restore it from a backup)"
        raise StoreUnreadable(path, reason) from None


class Store:
    """An LMDB environment under `path` with the named `TABLES`."""

    def __init__(self, path: Path | str, map_size: int = 1 << 30, max_map_size: int = 1 << 40,
                 sync: bool = True, readonly: bool = False,
                 layouts: Sequence[RecordKind] = KINDS, crypto: StoreCrypto | dict | None = None,
                 sweep_pace: SweepPace = DEFAULT_PACE):
        self.path = Path(path)
        make_dirs(self.path)
        self.readonly = readonly
        self.max_map_size = max_map_size
        self.erasure_reserve = min(ERASURE_RESERVE, max_map_size // 8)
        """Bytes below `max_map_size` only erasing writes may grow the map into."""
        map_size = min(map_size, max_map_size - self.erasure_reserve)
        self.open_args = {"path": str(self.path), "map_size": map_size,
                          "max_map_size": max_map_size, "sync": sync}
        """How another process opens this same store: `Store(**open_args)`."""
        if isinstance(crypto, dict):  # from another process's open_args
            crypto = StoreCrypto.from_spec(crypto)
        self.crypto = crypto
        if crypto is not None:
            crypto.install()
            self.open_args["crypto"] = crypto.spec()
        self._gate = MapGate()
        """Transactions of this process against remaps (`remap.MapGate`)."""
        self.stopping = threading.Event()
        """Set when the server begins to stop: a long pass (`sweeps.sweep`) ends after the write
        transaction under way instead of running (and resting) to its end."""
        self.sweep_pace = sweep_pace
        """How hard this process's retention sweeps (`sweeps.sweep`) press on other writers."""
        self.env = open_env(self.path, map_size=map_size, sync=sync, metasync=sync,
                            readonly=readonly, max_readers=1024, readahead=False)
        self._fill: GrowthFill | None = None
        self.datakeys: DataKeys | None = None
        try:
            self.clear_stale_readers()
            if not readonly and GrowthFill.supported():
                self._fill = GrowthFill(self.path, self.env.stat()["psize"])
            self._raw = {name: Table(name, db) for name in TABLES
                         if (db := self.open_db(name, create=not readonly)) is not None}
            self._tables = dict(self._raw)
            if crypto is not None and crypto.encrypt:
                self._seal_tables(crypto, sync)
                if not readonly:  # a crash after an erasure's commit left its pads set
                    with self.read() as txn:
                        self.datakeys.zero_unzeroed(txn)
            first = format_first(self)  # layout steps read re-keyed, sealed records
            if first:
                open_format(self, readonly)
            self.migrated = open_layouts(self, layouts, readonly)
            if not first:
                open_format(self, readonly)
        except BaseException:
            self.close()
            raise
        """{record kind: layout version its records were migrated from} by this open."""

    @classmethod
    def from_settings(cls, s, secrets, environ: Mapping[str, str] | None = None) -> Store:
        """The store under `s.store_dir` as the servers open it: Settings `s`'s map size,
        ceiling, sync and sweep pace, encrypted (`s.encrypt_at_rest`) under `secrets`' keyrings.
        The server and every command that writes the store (`migrate`, `rotate-key`) open it
        here, so a command grows the map and stops at the ceiling the operator set, as the
        servers do, instead of at this class's defaults (a rotation grew a store past its
        ceiling, into the room kept for erasure). `environ`: the variables `secrets` were read
        from (default `os.environ`), for a key mismatch to name where its key came from."""
        crypto = StoreCrypto.from_secrets(secrets, encrypt=s.encrypt_at_rest)
        pace = SweepPace(s.retention_sweep_chunk_keys, s.retention_sweep_write_records,
                         s.retention_sweep_rest)
        try:
            return cls(s.store_dir, map_size=s.lmdb_map_size, max_map_size=s.lmdb_max_map_size,
                       sync=s.lmdb_sync, crypto=crypto, sweep_pace=pace)
        except StoreKeyMismatch as err:  # say where the key came from, as only `s` knows
            raise StoreKeyMismatch(err.path, store_id_origin(s, environ)) from None

    def open_db(self, name: str, create: bool = True):
        """The LMDB handle of table `name` (`TABLES`, or rekey's scratch table); None when absent
        and not `create`: a read-only open of a data dir written before the table was added (the
        first writable open creates it). Its transaction adopts a map another process grew
        (`_adopt_and_retry`), as every other does: an open's first ones follow `lmdb.open`,
        which sized the map at the pages in use then."""
        held = self._gate.enter()
        try:
            try:
                return self.env.open_db(name.encode(), create=create)
            except lmdb.MapResizedError:
                return self._adopt_and_retry(self.env.open_db, name.encode(), create=create)
        except lmdb.NotFoundError:
            if create:
                raise
            return None
        finally:
            self._gate.leave(held)

    def _seal_tables(self, crypto: StoreCrypto, sync: bool) -> None:
        self._check_pads()
        self.datakeys = DataKeys(self.path, self._raw["datakeys"], self._raw["meta"], crypto.master,
                                 sync=sync, cache_size=crypto.cache_size,
                                 reload_master=crypto.reload_master)
        for name in USER_TABLES:
            if name in self._raw:
                self._tables[name] = SealedTable(name, self._raw[name].db, self.datakeys)

    def _check_pads(self) -> None:
        """StorePadsMissing when the pad file is missing or shorter than the pads handed out
        (each is written, and fsynced, before the commit that counts it), before it is made."""
        with self.read() as txn:
            keys = int(self._raw["meta"].get(txn, SLOT_COUNT_KEY) or b"0")
        try:
            size = (self.path / SLOTS_FILE).stat().st_size
        except FileNotFoundError:
            size = 0
        if size < keys * SLOT_BYTES:
            raise StorePadsMissing(self.path, keys, size // SLOT_BYTES)

    def raw_table(self, name: str) -> Table:
        """`table(name)` without sealing (migrations, rotation, tests of what is on disk)."""
        try:
            return self._raw[name]
        except KeyError:
            raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None

    def shred(self, txn, user_id: str) -> bool:
        """Destroy the user's data key in erasure transaction `txn` (crypto-shredding: every
        copy of their ciphertext becomes unreadable); False without encryption or key."""
        return self.datakeys is not None and self.datakeys.shred(txn, user_token(user_id))

    def seal_for_user(self, txn, user_id: str, key: bytes, value: bytes) -> bytes:
        """`value` of record `key` outside the per-user tables (an index entry naming the user),
        sealed under the user's data key: `token | sealed`; as is without encryption."""
        if self.datakeys is None:
            return value
        token = user_token(user_id)
        return token + seal(self.datakeys.cipher(txn, token, create=True), b"aux\x00" + key, value)

    def open_for_user(self, txn, key: bytes, stored: bytes | None) -> bytes | None:
        """What `seal_for_user` sealed (None: absent, or its user's key is shredded)."""
        if stored is None or self.datakeys is None:
            return stored
        aead = self.datakeys.cipher(txn, bytes(stored[:TOKEN_CHARS]))
        return None if aead is None else unseal(aead, b"aux\x00" + key, bytes(stored[TOKEN_CHARS:]))

    def sealed_for(self, stored: bytes, user_id: str) -> bool | None:
        """Whether a `seal_for_user` value was sealed for `user_id`, told by the token it starts
        with (nothing decrypted); None without encryption (the value is as is: read it)."""
        if self.datakeys is None:
            return None
        return bytes(stored[:TOKEN_CHARS]) == user_token(user_id)

    def table(self, name: str) -> Table:
        try:
            return self._tables[name]
        except KeyError:
            raise KeyError(f"unknown table {name!r}; tables: {', '.join(TABLES)}") from None

    def db(self, table: str):
        """The raw LMDB handle of `table` (for tests of the writer process; code uses `table`)."""
        return self.table(table).db

    # -- transactions ----------------------------------------------------------------------
    def read(self) -> _Snapshot:
        """A read-only snapshot (`with store.read() as txn:`); use it from one thread and close
        it quickly."""
        return _Snapshot(self)

    def _begin(self, write: bool) -> lmdb.Transaction:
        """A transaction (the caller holds the gate); a map another process grew past this
        process's is adopted first (`_adopt_and_retry`)."""
        try:
            return self.env.begin(write=write, buffers=False)
        except lmdb.MapResizedError:
            return self._adopt_and_retry(self.env.begin, write=write, buffers=False)

    def _adopt_and_retry(self, begin: Callable[..., T], *args, **kwargs) -> T:
        """`begin(*args, **kwargs)`, a call that begins a transaction and raised
        `MapResizedError` (the caller holds the gate), again once this process adopted the
        grown map: once no other thread has a transaction open (`MapGate`), or another thread
        adopted it. Every transaction of a `Store` begins through it when the map grew
        (`_begin`, `open_db`): out of the hot path, which is only a `begin`."""
        for _ in range(ADOPT_TRIES - 1):
            self._gate.remap(self._adopt_map)  # or another thread's remap ran: again
            try:
                return begin(*args, **kwargs)
            except lmdb.MapResizedError:
                pass
        self._gate.remap(self._adopt_map)
        return begin(*args, **kwargs)

    @property
    def ordinary_ceiling(self) -> int:
        """The largest map an ordinary (not erasing) write may grow it to."""
        return self.max_map_size - self.erasure_reserve

    def _adopt_map(self) -> None:
        """Take the map size another process grew the map to (LMDB's recorded size), but no more
        than the ordinary ceiling: an erasure that grew it into the reserve leaves the reserve
        to erasures here too (LMDB keeps the map at least as large as the pages in use)."""
        self.env.set_mapsize(0)
        if self.env.info()["map_size"] > self.ordinary_ceiling:
            self.env.set_mapsize(self.ordinary_ceiling)

    def write(self, fn: Callable[[lmdb.Transaction], T], erasure: bool = False) -> T:
        """Run `fn(txn)` in one write transaction and commit; grow the map and retry if full.

        `fn` may run more than once (after a MapFullError nothing of the first try is kept),
        so it must only read and write through `txn`. Only an `erasure` (a write that deletes,
        such as DeleteProfile) may grow the map into the erasure reserve; the map is then set
        back, so the pages it freed serve later writes and the reserve stays for the next one.
        """
        grown = False
        try:
            while True:
                try:
                    return self._write_once(fn)
                except lmdb.MapFullError:  # the transaction is gone: grow, then again
                    grown |= bool(self._gate.remap(lambda: self._grow(erasure)))
        finally:
            if grown:
                self._gate.remap(self._shrink_to_ordinary_ceiling)

    def _refuse_if_disk_full(self, err: Exception) -> None:
        """StoreDiskFull for a write that failed on a full disk: LMDB's commit says ENOSPC
        (`DiskError`) or, for a write cut short by it, EIO; a pad or another file, ENOSPC."""
        if isinstance(err, OSError):
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        else:
            full = isinstance(err, lmdb.DiskError) or type(err) is lmdb.Error
        if not full:
            return
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return
        free = stat.f_bavail * stat.f_frsize
        if free < DISK_FULL_BYTES:
            raise StoreDiskFull(self.path, free) from None

    def _write_once(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        held = self._gate.enter()
        try:
            fill = self._fill
            with self._begin(write=True) as txn:
                if fill is not None:
                    began = fill.before_write(self.env)
                result = fn(txn)
                if self.datakeys is not None:
                    self.datakeys.flush()  # new pads, and the previous erasure's
                    # pads zeroed again, on disk before the commit
            if fill is not None:
                fill.after_commit(self.env, began)
        except (lmdb.Error, OSError) as err:  # not committed
            self._refuse_if_disk_full(err)
            raise
        finally:
            self._gate.leave(held)
        if self.datakeys is not None:  # then a shred's pads are zeroed
            self.datakeys.committed(txn)
        return result

    def _grow(self, erasure: bool = False) -> bool:
        """Grow the map (in `MapGate.remap`); True when an erasure grew it into the reserve."""
        ordinary = self.ordinary_ceiling
        ceiling = self.max_map_size if erasure else ordinary
        current = self.env.info()["map_size"]
        if current >= ceiling:
            raise StoreFull(self.max_map_size, self.erasure_reserve)
        new = min(current * 2, ceiling)
        logger.info("growing LMDB map from %d to %d bytes", current, new)
        self.env.set_mapsize(new)
        return new > ordinary

    def _shrink_to_ordinary_ceiling(self) -> None:
        # LMDB keeps the map at least as large as the pages in use.
        self.env.set_mapsize(self.ordinary_ceiling)

    # -- conveniences --------------------------------------------------------------------
    def get(self, table: str, key: bytes) -> bytes | None:
        t = self.table(table)
        with self.read() as txn:
            return t.get(txn, key)

    def get_many(self, table: str, keys: Iterable[bytes]) -> list[bytes | None]:
        """One value per key, in input order, None for a miss (one snapshot)."""
        t = self.table(table)
        with self.read() as txn:
            return t.get_many(txn, list(keys))

    def put_many(self, table: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        items, t = list(items), self.table(table)
        self.write(lambda txn: t.put_many(txn, items))

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self.put_many(table, [(key, value)])

    def delete(self, table: str, key: bytes) -> bool:
        t = self.table(table)
        return self.write(lambda txn: t.delete(txn, key))

    def scan(self, table: str, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, in key order (one snapshot)."""
        t = self.table(table)
        with self.read() as txn:
            return t.scan_prefix(txn, prefix)

    def sync(self) -> None:
        self.env.sync(True)

    def usage(self) -> dict[str, int]:
        """Bytes up to the highest page written (`used`: free pages inside it count, until a
        compaction), the current map size and its ceiling."""
        held = self._gate.enter()  # not while this process remaps
        try:
            info, page = self.env.info(), self.env.stat()["psize"]
        finally:
            self._gate.leave(held)
        return {"used": (info["last_pgno"] + 1) * page,
                "map_size": info["map_size"], "max_map_size": self.max_map_size}

    def clear_stale_readers(self) -> int:
        """Free the reader slots of processes that died in a read transaction; returns how
        many. LMDB frees them only in a process that asks (`mdb_reader_check`: a slot whose
        process no longer holds its lock on the lock file) or when the first process opens the
        store after all have closed it; until then the oldest dead snapshot pins every page
        written since."""
        held = self._gate.enter()  # not while this process remaps
        try:
            freed = self.env.reader_check()
        except lmdb.Error as err:  # a clean-up: never the reason a store does not open
            logger.warning("could not check the store's reader table: %s", err)
            return 0
        finally:
            self._gate.leave(held)
        if freed:
            logger.warning("freed %d reader slot(s) of processes that died reading the store "
                           "(their snapshot kept freed pages from being reused)", freed)
        return freed

    def close(self) -> None:
        if self.datakeys is not None:
            self.datakeys.close()
        if self._fill is not None:
            self._fill.close()
            self._fill = None
        self.env.close()


class _Snapshot:
    """`Store.read()`: a read transaction, holding the store's `MapGate` while open (a class,
    not a generator: ~0.5 us less a snapshot, which the gate spends)."""

    __slots__ = ("_store", "_txn", "_held")

    def __init__(self, store: Store):
        self._store = store

    def __enter__(self) -> lmdb.Transaction:
        store = self._store
        self._held = store._gate.enter()
        try:
            self._txn = store._begin(write=False)
        except BaseException:
            store._gate.leave(self._held)
            raise
        return self._txn

    def __exit__(self, *exc) -> None:
        try:
            self._txn.abort()
        finally:
            self._store._gate.leave(self._held)
