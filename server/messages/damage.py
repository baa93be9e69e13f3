"""What a worker says of damaged dead letters and send recipients' records (a record of the
`sends` table that does not open, sealed, or does not decode, plain: `store.damaged`): one
WARNING naming what was damaged and what became of it (never a user, id or address: the
record that names one does not read), and `metrics.MESSAGE_RECORDS_DAMAGED`."""
from __future__ import annotations

from .. import metrics
from .logging import logger

__all__ = ["DEAD_LETTER", "SEND", "LIST", "RESUME", "EXPORT", "ERASE", "RETRY", "CANCEL",
           "report_damaged"]

DEAD_LETTER, SEND = "dead_letter", "send"
"""`report_damaged`'s records: a dead letter, a send recipient's record."""

LIST, RESUME, EXPORT, ERASE, RETRY, CANCEL = "list", "resume", "export", "erase", "retry", "cancel"
"""`report_damaged`'s uses (`metrics.MESSAGE_RECORDS_DAMAGED`'s `use` label)."""

_NAMES = {DEAD_LETTER: "dead letter(s)", SEND: "send record(s)"}


def report_damaged(n: int, record: str, use: str, what: str) -> None:
    """Log and count `n` damaged `record`s (`DEAD_LETTER`, `SEND`) found where read for `use`
    (a `tailor_message_records_damaged_total` label), `what` saying what became of them."""
    if not n:
        return
    metrics.MESSAGE_RECORDS_DAMAGED.labels(record, use).inc(n)
    logger.warning("%d %s damaged (do not open or decode): %s; docs/operations.md, \"Damaged "
                   "dead letters and send records\"", n, _NAMES[record], what)
