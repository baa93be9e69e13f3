"""The raw-LMDB ceiling that ingestion benchmarks compare against.

Batched puts of ready-made records into one table of a fresh `Store`, with the given
durability, through the same `Store.write` / `Table.put_many` calls the ingest path uses: no
validation, dedupe or feature work, so whatever ingestion adds on top shows as the gap.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence

from .lmdb_store import Store

__all__ = ["batched_put_rate"]


def batched_put_rate(items: Sequence[tuple[bytes, bytes]], batch: int, sync: bool,
                     table: str = "events", work_dir: str = ".") -> float:
    """Records/s for `items` put `batch` per write transaction into a scratch store."""
    path = tempfile.mkdtemp(prefix="tailor-rawlmdb-", dir=work_dir)
    store = Store(path, map_size=8 << 30, sync=sync)
    try:
        t = store.table(table)
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            store.write(lambda txn, chunk=items[i:i + batch]: t.put_many(txn, chunk))
        seconds = time.perf_counter() - start
    finally:
        store.close()
        shutil.rmtree(path)
    return len(items) / seconds
