"""Loggers of the batching package: the server's side and the writer child's, and how a failed
batch is logged."""
import logging

from ..errors import TailorError, failure_level

logger = logging.getLogger("tailor.batching")
process_logger = logging.getLogger("tailor.writer_process")
child_logger = logging.getLogger("tailor.writer_child")


def log_failed_batch(log: logging.Logger, what: str, err: BaseException) -> None:
    """Log a batch that failed whole with `err` (`what`: which batch), in one line for a domain
    error (a `TailorError`: each caller's answer, which `server.errors` logs per call): a full
    store (RESOURCE_EXHAUSTED) at WARNING, a store that cannot serve (a missing key, pads or an
    unreadable file: no metric of its own, the calls' lines at INFO) at ERROR. On a full store
    every write batch had failed with two chained tracebacks at ERROR, ~2.5 KB each, for as long
    as it stayed full. Anything else is a bug, logged at ERROR with its traceback."""
    if not isinstance(err, TailorError):
        log.error("%s failed", what, exc_info=err)
    else:
        log.log(failure_level(err), "%s refused: %s", what, err.log_message())
