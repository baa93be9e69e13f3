"""Read, in a store copy nobody serves (a restore's staging copy), the records of users about to
be erased again, before their data keys go (`store.reerase`).

DeleteProfile reads some of a user's records before it deletes them: the campaign of each
pending decision (to lower that campaign's pending counter) and the state of each of their
unfinished send jobs' records (to count an unsettled recipient suppressed `erased`). With
encryption at rest those records are sealed under the user's data key: the wrapped half in
`datakeys`, the pad in the copy's `keyslots`, the wrapping key derived from the `encryption`
master keyring (`DataKeys`). Given that keyring, `Opener` opens them as the servers do; without
it (or for a record that does not open), it gives None and the caller says what it could not
correct. A store without encryption (no `sealed` stamp, no seal under way: `seal-progress`)
holds them as they are; in one whose seal was cut short (encryption turned on, its first start
stopped midway, then backed up), each record is read as the seal left it, told by where it
stopped (`rekey.seal_reached`, the seal's own order): sealed up to there, as it was after.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag

from .datakeys import DataKeys
from .errors import StoreKeyMissing
from .rekey import seal_reached, sealed_stamp
from .sealed import SealedTable, unseal
from .table import Table
from .tokens import TOKEN_CHARS

__all__ = ["Opener"]

_FAILED = (InvalidTag, StoreKeyMissing, ValueError)
"""A record that does not open: forged or misplaced, or wrapped under a key not given."""


class Opener:
    """Opens per-user records of a copy in its write transaction `txn` (call `close` after)."""

    def __init__(self, store_dir: Path, txn, tables: dict[str, Table],
                 master: Sequence[tuple[str, bytes]]):
        """`tables`: the copy's tables by name (`datakeys` and `meta` among them); `master`: the
        `encryption` keyring ((kid, key), newest first; empty: none given)."""
        # a seal cut short has sealed some records (the servers take the store as sealed):
        # which ones, its progress says
        self.sealed = sealed_stamp(tables["meta"], txn) is not None
        self._reached = seal_reached(tables["meta"], txn)
        self.keys = (DataKeys(store_dir, tables["datakeys"], tables["meta"], list(master),
                              sync=False) if self.sealed and master else None)
        self._tables = tables

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()

    def record(self, txn, table: str, key: bytes) -> bytes | None:
        """The value of per-user record `key` of `table` as the servers read it; None: absent,
        or sealed and not opened."""
        stored = self._tables[table].get(txn, key)
        if stored is None or not self._reached(table, key):
            return stored
        if self.keys is None:
            return None
        try:
            return SealedTable(table, self._tables[table].db, self.keys).open(txn, key, stored)
        except _FAILED:
            return None

    def for_user(self, txn, key: bytes, stored: bytes) -> bytes | None:
        """A record outside the per-user tables as `Store.seal_for_user` wrote it, opened (a
        plaintext JSON one as it is); None: sealed and not opened."""
        if stored.startswith(b"{"):
            return stored
        if self.keys is None:
            return None
        try:
            aead = self.keys.cipher(txn, stored[:TOKEN_CHARS])
            return None if aead is None else unseal(aead, b"aux\x00" + key, stored[TOKEN_CHARS:])
        except _FAILED:
            return None
