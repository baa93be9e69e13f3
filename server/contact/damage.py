"""What a worker says of users whose contact histories are damaged (`caps`, module docstring):
a WARNING naming each by its keyed hash (`user_ref`, never the id) and the use the history was
read for, once a minute at most for one user and use, and `metrics.CONTACT_HISTORIES_DAMAGED`.
The campaigns writer process, which finds most of them, hands the users back in its answers;
it has neither the `user-id` key nor the metrics' files."""
from __future__ import annotations

from collections.abc import Sequence

from .. import metrics
from ..logging import Spaced
from ..security.userref import user_ref
from .logging import logger

__all__ = ["DECISION", "SEND", "report_damaged"]

DECISION, SEND = "decision", "send"
"""`report_damaged`'s uses: a capped decision refused, a `<channel>_sent` event not counted."""

_spaced = Spaced(60.0)
"""A user's history found damaged for one use is logged once a minute at most (each capped
decision of a hot user reads it); the metric counts every one (as `profiles.damage`)."""

_WHAT = {DECISION: "a decision a frequency cap checks refused (contact_history_damaged)",
         SEND: "a sent event not counted toward the frequency caps"}


def report_damaged(user_ids: Sequence[str], use: str) -> None:
    """Log and count the users of `user_ids` whose contact histories were found damaged when
    read for `use` (`DECISION`, `SEND`)."""
    if not user_ids:
        return
    metrics.CONTACT_HISTORIES_DAMAGED.labels(use).inc(len(user_ids))
    for user_id in user_ids:
        ref = user_ref(user_id)
        if _spaced.due((ref, use)):
            logger.warning("contact history of %s is damaged (does not open or decode): %s; "
                           "restore the store or erase the user (docs/operations.md)", ref,
                           _WHAT[use])
