"""Which user a phone number belongs to, for replies (STOP/START) to the SMS we sent.

Choice: an index of the numbers SMS were composed for, written by `Composer` when it composes
an SMS (one read, and a write only when the user's number is new or changed). A reply can only
come from a number we texted, so this covers every STOP we can receive, keeps the profiles
domain's write path unchanged, and needs no backfill of existing profiles. Numbers are stored
only as keyed hashes (HMAC-SHA256 under a key derived from the `unsubscribe` keyring, key id
in the digest: `kid.hex`); lookups try every key of the ring, so a rotation keeps old entries
usable. Erasing a profile drops its entry (`erase_user`, a `UserEraser`).

Several profiles may share a number (a guest checkout and an account, a family phone): each
texted one has its own entry under the number (`keys.phone_entry_key`), and a reply reaches
them all (`lookup`). The index held one user a number before: a STOP opted out only the profile
texted last, and the others' SMS kept going to the person who said STOP. Entries written then
(`keys.phone_key` alone) are still read.

Numbers are compared in E.164 form, normalized as the suppression list does
(`server.contact.addresses.normalize`: punctuation and spaces dropped, a leading "00" read as
"+"); a number without its country code is not indexed (and matches no reply), and no SMS
goes to it (`delivery.address_of`: a bad address).
"""
from __future__ import annotations

import hashlib
import hmac

from ..config import DEFAULT_LIMITS
from ..contact.addresses import PHONE, normalize
from ..contact.errors import NotAnAddress
from ..security.secrets import Keyring
from ..store import Store
from ..store.keys import SEP, phone_entry_key, phone_key, phone_user_key, profile_meta_key

__all__ = ["normalize_phone", "PhoneIndex"]

def normalize_phone(text: str) -> str | None:
    """The number in E.164 (`+digits`, `server.contact.addresses`); None if it is not one."""
    try:
        return normalize(PHONE, text or "", DEFAULT_LIMITS.address_chars)
    except NotAnAddress:
        return None


class PhoneIndex:
    """Keyed-hash phone number -> user id, in the `meta` table (`server.store.keys`).

    Writes are one `Store.write` transaction each (read-compare-write inside it, so two workers
    racing for one user agree); reads use one read snapshot.
    """

    def __init__(self, store: Store, ring: Keyring):
        self.store = store
        self._meta, self._profiles = store.table("meta"), store.table("profiles")
        self._keys = [(kid, hmac.new(key, b"sms/phone", hashlib.sha256).digest())
                      for kid, key in ring.keys]

    def _digests(self, phone: str) -> list[str]:
        """The number's digest under each key, the signing key's first."""
        raw = phone.encode()
        return [f"{kid}.{hmac.new(key, raw, hashlib.sha256).hexdigest()}" for kid, key in self._keys]

    def remember(self, user_id: str, phone: str) -> bool:
        """Index `phone` for `user_id` (replacing the user's previous number; other profiles
        with the same number keep theirs); True if written. Not for a user whose profile is
        gone (erased since their SMS was rendered: the erasure dropped their entry, and a new
        one would keep their id and lead a STOP to them), checked in the write transaction."""
        number = normalize_phone(phone)
        if number is None:
            return False
        digest = self._digests(number)[0]
        entry = phone_entry_key(digest, user_id)
        with self.store.read() as txn:  # the common case: known already, no write
            if self._meta.get(txn, phone_user_key(user_id)) == digest.encode() and \
                    self._meta.get(txn, entry) is not None:
                return False

        def fn(txn):
            if self._profiles.get(txn, profile_meta_key(user_id)) is None:
                return False  # erased meanwhile: the number was the profile's
            old = self._meta.get(txn, phone_user_key(user_id))
            if old is not None and old != digest.encode():
                self._drop(txn, user_id, old.decode())
            # the user id sealed under their data key (store.sealed)
            self._meta.put(txn, entry, self.store.seal_for_user(txn, user_id, entry,
                                                                user_id.encode()))
            self._meta.put(txn, phone_user_key(user_id), digest.encode())
            return True
        return self.store.write(fn)

    def lookup(self, phone: str) -> list[str]:
        """Every user the number was texted for (sorted; none: [])."""
        number = normalize_phone(phone)
        if number is None:
            return []
        users = set()
        with self.store.read() as txn:
            for digest in self._digests(number):
                key = phone_key(digest)
                for k, stored in [(key, self._meta.get(txn, key)),
                                  *self._meta.scan_prefix(txn, key + SEP)]:
                    user = self.store.open_for_user(txn, bytes(k), stored)
                    if user is not None:
                        users.add(bytes(user).decode())
        return sorted(users)

    def _drop(self, txn, user_id: str, digest: str) -> int:
        """The user's entry under `digest`, and the older one-user entry if it names them."""
        entry = phone_entry_key(digest, user_id)
        removed = int(self._meta.get(txn, entry) is not None and self._meta.delete(txn, entry))
        key = phone_key(digest)
        mine = self.store.open_for_user(txn, key, self._meta.get(txn, key))
        return removed + int(mine is not None and bytes(mine) == user_id.encode()
                             and self._meta.delete(txn, key))

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's index entries, inside the profile erasure's transaction."""
        old = self._meta.get(txn, phone_user_key(user_id))
        if old is None:
            return 0
        removed = self._drop(txn, user_id, bytes(old).decode())
        return removed + int(self._meta.delete(txn, phone_user_key(user_id)))
