"""Streamed answers read off the event loop: an export comes as lists of records, one per
short LMDB read snapshot (`store.scan`), and each list is read in a thread, so a scan that
reads past millions of records out of the asked range never holds up the other calls of the
worker, and a call that ends (cancelled, its deadline passed) stops the scan at the next
snapshot instead of leaving it running in a thread."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

__all__ = ["in_chunks"]


async def in_chunks(chunks: Iterator[list]) -> AsyncIterator[list]:
    """The non-empty lists of `chunks`, each read in a thread (`chunks` must not hold a read
    transaction between two lists)."""
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        if chunk:
            yield chunk
