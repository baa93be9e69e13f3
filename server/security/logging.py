"""Logger of the security package (it never logs tokens, user ids or PII, only principal names)."""
import logging
import sys

logger = logging.getLogger("tailor.security")


def audit_failed(method: str, log: logging.Logger = logger) -> None:
    """Log, from an `except` block, that the audit line of `method` could not be written (the
    call's answer stands: the audit log failing does not change it). A failure of the disk (a
    full one, a read-only one: an OSError) is one line naming it; anything else, a bug, keeps
    its traceback. A full disk logged a traceback of ~20 lines for every audited call."""
    err = sys.exc_info()[1]
    if isinstance(err, OSError):
        log.error("audit record failed for %s: %s", method, err)
    else:
        log.exception("audit record failed for %s", method)
