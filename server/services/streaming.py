"""Streamed answers read off the event loop: an export's records come from a blocking
iterator (LMDB scans in short snapshots: `store.scan`), taken some at a time in a thread, so
a scan that reads past millions of records out of the asked range never holds up the other
calls of the worker."""
from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

__all__ = ["EXPORT_CHUNK", "in_chunks"]

EXPORT_CHUNK = 1000
"""Records of an export read per trip to a thread."""


def _next_chunk(records: Iterator, n: int) -> list:
    return list(itertools.islice(records, n))


async def in_chunks(records: Iterator, n: int = EXPORT_CHUNK) -> AsyncIterator[list]:
    """The records of `records`, `n` at a time (fewer at its end), each list read in a thread
    (`records` must not hold a read transaction between two of its items)."""
    while chunk := await asyncio.to_thread(_next_chunk, records, n):
        yield chunk
