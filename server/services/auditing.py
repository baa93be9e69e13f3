"""Audit lines a servicer writes of what a call did, beside the auth interceptor's line of the
call (its method, caller and status): the version a push served, the keep-out an opt-in lifted.
Domain lines as the canary guardrails write theirs (`models.monitor`), here with the caller as
principal and the call's request id."""
from __future__ import annotations

import asyncio
import logging

from ..logging import current_call
from ..security.interceptor import current_principal
from ..security.logging import audit_failed

__all__ = ["audit_line"]

logger = logging.getLogger("tailor.services")


async def audit_line(audit, method: str, target: str = "", **details: str | int) -> None:
    """Write the call's audit line of `method` (`target`: a user id, stored as its keyed hash;
    `details` as they are) to `audit` (`record(principal, method, target, status, request_id,
    **details)`; None: none kept). The audit log failing does not change the call's answer
    (the interceptor's rule): it is logged."""
    if audit is None:
        return
    call = current_call()
    try:
        await asyncio.to_thread(audit.record, current_principal().name, method, target, "OK",
                                call.request_id if call else "", **details)
    except Exception:
        audit_failed(method, logger)
