"""Which user a phone number belongs to, for replies (STOP/START) to the SMS we sent.

Choice: an index of the numbers SMS were composed for, written by `Composer` when it composes
an SMS (one read, and a write only when the user's number is new or changed). A reply can only
come from a number we texted, so this covers every STOP we can receive, keeps the profiles
domain's write path unchanged, and needs no backfill of existing profiles. Numbers are stored
only as keyed hashes (HMAC-SHA256 under a key derived from the `unsubscribe` keyring, key id
in the digest: `kid.hex`); lookups try every key of the ring, so a rotation keeps old entries
usable. Erasing a profile drops its entry (`erase_user`, a `UserEraser`).

Numbers are compared in E.164 form, normalized as the suppression list does
(`server.contact.addresses.normalize`: punctuation and spaces dropped, a leading "00" read as
"+"); a number without its country code is not indexed (and matches no reply).
"""
from __future__ import annotations

import hashlib
import hmac

from ..config import DEFAULT_LIMITS
from ..contact.addresses import PHONE, normalize
from ..contact.errors import NotAnAddress
from ..security.secrets import Keyring
from ..store import Store
from ..store.keys import phone_key, phone_user_key, profile_meta_key

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
        """Index `phone` for `user_id` (replacing the user's previous number); True if written.
        Not for a user whose profile is gone (erased since their SMS was rendered: the erasure
        dropped their entry, and a new one would keep their id and lead a STOP to them), checked
        in the write transaction."""
        number = normalize_phone(phone)
        if number is None:
            return False
        digest = self._digests(number)[0]
        if self.store.get("meta", phone_user_key(user_id)) == digest.encode():
            return False  # the common case: known already, no write

        def fn(txn):
            if self._profiles.get(txn, profile_meta_key(user_id)) is None:
                return False  # erased meanwhile: the number was the profile's
            old = self._meta.get(txn, phone_user_key(user_id))
            if old is not None and old != digest.encode():
                self._drop(txn, user_id, old.decode())
            key = phone_key(digest)  # the user id sealed under their data key (store.sealed)
            self._meta.put(txn, key, self.store.seal_for_user(txn, user_id, key, user_id.encode()))
            self._meta.put(txn, phone_user_key(user_id), digest.encode())
            return True
        return self.store.write(fn)

    def lookup(self, phone: str) -> str | None:
        number = normalize_phone(phone)
        if number is None:
            return None
        with self.store.read() as txn:
            for digest in self._digests(number):
                key = phone_key(digest)
                user = self.store.open_for_user(txn, key, self._meta.get(txn, key))
                if user is not None:
                    return bytes(user).decode()
        return None

    def _drop(self, txn, user_id: str, digest: str) -> int:
        key = phone_key(digest)
        mine = self.store.open_for_user(txn, key, self._meta.get(txn, key))
        return int(mine is not None and bytes(mine) == user_id.encode() and self._meta.delete(txn, key))

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the user's index entries, inside the profile erasure's transaction."""
        old = self._meta.get(txn, phone_user_key(user_id))
        if old is None:
            return 0
        removed = self._drop(txn, user_id, bytes(old).decode())
        return removed + int(self._meta.delete(txn, phone_user_key(user_id)))
