"""Which users an address belongs to: replies (STOP/START) to the SMS we sent, and one-click
unsubscribes from an email address several profiles share.

Choice: an index of the addresses profiles hold and messages were composed for, one per
channel (`AddressIndex`: SMS numbers, `PhoneIndex`; email addresses, `channel="email"`),
written by UpsertAttributes in its own transaction when it sets the address (`on_attributes`,
an `AttributeWatcher`), and by `Composer` when it composes a message (one read, and a write
only when the user's address is new or changed). Written by messages alone, it missed a
profile holding an address that was never messaged at it (a guest checkout beside the account
that was mailed): a STOP or a click from the address did not reach it, and the next campaign
went to the address through it. The profiles stored before that (their address set, never
messaged at it) are indexed once, by a walk of the stored profiles at the first start
(`on_stored`, `server.profiles.backfill`); the store keeps no user id beside a profile's
attributes (its keys hold a keyed hash), so a profile whose id the walk cannot find (in its
events) gets an *unnamed* entry, its token alone (`UNNAMED`): a STOP or click from the address
changes its consent by token (`unnamed`, `still_indexed`; `Profiles.set_unnamed_consents`),
and the entry is named at the user's next address change or message (readers list the unnamed
before the named, so an entry named in between is in one list or the other). A user has two pointers per
channel: the address last messaged at, and the one their attribute holds when it is another
(an attribute change kept only the new one: a STOP from the number texted matched nobody while
texts composed to it, deferred or dead letters, still went there). A pointer stored before
the held one named the address last set *or* messaged: the layout migration marks it
(`keys.ADDRESS_UNSURE`) and it is read as the held address (`_settle`), so an address only set
then is dropped at the next change, as it was (read as messaged it stayed indexed for good, and
a STOP from the number, perhaps recycled, closed the user's texts). A third pointer names the
address a text last actually went to (`went`, from `Delivery` as it hands a text over), when
neither of the others does: a message to a new address drops the old one, but a text composed
to it before (a deferred SendCampaign message, a dead letter's retry) indexes it again as it
goes, until a text goes to another address. Addresses are stored only as keyed
hashes (HMAC-SHA256 under a key derived from the `unsubscribe` keyring, key id in the digest:
`kid.hex`); lookups try every key of the ring, so a rotation keeps old entries usable. Erasing
a profile drops its entries (`erase_user`, a `UserEraser`).

Several profiles may share an address (a guest checkout and an account, a family phone or
inbox): each one messaged has its own entry under the address (`keys.address_entry_key`), and
a reply, or a click on any of their links (`sharing`), reaches them all. The SMS index held one
user a number before: a STOP opted out only the profile texted last, and the others' SMS kept
going to the person who said STOP. Entries written then (`keys.phone_key` alone) are still
read.

Addresses are compared as the suppression list normalizes them
(`server.contact.addresses.normalize`): numbers in E.164 form (punctuation and spaces dropped,
a leading "00" read as "+", a trunk prefix after the country code dropped where the country
has one; a number without its country code is not indexed, matches no reply, and no SMS goes
to it: `delivery.address_of`, a bad address), email addresses trimmed and lower-cased. A
number indexed with its trunk prefix by a Tailor before that rule ("+44 07700 900123" as
+4407700900123) is still found by a reply from the carrier's form (`_found_digests`); an
entry in the carrier's form is written at the user's next address change or text.
"""
from __future__ import annotations

import hashlib
import hmac

from ..contact.addresses import CHANNEL_KIND, EMAIL, PHONE, legacy_forms, normalize
from ..contact.errors import AddressShared, NotAnAddress
from ..limits import DEFAULT_LIMITS
from ..security.secrets import Keyring
from ..store import Store
from ..store.damaged import (
    ADDRESS_ENTRY,
    DAMAGED,
    ERASE,
    LOOKUP,
    UNREADABLE,
    report_damaged,
)
from ..store.keys import (
    ADDRESS_UNNAMED,
    ADDRESS_UNSURE,
    SEP,
    address_entry_key,
    address_key,
    address_token_entry_key,
    address_token_user_key,
    profile_meta_key,
)
from ..store.tokens import user_token

__all__ = ["normalize_phone", "normalize_email", "AddressIndex", "PhoneIndex", "UNNAMED"]

INDEXED_SPELLING = 3
"""The oldest `addresses.SPELLING` an index entry may have been normalized under (the index
came after the "(0)", bracket and NFC rules, before the bare trunk prefix rule): its
`legacy_forms` are those of every spelling since (5's: the 0 of "+39 (0)345...", a mobile)."""
_LABELS = {"sms": b"sms/phone", "email": b"email/address"}
"""The derivation label of each channel's hashing key (one key of the ring each)."""
UNNAMED = ADDRESS_UNNAMED
"""The value of an entry the walk of stored profiles wrote for a profile whose id it could not
find (`on_stored`): no user id is stored as `\x00` and 8 bytes, and no sealed one starts with
a NUL (a token does). Named (`_enter`) when the user's id next reaches the index."""


def _named(raw) -> bool:
    """Whether an entry's stored value names its user (neither absent nor `UNNAMED`)."""
    return raw is not None and bytes(raw) != UNNAMED


def normalize_phone(text: str) -> str | None:
    """The number in E.164 (`+digits`, `server.contact.addresses`); None if it is not one."""
    try:
        return normalize(PHONE, text or "", DEFAULT_LIMITS.address_chars)
    except NotAnAddress:
        return None


def normalize_email(text: str) -> str | None:
    """The address as the suppression list holds it (`server.contact.addresses`); None if it
    is not one."""
    try:
        return normalize(EMAIL, text or "", DEFAULT_LIMITS.address_chars)
    except NotAnAddress:
        return None


class AddressIndex:
    """Keyed-hash address -> user ids, of the profiles holding or messaged at an address on
    `channel` ("sms": phone numbers, "email": email addresses), in the `meta` table
    (`server.store.keys`).

    Writes are one `Store.write` transaction each (read-compare-write inside it, so two workers
    racing for one user agree); reads use one read snapshot.
    """

    def __init__(self, store: Store, ring: Keyring, channel: str = "sms",
                 most: int = DEFAULT_LIMITS.address_profiles):
        """`most`: the profiles UpsertAttributes may index at one address
        (`Limits.address_profiles`; `on_attributes`)."""
        self.store, self.channel, self.attribute = store, channel, CHANNEL_KIND[channel]
        self.most = most
        self._normalize = normalize_phone if self.attribute == PHONE else normalize_email
        self._meta, self._profiles = store.table("meta"), store.table("profiles")
        self._keys = [(kid, hmac.new(key, _LABELS[channel], hashlib.sha256).digest())
                      for kid, key in ring.keys]

    def _digests(self, address: str) -> list[str]:
        """The (normalized) address's digest under each key, the signing key's first."""
        raw = address.encode()
        return [f"{kid}.{hmac.new(key, raw, hashlib.sha256).hexdigest()}" for kid, key in self._keys]

    def _entry_key(self, digest: str, user_id: str) -> bytes:
        return address_entry_key(self.channel, digest, user_id)

    def _user_key(self, user_id: str) -> bytes:
        """The user's pointer: the digest of the address last messaged at (marked
        `ADDRESS_UNSURE` when stored before the held pointer: last set or messaged)."""
        return self._pointer_keys(user_token(user_id))[0]

    def _held_key(self, user_id: str) -> bytes:
        """The user's second pointer: the digest of the address their attribute holds, when it
        is not the one they were last messaged at."""
        return self._pointer_keys(user_token(user_id))[1]

    def _sent_key(self, user_id: str) -> bytes:
        """The user's third pointer: the digest of the address a text last actually went to
        (`went`: a deferred SendCampaign message, a dead letter's retry), when it is neither
        of the others."""
        return self._pointer_keys(user_token(user_id))[2]

    def _pointer_keys(self, token: bytes) -> tuple[bytes, bytes, bytes]:
        """The (messaged, held, sent) pointer keys of the user whose token is `token`."""
        key = address_token_user_key(self.channel, token)
        return key, key + SEP + b"held", key + SEP + b"sent"

    def _pointer(self, txn, key: bytes) -> str | None:
        """The digest a pointer names (its `ADDRESS_UNSURE` mark aside); None if none."""
        raw = self._meta.get(txn, key)
        return None if raw is None else bytes(raw).removeprefix(ADDRESS_UNSURE).decode()

    def _settle(self, txn, user_id: str) -> None:
        """Before a change in `txn`: a pointer stored before the held pointer (marked) becomes
        the held one (the address last set or messaged: held, as before, until the next
        change), or, when a held pointer is there already, its entry is dropped (unless held);
        either way the messaged pointer is gone until a message writes it."""
        raw = self._meta.get(txn, self._user_key(user_id))
        if raw is None or not bytes(raw).startswith(ADDRESS_UNSURE):
            return
        digest = self._pointer(txn, self._user_key(user_id))
        held = self._pointer(txn, self._held_key(user_id))
        if held is None:
            self._meta.put(txn, self._held_key(user_id), digest.encode())
        elif held != digest:
            self._drop(txn, user_id, digest)
        self._meta.delete(txn, self._user_key(user_id))

    def indexed(self, user_id: str, address: str) -> bool:
        """Whether `address` is indexed for `user_id` already, or cannot be (no valid address):
        nothing for `remember` to write. One read snapshot and a hash, a few µs: the composer
        asks on the event loop and goes to a thread only to write."""
        normal = self._normalize(address)
        if normal is None:
            return True
        digest = self._digests(normal)[0]
        with self.store.read() as txn:
            return self._meta.get(txn, self._user_key(user_id)) == digest.encode() and \
                _named(self._meta.get(txn, self._entry_key(digest, user_id)))

    def remember(self, user_id: str, address: str) -> bool:
        """Index `address` for `user_id` (replacing the user's previous one; other profiles
        with the same address keep theirs); True if written. Not for a user whose profile is
        gone (erased since their message was rendered: the erasure dropped their entry, and a
        new one would keep their id and lead a STOP to them), checked in the write
        transaction."""
        normal = self._normalize(address)
        if normal is None:
            return False
        digest = self._digests(normal)[0]
        if self.indexed(user_id, address):  # the common case: known already, no write
            return False

        def fn(txn):
            if self._profiles.get(txn, profile_meta_key(user_id)) is None:
                return False  # erased meanwhile: the address was the profile's
            return self._index(txn, user_id, digest)
        return self.store.write(fn)

    def went(self, user_id: str, address: str) -> bool:
        """A text is handed to the transport for `user_id` at `address` now: index it until a
        text goes to another address (the third pointer), so a STOP from it reaches them; texts
        composed to it (deferred, dead letters) go after a message to a new address dropped it.
        One read snapshot when nothing is to write; True if written."""
        normal = self._normalize(address)
        if normal is None:
            return False
        digest = self._digests(normal)[0]
        with self.store.read() as txn:
            if self._meta.get(txn, self._sent_key(user_id)) is None and \
                    _named(self._meta.get(txn, self._entry_key(digest, user_id))):
                return False  # indexed (messaged or held), and no other address went since

        def fn(txn):
            if self._profiles.get(txn, profile_meta_key(user_id)) is None:
                return False  # erased meanwhile
            self._settle(txn, user_id)
            named = (self._pointer(txn, self._user_key(user_id)),
                     self._pointer(txn, self._held_key(user_id)))
            sent = self._pointer(txn, self._sent_key(user_id))
            if sent is not None and sent != digest and sent not in named:
                self._drop(txn, user_id, sent)
            if digest in named:
                return bool(sent is not None and self._meta.delete(txn, self._sent_key(user_id)))
            self._meta.put(txn, self._sent_key(user_id), digest.encode())
            return self._enter(txn, user_id, digest) or sent != digest
        return self.store.write(fn)

    def on_attributes(self, txn, user_id: str, changed) -> int:
        """`AttributeWatcher`: index the address UpsertAttributes set (`changed` holds this
        channel's attribute, valid), in its transaction `txn`; 1 if written. A removed or
        invalid one leaves the entry: a STOP or click from the address still reaches them.
        The address the user was last messaged at stays indexed (`_hold`). `AddressShared`
        (the transaction, and the attributes with it, refused) when `most` other profiles are
        indexed at it already and the user is not (by any entry, the one-user one too)."""
        normal = self._normalize(changed.get(self.attribute) or "")
        if normal is None:
            return 0
        digests = self._digests(normal)
        if not any(self._meta.get(txn, self._entry_key(d, user_id)) is not None
                   or self._legacy_names(txn, d, user_id) for d in digests):
            self._check_room(txn, digests)
        return int(self._hold(txn, user_id, digests[0]))

    def _check_room(self, txn, digests: list[str]) -> None:
        """`AddressShared` when `most` profiles are indexed at the address (its `digests`
        under every key of the ring); at most `most` keys are read."""
        held = 0
        for digest in digests:
            prefix = address_key(self.channel, digest) + SEP
            for key in self._meta.keys_from(txn, prefix):
                if not bytes(key).startswith(prefix):
                    break
                held += 1
                if held >= self.most:
                    raise AddressShared(self.attribute, self.most)

    def _hold(self, txn, user_id: str, digest: str) -> bool:
        """Index `digest`, the address the user's attribute holds, in `txn`, replacing the one
        it held before but not the one they were last messaged at (the user's pointer): texts
        composed to it still go there (a deferred send, a dead letter's retry), and a STOP
        from it must reach them; it matched nobody once the attribute changed. A profile never
        messaged has the held pointer only (a STOP from a number it no longer holds, perhaps
        recycled, is not theirs). False when nothing is written."""
        self._settle(txn, user_id)
        messaged = self._pointer(txn, self._user_key(user_id))
        held = self._pointer(txn, self._held_key(user_id))
        if held is not None and held not in (digest, messaged, self._pointer(txn, self._sent_key(user_id))):
            self._drop(txn, user_id, held)
        if digest == messaged:
            wrote = int(held is not None and self._meta.delete(txn, self._held_key(user_id)))
            return bool(wrote) | self._enter(txn, user_id, digest)
        self._meta.put(txn, self._held_key(user_id), digest.encode())
        return self._enter(txn, user_id, digest) or held != digest

    def _enter(self, txn, user_id: str, digest: str) -> bool:
        """The user's entry under `digest` in `txn` (the user id sealed under their data key,
        `store.sealed`), an `UNNAMED` one named; False when it is there already."""
        entry = self._entry_key(digest, user_id)
        if _named(self._meta.get(txn, entry)):
            return False
        self._meta.put(txn, entry, self.store.seal_for_user(txn, user_id, entry,
                                                            user_id.encode()))
        return True

    def _index(self, txn, user_id: str, digest: str) -> bool:
        """Index `digest` for `user_id` in `txn`, the address they are messaged at, replacing
        the previous one (unless their attribute holds it); False when it is indexed already."""
        entry = self._entry_key(digest, user_id)
        self._settle(txn, user_id)
        old = self._pointer(txn, self._user_key(user_id))
        if old == digest and self._meta.get(txn, entry) is not None:
            return False
        held = self._pointer(txn, self._held_key(user_id))
        if old is not None and old not in (digest, held, self._pointer(txn, self._sent_key(user_id))):
            self._drop(txn, user_id, old)
        if held is not None and held in (digest, old):
            self._meta.delete(txn, self._held_key(user_id))  # the one messaged, or the old
        self._enter(txn, user_id, digest)
        self._meta.put(txn, self._user_key(user_id), digest.encode())
        return True

    def held_in(self, meta: dict | None) -> str:
        """The address a profile's meta record (None: none) holds in this channel's attribute
        ("" when none): the `address` of `sharing` and `unnamed`."""
        return ((meta or {}).get("attributes") or {}).get(self.attribute) or ""

    def found(self, address: str) -> frozenset[str]:
        """The digests `lookup` reads for `address` (empty when it is none): a profile holds
        an address (`held_in`) one of whose digests another's set holds, or a user's pointer
        (`messaged`) names."""
        normal = self._normalize(address)
        return frozenset(self._found_digests(normal)) if normal is not None else frozenset()

    def messaged(self, user_id: str) -> str | None:
        """The digest of the address `user_id` was last messaged at (their pointer; None:
        none)."""
        with self.store.read() as txn:
            return self._pointer(txn, self._user_key(user_id))

    def lookup(self, address: str) -> list[str]:
        """Every user indexed at `address`: messaged at it, or holding it (sorted; none: [])."""
        normal = self._normalize(address)
        if normal is None:
            return []
        with self.store.read() as txn:
            return self._users(txn, self._found_digests(normal))

    def _found_digests(self, normal: str) -> list[str]:
        """The digests `lookup` and `unnamed` read: the address's, and a phone number's in
        the form a Tailor before the bare trunk prefix rule indexed it under (+4407700900123
        for +447700900123: `addresses.legacy_forms`, a form no other number has today), and
        the one before the "(0)" rule followed the plans did (+39612345678 for "+39 (0)6 1234
        5678", Rome's +390612345678: `merged`), and the one of the rule that kept that 0 where
        both forms are numbers (+3903456789012 for the mobile +393456789012: an entry there
        may be the fixed line's, reached too, the safe side)."""
        digests = self._digests(normal)
        if self.attribute == PHONE:
            digests += [d for old in legacy_forms(PHONE, normal, INDEXED_SPELLING, merged=True)
                        for d in self._digests(old)]
        return digests

    def sharing(self, user_id: str, address: str = "") -> list[str]:
        """Every user a message went to at the address `user_id`'s last message went to (the
        user among them; sorted; [] when none is indexed for them). `address`: the user's
        address attribute now; when it is that address, its entries under every key of the
        ring are read too (profiles indexed under another key since a rotation)."""
        normal = self._normalize(address) if address else None
        with self.store.read() as txn:
            return self._users(txn, self._shared(txn, user_id, normal))

    def _shared(self, txn, user_id: str, normal: str | None) -> list[str]:
        """The digests `sharing` reads: the user's messaged pointer's ([] when none), or every
        key's digest of `normal` when the pointer is one of them."""
        pointer = self._pointer(txn, self._user_key(user_id))  # marked: as it was read
        if pointer is None:
            return []
        digests = self._digests(normal) if normal is not None else []
        return digests if pointer in digests else [pointer]

    def _users(self, txn, digests: list[str]) -> list[str]:
        """The users the entries under `digests` name. A damaged entry (`_named_in`) names
        nobody here: a profile's own is reached by the token its key holds (`unnamed`); an
        older one-user entry's profile is not reached (counted and logged)."""
        users, lost = set(), 0
        for digest in digests:
            key = address_key(self.channel, digest)
            for k, stored in [(key, self._meta.get(txn, key)),
                              *self._meta.scan_prefix(txn, key + SEP)]:
                user = self._named_in(txn, bytes(k), stored, len(key) + len(SEP))
                if user is DAMAGED:
                    lost += bytes(k) == key
                elif user is not None:
                    users.add(user)
        report_damaged(lost, ADDRESS_ENTRY, LOOKUP, "an older one-user entry: its profile not "
                       "reached (a STOP, a one-click opt-out at its address)")
        return sorted(users)

    def _named_in(self, txn, key: bytes, stored, at: int):
        """The user id an entry names (None: absent, `UNNAMED`, or its user erased); `DAMAGED`
        when it does not open or decode, or, a profile's own entry (its key holds the
        profile's token from `at`), names a user whose token is another (a changed id)."""
        if not _named(stored):
            return None
        try:
            user = self.store.open_for_user(txn, key, stored)
            user = None if user is None else bytes(user).decode()
        except UNREADABLE:
            return DAMAGED
        if user is not None and len(key) > at and user_token(user) != key[at:]:
            return DAMAGED
        return user

    # -- profiles stored before the index (unnamed entries) -------------------------------
    def on_stored(self, txn, token: bytes, user_id: str | None, attributes) -> int:
        """`AttributeWatcher`: index the address a profile stored before this index holds
        (`server.profiles.backfill`), in `txn`; 1 if written. With its `user_id`, as
        UpsertAttributes would (`_hold`); without, an `UNNAMED` entry and the held pointer,
        unless the profile is indexed at the address already (under any key of the ring) or
        holds another held address (left as it is: nothing indexed is dropped)."""
        normal = self._normalize(attributes.get(self.attribute) or "")
        if normal is None:
            return 0
        digests = self._digests(normal)
        if user_id is not None:
            return int(self._hold(txn, user_id, digests[0]))
        if any(self._meta.get(txn, address_token_entry_key(self.channel, d, token)) is not None
               for d in digests):
            return 0
        held = self._pointer_keys(token)[1]
        if self._meta.get(txn, held) is not None:
            return 0
        self._meta.put(txn, held, digests[0].encode())
        self._meta.put(txn, address_token_entry_key(self.channel, digests[0], token), UNNAMED)
        return 1

    def unnamed(self, address: str, user_id: str = "") -> list[bytes]:
        """The tokens of the unnamed profiles indexed at `address` (every key of the ring,
        as `lookup`), or, with `user_id`, at the address that user was last messaged at (as
        `sharing`, `address` their attribute now); and of the profiles whose own entry there
        is damaged (`_named_in`: its key holds their token): a STOP or an opt-out at the
        address reaches them as it reaches an unnamed one, rather than not at all."""
        normal = self._normalize(address) if address else None
        with self.store.read() as txn:
            digests = self._shared(txn, user_id, normal) if user_id else \
                self._found_digests(normal) if normal is not None else []
            tokens, damaged = set(), 0
            for digest in digests:
                prefix = address_key(self.channel, digest) + SEP
                for k, v in self._meta.scan_prefix(txn, prefix):
                    hit = bytes(v) != UNNAMED and \
                        self._named_in(txn, bytes(k), v, len(prefix)) is DAMAGED
                    damaged += hit
                    if hit or bytes(v) == UNNAMED:
                        tokens.add(bytes(k)[len(prefix):])
        report_damaged(damaged, ADDRESS_ENTRY, LOOKUP, "its profile reached by the token its "
                       "key holds (as an unnamed entry)")
        return sorted(tokens)

    def still_indexed(self, txn, token: bytes) -> bool:
        """Whether the profile of `token` still has an entry at one of its addresses, named
        or not, in `txn` (an erasure drops them with the profile: a consent change by token is
        made only while one is there). Named or not: an entry `unnamed` listed may be named
        before the write (the user set the address again), and the change must still reach
        it (`lookup`, read before, did not list it)."""
        for key in self._pointer_keys(token):
            digest = self._pointer(txn, key)
            if digest is not None and self._meta.get(
                    txn, address_token_entry_key(self.channel, digest, token)) is not None:
                return True
        return False

    def _drop(self, txn, user_id: str, digest: str, erasing: bool = False) -> int:
        """The user's entry under `digest`, and the older one-user entry if it names them
        (`erasing`: or is damaged)."""
        entry = self._entry_key(digest, user_id)
        removed = int(self._meta.get(txn, entry) is not None and self._meta.delete(txn, entry))
        return removed + int(self._legacy_names(txn, digest, user_id, erasing)
                             and self._meta.delete(txn, address_key(self.channel, digest)))

    def _legacy_names(self, txn, digest: str, user_id: str, erasing: bool = False) -> bool:
        """Whether the one-user entry under `digest` (written before entries per profile,
        still read) names `user_id`; `erasing` (DeleteProfile, under the erased user's
        pointer): also when it is damaged, as it may be theirs and nobody reads it. Damaged,
        it names nobody otherwise: not the user whose UpsertAttributes `_check_room` bounds."""
        key = address_key(self.channel, digest)
        mine = self._named_in(txn, key, self._meta.get(txn, key), len(key))
        if mine is DAMAGED and erasing:
            report_damaged(1, ADDRESS_ENTRY, ERASE, "deleted by an erasure")
            return True
        return mine == user_id

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's index entries, inside the profile erasure's transaction."""
        removed = 0
        for pointer in (self._sent_key(user_id), self._held_key(user_id), self._user_key(user_id)):
            old = self._pointer(txn, pointer)
            if old is not None:
                removed += self._drop(txn, user_id, old, erasing=True)
                removed += int(self._meta.delete(txn, pointer))
        return removed


class PhoneIndex(AddressIndex):
    """The index of the numbers SMS went to (`AddressIndex` of channel "sms")."""

    def __init__(self, store: Store, ring: Keyring, most: int = DEFAULT_LIMITS.address_profiles):
        super().__init__(store, ring, "sms", most)
