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
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["GrowthFill"]

logger = logging.getLogger("tailor.store")

MIN_AHEAD = 256 << 10
"""Bytes kept filled past the last page in use, at least (a new store: a small file)."""
MAX_AHEAD = 8 << 20
"""At most: a fill then reads ~4 MiB (~2 ms) each time the store grows by that much."""
READ_BYTES = 1 << 20
"""Read a call: the kernel reads the range page by page (`POSIX_FADV_RANDOM`)."""


class GrowthFill:
    """Keeps `data.mdb` allocated and cached, a page a folio, an eighth of the bytes in use
    (`MIN_AHEAD` to `MAX_AHEAD`) past the last page LMDB uses; `before_write(env)` at the start
    of every write transaction."""

    @staticmethod
    def supported() -> bool:
        """Large folios are Linux's; so are the calls the fill needs."""
        return sys.platform.startswith("linux") and hasattr(os, "posix_fallocate") \
            and hasattr(os, "posix_fadvise")

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
        self._size = 0
        """The file's size when last seen: it only grows while the store is open (LMDB
        extends it, the fill allocates), so a margin this size leaves is left by the file's
        (no `fstat` a write while it is; ~1 us of a one-decision commit's ~600)."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def before_write(self, env) -> None:
        """Fill when less than half the margin is left (the caller holds the write lock and
        has changed nothing yet)."""
        used = (env.info()["last_pgno"] + 1) * self.page
        ahead = max(MIN_AHEAD, min(MAX_AHEAD, used // 8))
        if self._size - used >= ahead // 2 or used < self._retry_at:
            return
        size = self._size = os.fstat(self._fd).st_size
        if size - used >= ahead // 2:
            return
        start = -(-max(size, used) // self.page) * self.page
        try:
            os.posix_fallocate(self._fd, start, used + ahead - start)
            for offset in range(start, used + ahead, READ_BYTES):
                os.preadv(self._fd, [self._buffer], offset)
        except OSError as err:  # a full disk: LMDB's own writes will say so
            if not self._retry_at:
                logger.warning("could not extend the store's data file ahead of use: %s", err)
            self._retry_at = used + ahead // 2
        else:
            self._size = used + ahead
            if self._retry_at:
                logger.info("the store's data file is extended ahead of use again")
            self._retry_at = 0
