"""The data file is extended ahead of LMDB's growth and read into the page cache one page per
folio, so LMDB's commits rewrite single pages, not large folios.

Since Linux 6.16, ext4 keeps a file's page cache in large folios (XFS did before), sized by
the writes and reads that fill it. LMDB writes the pages a commit adds at the end of the file in
runs (one `pwritev` of up to 64 pages), so the cache holds most of a grown file in folios of
many pages; a later commit that rewrites one page of such a folio (a random insert, reusing a
freed page) dirties the whole folio, and the fsync writes it all back. Measured on this project's
machines (ext4, 6.18): 11 times the bytes LMDB wrote, 171-175 against 21 KiB a PlanCampaign
decision, and about a fifth of the writer's CPU. Writes into pages already cached keep their
folios. So before LMDB grows into it, the region past its last page is allocated (`fallocate`:
it reads as zeros, with no write) and read through a descriptor advised `POSIX_FADV_RANDOM`,
which reads exactly what is asked, one page per folio, in one call per MiB (~1.8 us of CPU a
page, once; the cached pages are clean, so nothing is written back for them).

The fill runs in a write transaction before its first change (`Store.write`): LMDB's write
lock keeps every other writer out, and no page of the transaction is on disk yet, so nothing
past the last page in use (`last_pgno`) holds data. Readers never look past it either (and
glibc's `posix_fallocate`, on a filesystem without `fallocate`, writes a zero byte a block: safe
only under that lock). A fill that fails (a full disk) is skipped, and tried again once the store
has grown by half a margin: it only saves work, and a full store must still be able to erase.
Where the calls do not exist (not Linux), there is no fill (`GrowthFill.supported`).

A transaction that grows the store past the filled region (a PlanCampaign commit of 1,000
decisions, 256 new users in a TrackEvents batch, on a young store) has LMDB write those pages
in its runs: `after_commit` writes them back (`sync_file_range`: a store without fsync holds
them dirty, and the kernel drops only clean pages; where a kernel or sandbox lacks the call,
ENOSYS, this is skipped: the region a fill reads holds no dirty page but those a spill left, and
a store with fsync wrote its commits back already), drops them from the cache
(`POSIX_FADV_DONTNEED`) and reads them again, a page a folio; reading alone would keep the
folios the commit made. The margin then grows to twice the most a transaction grew the store
(up to `MAX_AHEAD`), so the next such transaction stays inside it. Without this, every later
one-page commit reusing those pages wrote 105-136 KiB to storage instead of 28 (`/proc/self/io`).
A page another thread or process maps between the commit and the drop stays (the kernel does
not drop mapped pages): the drop only saves work.

What the fill counts as filled is its own: the region it read, in memory, not the file's size.
Pages past the last in use can hold more than the fill's zeros: LMDB writes ("spills") part of
a transaction's pages to the file before its commit once the transaction dirtied more than its
dirty list holds (2^17 pages, 512 MiB of 4 KiB pages), and an aborted one leaves them there,
past `last_pgno` (measured: an aborted transaction of 300,000 puts left a 1.2 GB file with
`last_pgno` 1); so does a commit cut short by a full disk, and another process's store writes.
So a fill writes back and drops its region before reading it, and a new `GrowthFill` (an open)
starts from the last page in use.

A data file written whole outside a server (a compaction's rewrite, a restore's extraction) is
dropped from the cache once synced (`drop_cached`), so the server that opens it next caches it
a page a folio too.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
from pathlib import Path

__all__ = ["GrowthFill", "drop_cached"]

logger = logging.getLogger("tailor.store")

MIN_AHEAD = 256 << 10
"""Bytes kept filled past the last page in use, at least (a new store: a small file)."""
MAX_AHEAD = 8 << 20
"""At most: a fill then reads ~4 MiB (~2 ms) each time the store grows by that much."""
READ_BYTES = 1 << 20
"""Read a call: the kernel reads the range page by page (`POSIX_FADV_RANDOM`)."""
FOLIO_BYTES = 2 << 20
"""The largest folio x86-64's page cache makes (a PMD), aligned to its size (`_folio_end`)."""
WRITE_BACK = 1 | 2 | 4
"""`sync_file_range`'s WAIT_BEFORE | WRITE | WAIT_AFTER: the range's dirty pages are written
and waited for (nothing else: no metadata, no device flush), so the drop that follows finds
them clean."""


def _libc_sync_file_range():
    """glibc's (or musl's) `sync_file_range`, which `os` does not offer; None without it."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE = _libc_sync_file_range() if sys.platform.startswith("linux") else None


def drop_cached(path: Path) -> None:
    """Drop the file `path`, written in runs, synced and mapped by nobody (a compaction's fresh
    `data.mdb`, `compaction.rewrite_records`), from the page cache: cached in the folios its
    writes made, it had the first server to open it write back a whole folio for each page a
    commit rewrote (measured after a compaction: 249 KiB to storage a one-record commit, 12.4
    times what LMDB wrote; 33.7 KiB with the file dropped), until those pages left the cache.
    The store's random-access map then reads what it needs a page a folio (as after a reboot).
    The kernel drops clean pages only. It only saves work: not where the call does not exist,
    and a refusal is ignored."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError as err:
        logger.info("could not drop %s from the page cache: %s", path, err)


def _folio_end(offset: int) -> int:
    """The folio boundary at or past `offset`: a fill drops and reads on to it, since the kernel
    keeps a folio a range only cuts into (one an aborted transaction's spill made, say); the
    pages past the region, not in use, may be another process's fill (read again, not left
    uncached for LMDB's runs to fill). Under LMDB's write lock: no commit lands meanwhile."""
    return -(-offset // FOLIO_BYTES) * FOLIO_BYTES


class GrowthFill:
    """Keeps `data.mdb` allocated and cached, a page a folio, past the last page LMDB uses: an
    eighth of the bytes in use, or twice the most a transaction grew the store past the filled
    region, whichever is more (`MIN_AHEAD` to `MAX_AHEAD`); `before_write(env)` at the start of
    every write transaction, `after_commit(env, began)` after its commit."""

    @staticmethod
    def supported() -> bool:
        """Large folios are Linux's; so are the calls the fill needs."""
        return sys.platform.startswith("linux") and hasattr(os, "posix_fallocate") \
            and hasattr(os, "posix_fadvise") and _SYNC_FILE_RANGE is not None

    def __init__(self, store_dir: Path, page_size: int):
        self.page = page_size
        self._fd = os.open(Path(store_dir) / "data.mdb", os.O_RDWR)
        try:
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)  # this descriptor's reads only
        except OSError:
            os.close(self._fd)
            raise
        self._buffer = bytearray(READ_BYTES)
        self._retry_at = 0
        """After a failed fill: the bytes in use at which to try again."""
        self.filled = 0
        """Where the region this fill cached a page a folio (or found in use) ends, in bytes:
        what the cache holds past it is unknown, whatever the file's size (a new fill starts at
        the last page in use)."""
        self.largest = 0
        """The most one transaction grew the store past the filled region (bytes)."""
        self._repair_failed = False
        """The last `after_commit` that had pages to cache again failed (logged once)."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def ahead(self, used: int) -> int:
        """The margin kept filled past `used` bytes in use."""
        return max(MIN_AHEAD, min(MAX_AHEAD, max(used // 8, 2 * self.largest)))

    def before_write(self, env) -> int:
        """Fill when less than half the margin is left (the caller holds the write lock and
        has changed nothing yet); returns the bytes in use, for `after_commit`."""
        used = (env.info()["last_pgno"] + 1) * self.page
        ahead = self.ahead(used)
        if self.filled - used >= ahead // 2 or used < self._retry_at:
            return used
        start = max(self.filled, used)
        try:
            os.posix_fallocate(self._fd, start, used + ahead - start)
            self._cache_again(start, _folio_end(used + ahead))  # not only read: the module's end
        except OSError as err:  # a full disk: LMDB's own writes will say so
            if not self._retry_at:
                logger.warning("could not extend the store's data file ahead of use: %s", err)
            self._retry_at = used + ahead // 2
        else:
            self.filled = used + ahead
            if self._retry_at:
                logger.info("the store's data file is extended ahead of use again")
            self._retry_at = 0
        return used

    def after_commit(self, env, began: int) -> None:
        """Cache again, a page a folio, what a commit wrote past the filled region; `began`:
        the bytes in use when its transaction began (`before_write`'s, kept by the caller:
        LMDB's write lock is released, so another thread's transaction may begin before this
        runs; what this does, writing back, dropping and reading pages, changes no data).

        Up to the last page in use, not on to the folio boundary past it as a fill does: with
        the lock released, another process's commit could land past it between the drop and
        the read, into pages it had filled and this drop uncached, and the kernel would cache
        them in the folios its runs make (measured: its records' one-record rewrites then sent
        5.97 times the bytes LMDB wrote to storage, 120 KiB a commit, against 1.39). The
        folios the commit made end at its last page: a write makes none past its own end (a
        folio an aborted transaction's spill left across it stays, a rarer case)."""
        used = (env.info()["last_pgno"] + 1) * self.page
        if used <= self.filled:
            return
        start = max(self.filled, began)
        self.largest = max(self.largest, used - began)
        try:
            self._cache_again(start, used)
        except OSError as err:  # it only saves work: one line until it works again
            if not self._repair_failed:
                logger.warning("could not cache again what a commit wrote past the store's "
                               "filled region: %s", err)
            self._repair_failed = True
        else:
            self._repair_failed = False
        self.filled = max(self.filled, used)

    def _cache_again(self, start: int, end: int) -> None:
        """Write back the range's dirty pages, drop it from the page cache and read it again, a
        page a folio (past the file's end, nothing is read)."""
        if _SYNC_FILE_RANGE(self._fd, start, end - start, WRITE_BACK) != 0:
            err = ctypes.get_errno()
            if err != errno.ENOSYS:  # without the call: the drop keeps what is dirty
                raise OSError(err, os.strerror(err))
        os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)
        self._read(start, end)

    def _read(self, start: int, end: int) -> None:
        view = memoryview(self._buffer)
        for offset in range(start, end, READ_BYTES):
            os.preadv(self._fd, [view[:end - offset]], offset)
