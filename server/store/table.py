"""A named table: the only way repositories read and write records.

Every operation takes the transaction that `Store.read()` / `Store.write(fn)` handed out; a
repository passes it along and never calls it. Methods are one LMDB call each (or one loop
over keys inside the call), so hot paths pay one Python frame per batch, not per key.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["Table"]


class Table:
    """The LMDB database of table `name`, with operations bound to a caller's transaction."""

    __slots__ = ("name", "db")

    def __init__(self, name: str, db):
        self.name = name
        self.db = db

    def __repr__(self) -> str:
        return f"Table({self.name!r})"

    # -- point operations ------------------------------------------------------------------
    def get(self, txn, key: bytes) -> bytes | None:
        return txn.get(key, db=self.db)

    def stored(self, txn, keys: Sequence[bytes]) -> list[bytes | None]:
        """The values as stored (sealed ones not opened: `open` each), one per key, in input
        order, None for a miss."""
        return Table.get_many(self, txn, keys)  # the plain read, in a SealedTable too

    def open(self, txn, key: bytes, value: bytes | None) -> bytes | None:
        """A value read by `stored`, opened (`SealedTable` unseals it; here: as it is)."""
        return value

    def open_many(self, txn, keys: list[bytes], values: list[bytes | None]) -> list[bytes | None]:
        """The values `stored` read for `keys`, opened together (`get_many` is `stored` then
        this; here: as they are)."""
        return values

    def get_many(self, txn, keys: Sequence[bytes]) -> list[bytes | None]:
        """One value per key, in input order, None for a miss."""
        if len(keys) <= 4:  # a cursor costs more than it saves on a few keys
            db = self.db
            return [txn.get(k, db=db) for k in keys]
        get = txn.cursor(db=self.db).get  # one lookup per key, no tuples (cheaper than getmulti)
        return [get(k) for k in keys]

    def present(self, txn, keys: Sequence[bytes]) -> list[tuple[bytes, bytes]]:
        """(key, value) of the keys that are stored (for membership tests of a batch)."""
        return txn.cursor(db=self.db).getmulti(keys)

    def put(self, txn, key: bytes, value: bytes) -> None:
        txn.put(key, value, db=self.db)

    def put_many(self, txn, items: Sequence[tuple[bytes, bytes]]) -> None:
        txn.cursor(db=self.db).putmulti(items)

    def put_new(self, txn, items: Sequence[tuple[bytes, bytes]]) -> int:
        """Put the (key, value) pairs whose key is not stored yet (others are left as they
        are); how many were put."""
        return txn.cursor(db=self.db).putmulti(items, overwrite=False)[1]

    def delete(self, txn, key: bytes) -> bool:
        return txn.delete(key, db=self.db)

    # -- ranges ------------------------------------------------------------------------------
    def scan_prefix(self, txn, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, in key order."""
        cur, out = txn.cursor(db=self.db), []
        if cur.set_range(prefix):
            for key, value in cur:
                if not key.startswith(prefix):
                    break
                out.append((key, value))
        return out

    def scan_prefix_last(self, txn, prefix: bytes, most: int, max_bytes: int = 0
                         ) -> list[tuple[bytes, bytes]]:
        """The last `most` (key, value) whose key starts with `prefix`, in reverse key order
        (a walk back from the prefix's end: the records before those are not read); with
        `max_bytes` > 0, only as many as hold at most that many stored value bytes (one at least)."""
        out, size = [], 0
        for key, value in _walk_back(txn.cursor(db=self.db), prefix):
            if len(out) == most:
                break
            size += len(value)
            if max_bytes and out and size > max_bytes:
                break
            out.append((key, value))
        return out

    def walk_back(self, txn, prefix: bytes, before: bytes | None = None
                  ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the keys starting with `prefix` (and less than `before`, if given),
        in reverse key order, one at a time, each value read at the cursor (the caller stops
        once it has what it needs: the records before are not read)."""
        return _walk_back(txn.cursor(db=self.db), prefix, before)

    def keys_back(self, txn, prefix: bytes, before: bytes | None = None) -> Iterator[bytes]:
        """The keys starting with `prefix` (and less than `before`, if given), in reverse key
        order, one at a time, values not read (the caller stops once it has what it needs)."""
        cur = txn.cursor(db=self.db)
        end = before if before is not None else _prefix_end(prefix)
        if not (cur.prev() if end is not None and cur.set_range(end) else cur.last()):
            return
        for key in cur.iterprev(values=False):
            if not key.startswith(prefix):
                return
            yield key

    def delete_prefix(self, txn, prefix: bytes, most: int = 0) -> int:
        """Delete every key starting with `prefix` (the first `most` only, if > 0; write
        transaction); returns how many."""
        cur, n = txn.cursor(db=self.db), 0
        if cur.set_range(prefix):
            while cur.key().startswith(prefix) and (not most or n < most):
                n += 1
                if not cur.delete():
                    break
        return n

    def items(self, txn, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """(key, value) from the first key >= `start` to the end, in key order."""
        cur = txn.cursor(db=self.db)
        if cur.set_range(start):
            yield from cur

    def count(self, txn) -> int:
        """How many records the table holds (in `txn`'s snapshot)."""
        return int(txn.stat(self.db)["entries"])

    def keys(self, txn) -> Iterator[bytes]:
        """Every key, in order."""
        return txn.cursor(db=self.db).iternext(values=False)

    def keys_from(self, txn, start: bytes) -> Iterator[bytes]:
        """Every key >= `start`, in order (values are not read)."""
        cur = txn.cursor(db=self.db)
        if cur.set_range(start):
            yield from cur.iternext(values=False)

    def first_key(self, txn, start: bytes) -> bytes | None:
        """The first key >= `start`, None past the end."""
        cur = txn.cursor(db=self.db)
        return cur.key() if cur.set_range(start) else None

    def holding(self, txn, prefixes: Sequence[bytes]) -> list[bool]:
        """Whether some key starts with each of `prefixes` (one cursor, one seek each; no
        value read)."""
        cur = txn.cursor(db=self.db)
        return [cur.set_range(p) and cur.key().startswith(p) for p in prefixes]


def _walk_back(cur, prefix: bytes, before: bytes | None = None
               ) -> Iterator[tuple[bytes, bytes]]:
    """`Table.walk_back` on the cursor `cur` (`scan_prefix_last`'s walk, not a sealed one)."""
    end = before if before is not None else _prefix_end(prefix)
    if not (cur.prev() if end is not None and cur.set_range(end) else cur.last()):
        return
    for key, value in cur.iterprev():
        if not key.startswith(prefix):
            return
        yield key, value


def _prefix_end(prefix: bytes) -> bytes | None:
    """The least key after every key starting with `prefix` (None: no such key, all 0xFF)."""
    stem = prefix.rstrip(b"\xff")
    return stem[:-1] + bytes([stem[-1] + 1]) if stem else None
