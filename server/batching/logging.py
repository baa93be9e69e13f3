"""Loggers of the batching package: the server's side and the writer child's."""
import logging

logger = logging.getLogger("tailor.batching")
process_logger = logging.getLogger("tailor.writer_process")
child_logger = logging.getLogger("tailor.writer_child")
