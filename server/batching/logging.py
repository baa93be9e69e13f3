"""Loggers of the batching package: the server's side and the writer child's, and how a failed
batch is logged."""
import logging

from ..errors import TailorError

logger = logging.getLogger("tailor.batching")
process_logger = logging.getLogger("tailor.writer_process")
child_logger = logging.getLogger("tailor.writer_child")


def log_failed_batch(log: logging.Logger, what: str, err: BaseException) -> None:
    """Log a batch that failed whole with `err` (`what`: which batch). A domain error (a
    `TailorError`: a full store, a refusal) is each caller's answer, which `server.errors` logs
    per call: one WARNING line without a traceback (on a full store every write batch failed
    with two chained tracebacks at ERROR, ~2.5 KB each, for as long as it stayed full); anything
    else is a bug, logged at ERROR with its traceback."""
    if isinstance(err, TailorError):
        log.warning("%s refused: %s", what, err.log_message())
    else:
        log.error("%s failed", what, exc_info=err)
