"""The global suppression list: addresses never to contact, by keyed hash, with why and when.

Record `suppression  <kid>␟<hmac hex>` (`keys.suppression_key`) -> JSON {kind, reason,
timestamp[, purpose]}: no user id and no plaintext address, so erasing a profile leaves it
(the one record the law lets a sender keep to honour a "never again"). `purpose` is written
only by the erasure's keep-out (`contact.keepout`: "marketing", an unsubscribe kept past the
profile, which blocks marketing only and which the address's next opt-in lifts); an entry
without it (every entry a bounce, a complaint or AddSuppression writes, and all those stored
before it existed) blocks every purpose.

An address is of a kind (`addresses.KINDS`: an email address, a phone number, a push token),
each the profile attribute of its channel's messages (`addresses.CHANNEL_KIND`: email, sms,
push). Three ways in: the RPCs (`add`, `remove`: idempotent, `check`), tracked bounce and
complaint events (`on_events`, an `EventListener`: the address is the user's `email` / `phone`
profile attribute at that moment), and the decision path (`suppressed_channels`: one LMDB get per key
of the `suppression` keyring, in the caller's read snapshot or a new one; the keys of the
latest `AddressHasher.CACHED` attribute values are kept, so a user met again costs no
normalization and no hash). One way out about a user: `export_user` (a `UserExporter`),
whether the user's own addresses are listed.
"""
from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..interfaces import ProfileMetas
from ..limits import DEFAULT_LIMITS, Limits
from ..security.secrets import Keyring
from ..security.userref import user_ref
from ..store import Store, keys, outbox
from ..store.outbox import Batch
from ..validation import check_known, check_time
from .addresses import CHANNEL_KIND, EMAIL, KINDS, PHONE, SPELLING, AddressHasher, legacy_forms, normalize
from .consent import MARKETING
from .errors import NotAnAddress
from .logging import logger

__all__ = ["REASONS", "SUPPRESSING_EVENTS", "SUPPRESSED_ADDRESS", "Suppression", "Suppressions",
           "decode", "encode", "listed_for"]

REASONS = ("bounce", "complaint", "manual", "unsubscribe")
SUPPRESSED_ADDRESS = "suppressed_address"
LEGACY_SPELLING = 1
"""`keys.SUPPRESSION_SPELLING` of a list that held entries when first stamped: some may be hashed
as given; a list stamped `addresses.SPELLING` holds entries as `addresses.normalize` makes them
now, one stamped in between those of its rules then (`addresses.legacy_forms`)."""
SUPPRESSING_EVENTS: Mapping[str, tuple[str, str]] = {
    "email_bounce": (EMAIL, "bounce"), "email_complaint": (EMAIL, "complaint"),
    "sms_bounce": (PHONE, "bounce")}
"""Tracked event type -> (kind of the user's address it suppresses, reason)."""


@dataclass(frozen=True)
class Suppression:
    kind: str
    reason: str
    timestamp: float
    purpose: str = ""
    """The one purpose it blocks ("marketing": the erasure's keep-out, `contact.keepout`);
    "": every purpose."""

    def blocks(self, purpose: str) -> bool:
        """Whether it blocks a message of `purpose` (marketing or transactional)."""
        return not self.purpose or self.purpose == (purpose or MARKETING)


class Suppressions:
    """The suppression list over `store`, hashing with `ring` (the `suppression` keyring);
    `profiles` reads users' attributes for bounce and complaint events."""

    def __init__(self, store: Store, ring: Keyring, profiles: ProfileMetas | None = None,
                 limits: Limits = DEFAULT_LIMITS):
        self.store, self.hasher, self.profiles, self.limits = store, AddressHasher(ring), profiles, limits
        self._table = store.table("suppression")
        self.spelling = self._spelling()
        self.legacy = self.spelling < SPELLING
        """Whether entries may be hashed in a form given before the current normalization."""
        self._address_keys = functools.lru_cache(maxsize=AddressHasher.CACHED)(self._keys_of_value)

    def _spelling(self) -> int:
        """The list's `keys.SUPPRESSION_SPELLING`. Unstamped, it is stamped once: an empty
        list holds only entries of today's rules from now on; entries written before the stamp
        (by a Tailor without it) may be listed in the form given (`LEGACY_SPELLING`)."""
        stamp = self.store.get("meta", keys.SUPPRESSION_SPELLING)
        if stamp is None and not self.store.readonly:
            stamp = self.store.write(self._stamp)
        return int(stamp or LEGACY_SPELLING)

    def _stamp(self, txn) -> bytes:
        meta = self.store.table("meta")
        stamp = meta.get(txn, keys.SUPPRESSION_SPELLING)
        if stamp is None:
            empty = self._table.first_key(txn, b"") is None
            stamp = str(SPELLING if empty else LEGACY_SPELLING).encode()
            meta.put(txn, keys.SUPPRESSION_SPELLING, stamp)
        return stamp

    def _keys(self, kind: str, address: str) -> list[bytes]:
        """The entry's key under each key of the ring, signing key first."""
        return [keys.suppression_key(kid, digest) for kid, digest in self.hasher.digests(kind, address)]

    def lookup_keys(self, kind: str, written: str) -> list[bytes]:
        """The keys an entry for the address `written` may be under: those of its normalized
        form, then, on a list that may hold entries of the older rules (`legacy`), those of
        each form it may have been listed under then (`addresses.legacy_forms`)."""
        address = self._normalize(kind, written)
        found = self._keys(kind, address)
        if self.legacy:
            found += [k for old in legacy_forms(kind, address, self.spelling, merged=True)
                      for k in self._keys(kind, old)]
        return found

    def forget_erased(self, erased=None) -> None:
        """Empty the caches of hashes by address, whose keys are users' email addresses, phone
        numbers and push tokens (a `Tombstones` watcher: an erased user's must not stay in memory)."""
        self._address_keys.cache_clear()
        self.hasher.digests.cache_clear()

    # -- the RPCs ----------------------------------------------------------------------------
    async def add(self, kind: str, address: str, reason: str = "", timestamp: float = 0.0) -> Suppression:
        """List `address` (refused unless it normalizes as `kind`); a listed one gets the new
        reason and time."""
        reason = check_known("reason", reason or "manual", REASONS)
        ts = check_time("timestamp", timestamp, self.limits.latest_timestamp) or time.time()
        entry = Suppression(kind, reason, ts)
        key = self._keys(kind, self._normalize(kind, address))[0]
        await asyncio.to_thread(self.store.put, "suppression", key, encode(entry))
        return entry

    async def remove(self, kind: str, address: str) -> tuple[bool, bool]:
        """Take `address` off the list (under every key of the ring): (whether this call took
        it off, whether it is off once done). The second is what a retry must read: a call
        whose answer was lost took it off, and its retry finds it not on (False, True)."""
        found = self.lookup_keys(kind, address)
        table = self._table

        def fn(txn):
            removed = [table.delete(txn, k) for k in found]
            return any(removed), all(table.get(txn, k) is None for k in found)
        return await asyncio.to_thread(self.store.write, fn)

    async def check(self, kind: str, address: str) -> Suppression | None:
        return self._find(self.lookup_keys(kind, address))

    def _keys_of_value(self, kind: str, value: str) -> tuple[bytes, ...]:
        """The keys of a profile attribute's address; () when it is no valid address (then
        there is nothing to suppress)."""
        try:
            return tuple(self.lookup_keys(kind, value))
        except NotAnAddress:
            return ()

    async def holds(self, user_id: str, kind: str, address: str) -> bool:
        """Whether `user_id`'s profile holds `address` (normalized as the list holds it) as
        its `kind` attribute now: the address a bounce or complaint event of theirs would list
        (`on_events`). False when it holds another, none, or there is no profile; True when
        no profiles are read (then the events list nothing)."""
        if self.profiles is None:
            return True
        [meta] = await asyncio.to_thread(self.profiles.metas, [user_id])
        value = (meta or {}).get("attributes", {}).get(kind)
        try:
            return bool(value) and self._normalize(kind, value) == self._normalize(kind, address)
        except NotAnAddress:
            return False

    async def list_held(self, user_id: str, kind: str, reason: str, timestamp: float) -> bool:
        """List the address `user_id`'s profile holds now as its `kind` attribute, as their
        bounce or complaint event would have (`on_events`), for a report whose event was
        refused (`messages.reports.record_report`: an id refused since); whether one was."""
        if self.profiles is None:
            return False
        [meta] = await asyncio.to_thread(self.profiles.metas, [user_id])
        value = (meta or {}).get("attributes", {}).get(kind)
        try:
            await self.add(kind, value or "", reason, timestamp)
        except NotAnAddress:
            return False
        return True

    def _normalize(self, kind: str, address: str) -> str:
        return normalize(kind, address, self.limits.address_chars_of(kind), f"address.{kind}")

    def _find(self, found: Sequence[bytes], txn=None, purpose: str = "") -> Suppression | None:
        """The first entry under `found` (that blocks `purpose`, when given)."""
        if txn is None:
            with self.store.read() as txn:
                return self._find(found, txn, purpose)
        for key in found:
            raw = self._table.get(txn, key)
            if raw is not None and (entry := decode(raw)).blocks(purpose or entry.purpose):
                return entry
        return None

    # -- the decision path -------------------------------------------------------------------
    def reason(self, meta: Mapping | None, channel: str, txn=None,
               purpose: str = MARKETING) -> str | None:
        """"suppressed_address" when the user's address for `channel` (profile attribute
        `email` for email, `phone` for sms, `push_token` for push) is listed for messages of
        `purpose`, else None (also for channels without an address, and for attributes that
        are no valid address).
        `txn`: the caller's read snapshot, if it has one."""
        found = self.address_keys(meta, channel)
        return SUPPRESSED_ADDRESS if found and self._find(found, txn, purpose) else None

    def address_keys(self, meta: Mapping | None, channel: str) -> tuple[bytes, ...]:
        """The list's keys of the user's address for `channel` (() for none)."""
        kind = CHANNEL_KIND.get(channel)
        value = (meta.get("attributes") or {}).get(kind) if kind and meta else None
        return self._address_keys(kind, value) if value else ()

    def covers(self, channel: str) -> bool:
        return channel in CHANNEL_KIND

    def suppressed_channels(self, meta: Mapping | None, channels: Sequence[str],
                            txn=None, purpose: str = MARKETING) -> frozenset[str]:
        """The `channels` whose address in `meta` is listed for messages of `purpose`
        (`SuppressedAddresses`; a keep-out entry blocks marketing only), in the caller's read
        snapshot `txn` or a new one (none when there is no address)."""
        found = [(c, ks) for c in channels if (ks := self.address_keys(meta, c))]
        if not found:
            return frozenset()  # no address to look up: no read
        if txn is None:
            with self.store.read() as txn:
                return self.suppressed_channels(meta, channels, txn, purpose)
        return frozenset(c for c, ks in found if self._find(ks, txn, purpose))

    # -- the access export (UserExporter) ----------------------------------------------------
    def export_user(self, user_id: str) -> dict[str, object]:
        """{"suppression": [{kind, reason, timestamp[, purpose]}]}: the user's own addresses
        (profile attributes `email`, `phone`, `push_token`: `addresses.KINDS`) that are on the
        list; never the address itself (the profile section shows it) nor anything about other
        users' entries."""
        meta = self.profiles.metas([user_id])[0] if self.profiles is not None else None
        attributes = (meta or {}).get("attributes", {})
        listed = []
        with self.store.read() as txn:
            for kind in KINDS:
                try:
                    found = self.lookup_keys(kind, attributes.get(kind) or "")
                except NotAnAddress:
                    continue
                entry = self._find(found, txn)
                if entry is not None:
                    listed.append({"kind": entry.kind, "reason": entry.reason,
                                   "timestamp": entry.timestamp,
                                   **({"purpose": entry.purpose} if entry.purpose else {})})
        return {"suppression": listed}

    # -- tracked events (EventListener) ------------------------------------------------------
    outbox = b"suppression"
    """The tag of this listener's outbox entries (`server.profiles.outbox`)."""

    def follows(self, events: Sequence) -> list[int]:
        """`EventListener`: the bounce and complaint events (their batch gets an outbox entry)."""
        if self.profiles is None:
            return []
        return [i for i, ev in enumerate(events) if ev.type in SUPPRESSING_EVENTS]

    async def on_events(self, events: Sequence, batch: Batch) -> None:
        """List the address of the user of each bounce and complaint event (those `follows`
        picks), and clear the batch's outbox entry, in one write (the events it no longer names
        were listed already)."""
        if self.profiles is not None:
            await asyncio.to_thread(self._list_from_events, list(zip(events, batch.event_keys)),
                                    batch.entry)

    def _list_from_events(self, hits: Sequence[tuple], entry: bytes) -> None:
        """`hits`: (event, its events key) each, of the batch whose outbox entry is `entry`. A
        user whose meta record is damaged (`metas_or_none`: reported) is passed over as one
        without an address, the others listed."""
        # here, not at the top: the writer processes import this module, never the metrics
        from ..profiles.damage import SUPPRESS, metas_or_none
        metas = metas_or_none(functools.partial(self.profiles.metas, use=SUPPRESS),
                              [ev.user_id for ev, _ in hits])
        items = []  # (events key, (suppression key, value))
        for (ev, key), meta in zip(hits, metas):
            kind, reason = SUPPRESSING_EVENTS[ev.type]
            value = (meta or {}).get("attributes", {}).get(kind)
            try:
                address = self._normalize(kind, value or "")
            except NotAnAddress:
                logger.warning("%s event of %s: no valid %s attribute to suppress", ev.type,
                               user_ref(ev.user_id), kind)
                continue
            items.append((key, (self._keys(kind, address)[0],
                                encode(Suppression(kind, reason, ev.timestamp)))))
        table, box = self._table, self.store.table("outbox")

        def fn(txn):
            listed = [put for _, put in outbox.claim_named(txn, box, entry, items)]
            if listed:
                table.put_many(txn, listed)
        self.store.write(fn)


def encode(entry: Suppression) -> bytes:
    """The stored value: `purpose` only when set, so an entry of every purpose is stored as
    before it existed (a Tailor without it reads it the same)."""
    d = {"kind": entry.kind, "reason": entry.reason, "timestamp": entry.timestamp}
    if entry.purpose:
        d["purpose"] = entry.purpose
    return json.dumps(d, sort_keys=True).encode()


def decode(raw: bytes) -> Suppression:
    """An entry as stored; one without `purpose` (every entry stored before it) blocks every
    purpose."""
    d = json.loads(raw)
    return Suppression(d["kind"], d["reason"], d["timestamp"], d.get("purpose", ""))


def listed_for(raw: bytes | None, purpose: str) -> bool:
    """Whether the stored entry `raw` (None: none) blocks a message of `purpose`."""
    return raw is not None and decode(raw).blocks(purpose)
