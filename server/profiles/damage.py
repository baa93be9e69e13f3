"""What a worker says of users whose profile records are damaged (a record of the `profiles`
table that does not open, sealed, or does not decode, plain: `store.damaged`): a WARNING naming
each by its keyed hash (`user_ref`, never the id), the record and what it was read for (once a
minute at most for one user, record and use: `_spaced`), and `metrics.PROFILE_RECORDS_DAMAGED`
(every read). The record is never written over: a restore can still read
it, and an erasure (DeleteProfile) removes it."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from .. import metrics
from ..logging import Spaced
from ..security.userref import user_ref
from .errors import PROFILE_DAMAGED, ProfileDamaged

__all__ = ["STATE", "META", "RECORDS", "EVENT", "DECISION", "RECOMMEND", "READ", "ERASE", "PRIOR",
           "CHANGE", "BACKFILL", "SUPPRESS",
           "USES", "PROFILE_DAMAGED", "report_damaged", "report_found", "report_count",
           "metas_or_none"]

STATE, META = "feature state and seen-set", "attributes and consent"
"""The records of a profile (`keys.feature_key`, `keys.profile_meta_key`), as named to callers."""
RECORDS = {STATE: "state", META: "meta"}
"""Each record's `record` label."""

EVENT, DECISION, RECOMMEND, READ, ERASE, PRIOR, CHANGE = (
    "event", "decision", "recommend", "read", "erase", "prior", "change")
BACKFILL, SUPPRESS = "backfill", "suppress"
USES = (EVENT, DECISION, RECOMMEND, READ, ERASE, PRIOR, CHANGE, BACKFILL, SUPPRESS)
_WHAT = {EVENT: "the user's events rejected (profile_damaged)",
         DECISION: "the user's decision suppressed (profile_damaged)",
         RECOMMEND: "recommended (or decided on context features) without the user's live "
                    "profile and seen items",
         READ: "the user's profile read refused (FAILED_PRECONDITION)",
         ERASE: "erased without the keep-out of the user's withdrawn addresses",
         PRIOR: "left out of the contact policy's population prior",
         CHANGE: "left out of a consent change of several users (left as it is)",
         BACKFILL: "left out of the attribute watchers' backfill (the address index)",
         SUPPRESS: "a bounce or complaint not followed to the address the profile holds (an "
                   "address the report named is listed all the same)"}

logger = logging.getLogger("tailor.profiles")
_spaced = Spaced(60.0)
"""A user's record found damaged for one use is logged once a minute at most: Recommend (and
each event, decision) of a hot user reads it at every call; the metric counts every one."""



def report_damaged(user_ids: Sequence[str], record: str, use: str) -> None:
    """Log and count the users of `user_ids` whose `record` (`STATE`, `META`) was found
    damaged when read for `use` (`USES`)."""
    if not user_ids:
        return
    metrics.PROFILE_RECORDS_DAMAGED.labels(RECORDS[record], use).inc(len(user_ids))
    for user_id in user_ids:
        ref = user_ref(user_id)
        if _spaced.due((ref, record, use)):
            logger.warning("profile record (%s) of %s is damaged (does not open or decode): %s;"
                           " restore the store or erase the user (docs/operations.md)",
                           record, ref, _WHAT[use])


def report_found(found: Sequence[tuple[int, str]], user_ids: Sequence[str], use: str) -> None:
    """`report_damaged` of a `ProfileDamaged`'s `found` (position in `user_ids`, record)."""
    for record in RECORDS:
        report_damaged([user_ids[i] for i, r in found if r == record], record, use)


def report_count(n: int, record: str, use: str) -> None:
    """`report_damaged` of `n` users known by their records' keys alone (no id to hash)."""
    metrics.PROFILE_RECORDS_DAMAGED.labels(RECORDS[record], use).inc(n)
    logger.warning("%d profile record(s) (%s) damaged (do not open or decode): %s; restore the "
                   "store or erase the users (docs/operations.md)", n, record, _WHAT[use])


def metas_or_none(read, ids: list) -> list:
    """`read(ids)` (the meta records of `ids`, `ProfileRepository.metas` or `unnamed_metas`),
    a damaged one's None (`ProfileDamaged.read`; reported by `read`): a change or a listener
    of many users goes on for the others, as if that one had no profile."""
    try:
        return read(ids)
    except ProfileDamaged as err:
        return [row[1] for row in err.read]
