"""Batching: `AdaptiveBatcher` groups concurrent calls into batches run by a runner, either a
thread pool (`ThreadRunner`) or a child process (`WriterProcess.runner`, child in `child`).

The names load on first use (PEP 562 `__getattr__`): the writer child, started as
`python -m server.batching.child`, imports this package first and needs none of them, nor the
metrics and asyncio they pull in (about half its start-up time).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import exports

if TYPE_CHECKING:
    from .adaptive import AdaptiveBatcher, Done, Runner, exempt
    from .bulk import Bulk
    from .errors import BatcherClosed
    from .process_runner import WriterProcess
    from .thread_runner import ThreadRunner

__all__ = ["AdaptiveBatcher", "BatcherClosed", "Bulk", "Done", "Runner", "ThreadRunner",
           "WriterProcess", "exempt"]

__getattr__ = exports(
    __name__,
    adaptive=("AdaptiveBatcher", "Done", "Runner", "exempt"),
    bulk=("Bulk",),
    errors=("BatcherClosed",),
    process_runner=("WriterProcess",),
    thread_runner=("ThreadRunner",),
)
