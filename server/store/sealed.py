"""`SealedTable`: a `Table` whose per-user records are AES-GCM ciphertext under the user's data
key (`datakeys`), opened and sealed at the table boundary, so repositories read and write plain
bytes as before.

A record is per-user when its key starts with a user token and the separator
(`keys.user_prefix`); other keys of the table (the decision index, `␟d␟...`) stay plain.
Sealed value: ``version (1 byte) | nonce (12) | ciphertext and tag``; the associated data is
``"tailor" | version | table | key``, so a value moved to another key, another table or
read as another layout fails to open. A record whose user has no data key in the snapshot
(shredded) reads as absent.
"""
from __future__ import annotations

import os

from kernels import aead

from .datakeys import DataKeys
from .keys import SEP
from .table import Table
from .tokens import TOKEN_CHARS

__all__ = ["SealedTable", "SEALED_VERSION", "is_user_key", "seal", "unseal"]

SEALED_VERSION = 1
_HEAD = bytes([SEALED_VERSION])
_NONCE = 12
_BODY = 1 + _NONCE
"""Where the ciphertext starts."""
_SEP = SEP[0]
ITEMS_CHUNK = 256
"""Records `SealedTable.items` reads before opening them together."""


def seal(aead, aad: bytes, value: bytes, nonce: bytes | None = None) -> bytes:
    """`version | nonce | AES-GCM(value)`; `nonce`: 12 fresh random bytes (drawn here if None)."""
    nonce = nonce or os.urandom(_NONCE)
    return _HEAD + nonce + aead.encrypt(nonce, value, aad)


def unseal(aead, aad: bytes, sealed: bytes) -> bytes:
    return aead.decrypt(sealed[1:_BODY], sealed[_BODY:], aad)


def is_user_key(key: bytes) -> bool:
    return len(key) > TOKEN_CHARS and key[TOKEN_CHARS] == _SEP


class SealedTable(Table):
    """`Table` with per-user values sealed; point reads, scans and writes as in `Table`."""

    __slots__ = ("datakeys", "_aad")

    def __init__(self, name: str, db, datakeys: DataKeys):
        super().__init__(name, db)
        self.datakeys = datakeys
        self._aad = b"tailor" + _HEAD + name.encode() + b"\x00"

    def seal(self, txn, key: bytes, value: bytes, nonce: bytes | None = None) -> bytes:
        if not is_user_key(key):
            return value
        aead = self.datakeys.cipher(txn, key[:TOKEN_CHARS], create=True)
        return seal(aead, self._aad + key, value, nonce)

    def open(self, txn, key: bytes, value: bytes | None) -> bytes | None:
        if value is None or not is_user_key(key):
            return value
        aead = self.datakeys.cipher(txn, key[:TOKEN_CHARS])
        if aead is None:
            return None
        return unseal(aead, self._aad + key, value)

    # -- Table, sealed ---------------------------------------------------------------------------
    def get(self, txn, key: bytes) -> bytes | None:
        return self.open(txn, key, txn.get(key, db=self.db))

    def get_many(self, txn, keys):
        """As `Table.get_many`; the users' keys looked up together, then every value opened in
        one kernel call (`kernels.aead`: tokens, ciphers and records a list each, no Python loop
        per record)."""
        keys = keys if type(keys) is list else list(keys)
        return self.open_many(txn, keys, super().get_many(txn, keys))

    def open_many(self, txn, keys: list[bytes], values: list[bytes | None]) -> list[bytes | None]:
        """The values `stored` read for `keys` (a list), opened in one kernel call."""
        tokens = aead.user_tokens(keys, TOKEN_CHARS, _SEP, values)
        return aead.open_records(self.datakeys.ciphers(txn, tokens, plain=aead.PLAIN), keys,
                                 values, _BODY, self._aad)

    def put(self, txn, key: bytes, value: bytes) -> None:
        txn.put(key, self.seal(txn, key, value), db=self.db)

    def put_many(self, txn, items) -> None:
        """As `Table.put_many`: the users' keys looked up (or made) together, one draw of
        random nonces for the batch, every value sealed in one kernel call."""
        keys, values = [k for k, _ in items], [v for _, v in items]
        tokens = aead.user_tokens(keys, TOKEN_CHARS, _SEP)
        sealed = aead.seal_records(self.datakeys.ciphers(txn, tokens, True), keys, values, _HEAD,
                                   self._aad, os.urandom(_NONCE * len(keys)))
        super().put_many(txn, list(zip(keys, sealed)))

    def scan_prefix(self, txn, prefix: bytes):
        return self._opened(txn, super().scan_prefix(txn, prefix))

    def scan_prefix_last(self, txn, prefix: bytes, most: int, max_bytes: int = 0):
        return self._opened(txn, super().scan_prefix_last(txn, prefix, most, max_bytes))

    def walk_back(self, txn, prefix: bytes, before: bytes | None = None):
        """As `Table.walk_back`, each value opened (a shredded user's left out)."""
        for key, value in super().walk_back(txn, prefix, before):
            opened = self.open(txn, bytes(key), value)
            if opened is not None:
                yield key, opened

    def items(self, txn, start: bytes = b""):
        """As `Table.items`, opened `ITEMS_CHUNK` records at a time (`_opened`)."""
        pairs = []
        for pair in super().items(txn, start):
            pairs.append(pair)
            if len(pairs) == ITEMS_CHUNK:
                yield from self._opened(txn, pairs)
                pairs = []
        yield from self._opened(txn, pairs)

    def present(self, txn, keys):
        return self._opened(txn, super().present(txn, keys))

    def _opened(self, txn, pairs):
        """(key, opened value) of `pairs` whose value opens (as `get_many`: one kernel call),
        in order; a shredded user's records are left out."""
        if not pairs:
            return []
        keys = [k for k, _ in pairs]
        values = aead.open_records(
            self.datakeys.ciphers(txn, aead.user_tokens(keys, TOKEN_CHARS, _SEP), plain=aead.PLAIN),
            keys, [v for _, v in pairs], _BODY, self._aad)
        return [(k, v) for k, v in zip(keys, values) if v is not None]
