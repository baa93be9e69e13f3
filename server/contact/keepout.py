"""An unsubscribe that outlives the erasure: the keep-out entries of the suppression list.

A withdrawal of marketing consent (SetConsent `opted_in=false`, a one-click link, an
`unsubscribe` event, an SMS STOP) is stored in the profile's consent, which the erasure
deletes. Where a channel takes a user without consent (`opt_out`, as push does by default;
email and sms `none`), the user would be sent marketing again once their profile comes back (a
CRM sync re-creating it, under the same id or another one with the same `email`; the mobile
backend upserting the app's `push_token` when it is opened again). So the erasure
(`erase_user`, a `UserEraser`, in its last transaction) lists each address of the user
(`email`, `phone`, `push_token`: `addresses.CHANNEL_KIND`) whose channel's (email, sms, push)
marketing consent is withdrawn then: an entry keyed by the
address's keyed hash as any other (`contact.suppression`; no user id, no plaintext address),
reason `unsubscribe`, dated the withdrawal's time, purpose `marketing`: it blocks marketing
only (a returning user still gets a password reset). An address listed already is left as it
is, unless by another keep-out (then dated the later withdrawal): an entry of every purpose
(a bounce, a complaint, AddSuppression) blocks more.

A later opt-in lifts it (`on_opt_in`, run in the write transaction of SetConsent
`opted_in=true` for marketing): on email, sms or push, naming its `source` (the profile's
consent history keeps it: the record of the new consent the lift stands on), by a profile
holding the address as its `email` / `phone` / `push_token` attribute then, dated no earlier
than the withdrawal, and leaving that profile's marketing consent on the channel opted in.
Nothing else lifts it but RemoveSuppression: not a START (it reopens only what a STOP of the
same profile closed), nor an attribute upsert.
"""
from __future__ import annotations

from collections.abc import Mapping

from ..interfaces import ProfileStates
from ..profiles.damage import ERASE, report_found
from ..profiles.errors import ProfileDamaged
from .addresses import CHANNEL_KIND
from .consent import MARKETING, consent_entry
from .errors import NotAnAddress
from .suppression import Suppression, Suppressions, decode, encode

__all__ = ["KeepOut", "UNSUBSCRIBE"]

UNSUBSCRIBE = "unsubscribe"
"""The reason of a keep-out entry (one of `suppression.REASONS`)."""


class KeepOut:
    """Writes the keep-out entries at each erasure (`erase_user`) and lifts them at an opt-in
    (`on_opt_in`), in the list `suppressions`; `profiles` reads the erased user's meta record
    in the erasure's transaction (`states_and_meta`)."""

    def __init__(self, suppressions: Suppressions, profiles: ProfileStates):
        self.suppressions, self.profiles = suppressions, profiles
        self._table = suppressions.store.table("suppression")

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: list the addresses whose channel's marketing consent the user withdrew
        (read in `txn`, before the erasure deletes the record); 0: it removes nothing."""
        try:
            [(_, meta)] = self.profiles.states_and_meta([user_id], False, txn)
        except ProfileDamaged as err:  # unreadable: the erasure, the repair, goes on
            report_found(err.found, [user_id], ERASE)
            return 0
        if not meta:
            return 0
        attributes = meta.get("attributes") or {}
        for channel, kind in CHANNEL_KIND.items():
            entry = consent_entry(meta, channel, MARKETING)
            value = attributes.get(kind)
            if entry is None or entry.get("opted_in") or not value:
                continue
            self._keep_out(txn, kind, value, float(entry.get("timestamp", 0.0)))
        return 0

    def _keep_out(self, txn, kind: str, value: str, since: float) -> None:
        sup = self.suppressions
        try:
            found = sup.lookup_keys(kind, value)
        except NotAnAddress:
            return  # no address to keep out (an attribute stored before addresses were checked)
        held = [e for k in found if (raw := self._table.get(txn, k)) is not None
                for e in (decode(raw),)]
        if any(not e.purpose for e in held):
            return  # listed for every purpose already
        since = max([since, *(e.timestamp for e in held)])
        self._table.put(txn, found[0], encode(Suppression(kind, UNSUBSCRIBE, since, MARKETING)))

    def on_opt_in(self, txn, meta: Mapping, channel: str, timestamp: float,
                  source: str) -> int:
        """Lift the keep-out of the profile's address for `channel` after its marketing opt-in
        dated `timestamp` (in the same write transaction: `meta` as it wrote it), when it names
        its `source`, left the consent opted in and is dated no earlier than the withdrawal;
        entries removed."""
        if not source.strip():
            return 0  # no record of where the new consent came from: the unsubscribe stands
        entry = consent_entry(meta, channel, MARKETING)
        if entry is None or not entry.get("opted_in"):
            return 0  # a later opt-out stays current: nothing is lifted
        removed = 0
        for key in self.suppressions.address_keys(meta, channel):
            raw = self._table.get(txn, key)
            if raw is None:
                continue
            listed = decode(raw)
            if listed.purpose == MARKETING and timestamp >= listed.timestamp:
                removed += self._table.delete(txn, key)
        return removed
