"""Decision ids that sort by the time they were made: 24 hex characters, the decision's time in
milliseconds (11 hex digits, good until the year 2527) then 13 random hex digits (52 bits).

Why time first: the decision log's id index (`keys.decision_index_key`, ``␟d␟<decision>``) is
keyed by the id. Random ids put each new entry on a random leaf page of that index, so a
transaction of 1,000 decisions copied and wrote about 1,000 index pages (4 KiB each) at commit,
a fifth of the PlanCampaign writer's bytes written. Ids of the same millisecond share their first
11 characters: a transaction's index entries land on a few adjacent pages at the end of the
index, and (a batch's ids sorted) LMDB's cursor finds each entry's page from the previous one.

Ids stay unguessable in what matters: 52 random bits among the ids of one millisecond. An id
reveals when the decision was made, which its record (and the answer that carried it) holds
anyway. Ids made before this layout (96 random bits) stay valid: the index key is the id,
whatever its shape.

A SendCampaign job fixes its recipients' ids in advance (`fixed_decision_id`): the job's start
time, then 13 hex digits of sha256 of the send id (random, 64 bits, known to its caller) and the
recipient's position. A job resumed after a crash thus finds the decisions it logged before the
crash (`Campaigns.logged_decisions`) and reuses them instead of deciding again. Such an id tells
when the job started, not when the decision was made; a job's ids share that prefix, so its
index entries stay together.
"""
from __future__ import annotations

import hashlib
import os

from ..ids import RandomIds

__all__ = ["TimedIds", "decision_ids", "fixed_decision_id", "RANDOM_HEX", "TIME_HEX"]

TIME_HEX = 11
RANDOM_HEX = 13
_RANDOM_BYTES = (RANDOM_HEX + 1) // 2


def _prefix(now: float) -> str:
    return f"{max(int(now * 1000), 0):011x}"


def decision_ids(n: int, now: float) -> list[str]:
    """`n` ids of decisions made at `now` (unix seconds), in ascending order, from one
    `os.urandom` call."""
    hexes, head = os.urandom(_RANDOM_BYTES * n).hex(), _prefix(now)
    step = 2 * _RANDOM_BYTES
    return sorted([head + hexes[i:i + RANDOM_HEX] for i in range(0, step * n, step)])


def fixed_decision_id(now: float, key: str) -> str:
    """The id of a decision made for `key` (unique in the system: a send id and a position) by
    a job started at `now`, the same every time it is asked."""
    return _prefix(now) + hashlib.sha256(key.encode()).hexdigest()[:RANDOM_HEX]


class TimedIds:
    """One id at a time (ChooseVariant): the random digits come from `server.ids.RandomIds`
    (cut from one `os.urandom` call per `batch` ids: no system call per id on the event loop)."""

    def __init__(self, batch: int = 256):
        self._random = RandomIds(_RANDOM_BYTES, batch)

    def __call__(self, now: float) -> str:
        return _prefix(now) + self._random()[:RANDOM_HEX]
