"""The contact policy's consent and suppression checks, again at the commit.

A decision's verdict is made on the event loop from a read snapshot; its record is committed
later, in the campaigns writer's transaction (after the batches queued before it). A consent
change (SetConsent, a one-click link, STOP, an unsubscribe event) or an address listed (a
bounce, a complaint, AddSuppression) committed in between would otherwise be answered
afterwards with a decision to contact. The caps are checked in that transaction; so is this:

* the read side stamps each user's profile meta record as the snapshot held it (`digest` of
  the stored bytes, sealed or not, from the read the contact policy makes of it:
  `ProfileStates.states_and_meta(with_stored=True)`; b"" when there was none) and each record names,
  per channel it may be logged on, what that channel's consent needs and the keys of the
  user's address on the suppression list (`recheck_of`);
* the writer (`Recheck.refused`) reads the meta record's stored bytes again in its transaction:
  the same digest, nothing changed and nothing is parsed; another, the record is opened and
  consent checked again (`consent.consent_reason`), for each channel; each address key is
  looked up in the suppression list (one get).

A channel refused there is refused as a full cap is (`caps.Admission.refused`): the decision
falls back on another allowed channel when its caller gave them, else it is logged
suppressed with the reason (`no_consent`, `suppressed_address`). A meta record changed since
the read that no longer opens or decodes (damaged on disk, by a bad restore) refuses every
channel of that decision (`profile_damaged`, as its read would have: consent cannot be shown),
the others of the batch as they are; the worker reports it (`choice`, `plan`: the writer has
no metrics). A change of the address
itself in between (a new email attribute) is not re-checked: the decision's message was
rendered for the address read (ComposeMessage), and a stored message is checked again before
it goes (`messages.delivery`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from ..contact.consent import MARKETING, NO_CONSENT, TRANSACTIONAL, consent_reason
from ..contact.suppression import SUPPRESSED_ADDRESS, listed_for
from ..profiles.errors import PROFILE_DAMAGED
from ..store import Store, keys
from ..store.damaged import DAMAGED, UNREADABLE

__all__ = ["Recheck", "digest", "recheck_of"]

EMPTY: Mapping = {}


def digest(stored: bytes | None) -> bytes:
    """8 bytes naming a stored meta record's version (b"" for none)."""
    return hashlib.blake2b(stored, digest_size=8).digest() if stored else b""


def recheck_of(stamp: bytes, meta: Mapping | None, channels: Sequence[str],
               needs: Mapping[str, str], suppressions) -> tuple:
    """What the writer checks again for a decision that may be logged on `channels`:
    (the meta record's `stamp`, ((channel, consent need, address keys), ...)); () when
    nothing could refuse it (no consent checked, no address listed)."""
    out = []
    for c in channels:
        found = suppressions.address_keys(meta, c) if suppressions is not None else ()
        need = needs.get(c, "none")
        if found or need != "none":
            out.append((c, need, found))
    return (stamp, tuple(out)) if out else ()


class Recheck:
    """The writer side (see the module docstring)."""

    def __init__(self, store: Store):
        self._meta = store.table("profiles")
        self._listed = store.table("suppression")

    def refused(self, txn, records: Sequence, skip: Mapping = EMPTY) -> list[dict[str, str]]:
        """{channel: reason} the policy refuses now, per decision record (`DecisionRecord`:
        its `recheck`, user and purpose; those at the indices in `skip`: {})."""
        asked = [i for i, r in enumerate(records) if r.recheck and i not in skip]
        out: list[dict[str, str]] = [{} for _ in records]
        if not asked:
            return out
        meta_keys = [keys.profile_meta_key(records[i].user_id) for i in asked]
        for i, key, raw in zip(asked, meta_keys, self._meta.stored(txn, meta_keys)):
            stamp, channels = records[i].recheck
            changed = digest(raw) != stamp
            meta = _opened(self._meta, txn, key, raw) if changed else None
            if meta is DAMAGED:  # consent cannot be read again: no channel allowed
                out[i] = {channel: PROFILE_DAMAGED for channel, _, _ in channels}
                continue
            purpose = TRANSACTIONAL if records[i].transactional else MARKETING
            for channel, need, found in channels:
                if changed and need != "none" and consent_reason(
                        meta, channel, purpose, {channel: need}) is not None:
                    out[i][channel] = NO_CONSENT
                elif found and any(listed_for(self._listed.get(txn, k), purpose) for k in found):
                    out[i][channel] = SUPPRESSED_ADDRESS
        return out


def _opened(table, txn, key: bytes, raw: bytes | None):
    """The meta record as it stands (None: no profile, so no consent); `DAMAGED`: it does not
    open or decode (changed on disk or by a bad restore since the decision's read)."""
    try:
        value = table.open(txn, key, raw) if raw is not None else None
        return json.loads(value.decode()) if value else None
    except UNREADABLE:
        return DAMAGED
