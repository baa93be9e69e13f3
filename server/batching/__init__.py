"""Batching: `AdaptiveBatcher` groups concurrent calls into batches run by a runner, either a
thread pool (`ThreadRunner`) or a child process (`WriterProcess.runner`, child in `child`)."""
from .adaptive import AdaptiveBatcher, Done, Runner
from .errors import BatcherClosed
from .process_runner import WriterProcess
from .thread_runner import ThreadRunner

__all__ = ["AdaptiveBatcher", "BatcherClosed", "Done", "Runner", "ThreadRunner", "WriterProcess"]
