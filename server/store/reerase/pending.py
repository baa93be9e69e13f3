"""Re-erasure of the campaigns' pending counters: a pending decision of a user erased again
is uncounted from its campaign's counter, as DeleteProfile uncounts it."""
from __future__ import annotations

import json
from collections import Counter

from .. import keys
from ..opener import Opener
from ..table import Table

__all__ = ["due", "uncount"]


def due(txn, decisions: Table, doomed: set[bytes]) -> list[tuple[bytes, bytes]]:
    """(entry key, decision key) of the pending-window entries naming one of the `doomed`
    decision keys (one walk of the window: the pending decisions)."""
    if not doomed:
        return []
    found = []
    for key, pkey in decisions.items(txn, keys.DUE_PREFIX):
        if not key.startswith(keys.DUE_PREFIX):
            break
        if bytes(pkey) in doomed:
            found.append((bytes(key), bytes(pkey)))
    return found


def uncount(txn, bandit: Table, pending: list[bytes], opened: Opener) -> Counter:
    """Lower each campaign's pending counter by the `pending` decisions (their keys) it
    counts, as DeleteProfile does (`CampaignRepository._erase_decisions`): the campaign is in
    the decision record, sealed with encryption at rest (`Opener`); `pending_corrected` and
    `pending_unread` (records that did not open or decode: their campaigns' counters still
    count them)."""
    by_campaign: Counter = Counter()
    unread = 0
    for pkey in pending:
        campaign_id = _campaign_of(opened.record(txn, "decisions", pkey))
        if campaign_id is None:
            unread += 1
        else:
            by_campaign[campaign_id] += 1
    for campaign_id, n in by_campaign.items():
        key = keys.count_key(campaign_id)
        if (raw := bandit.get(txn, key)) is not None:
            counters = json.loads(bytes(raw))
            counters["pending"] = counters.get("pending", 0) - n
            bandit.put(txn, key, json.dumps(counters).encode())
    return Counter(pending_corrected=sum(by_campaign.values()), pending_unread=unread)


def _campaign_of(raw: bytes | None) -> str | None:
    """The campaign of a decision record; None for one not opened (None) or damaged (it does
    not decode, its packed layout cut or changed included: `decision_log.decoded`), which is
    counted unread rather than failing the erasure, and with it the restore that repairs
    the damage."""
    from ...campaigns.decision_log import decoded  # campaigns imports the store
    try:
        return decoded(raw)["campaign_id"]
    except (TypeError, ValueError, KeyError):  # None, or not a record of that shape
        return None
