"""Reading a batch of per-user records of which one may be damaged: that record fails its own
user, never the batch.

A sealed record whose bytes changed on disk (or came back wrong from a restore) does not open
(`InvalidTag`: `kernels.aead` opens a batch in one call and refuses it whole); a plain one does
not decode (`ValueError`, `UnicodeDecodeError` among them). `read_each` reads and decodes the
batch whole first, as before, and only when that fails opens and decodes each record on its own,
giving `DAMAGED` in the place of each that fails: a damaged batch costs a second read, no other
batch anything.

A data key wrapped under a master key the keyring no longer holds (`StoreKeyMissing`) is not
damage of one record but of the keyring: it is not caught here.

`report_damaged` logs and counts damaged records that name no user it can read, or whose user
is not to be logged (dead letters, send records, impressions, address index entries:
`RECORDS`): one WARNING saying what became of them, never a user, id or address, and
`metrics.RECORDS_DAMAGED`. (Profile
records and contact histories have their own: `profiles.damage`, `contact.damage`.)
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from cryptography.exceptions import InvalidTag

from .table import Table

__all__ = ["DAMAGED", "UNREADABLE", "read_each", "decode_each", "plain_user", "report_damaged",
           "RECORDS",
           "USES", "DEAD_LETTER", "SEND", "IMPRESSION", "LIST", "RESUME", "EXPORT", "ERASE",
           "RETRY", "CANCEL", "LOG_EXPORT", "ADDRESS_ENTRY", "LOOKUP", "JOIN"]

T = TypeVar("T")
logger = logging.getLogger("tailor.store")

UNREADABLE = (InvalidTag, ValueError)
"""What a damaged record raises: it does not open (sealed) or does not decode."""


class _Damaged:
    """The type of `DAMAGED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DAMAGED"


DAMAGED = _Damaged()
"""`read_each`'s value for a record that does not open or decode."""


def read_each(table: Table, txn, keys: Sequence[bytes], decode: Callable[[bytes | None], T],
              stored: list[bytes | None] | None = None) -> list[T | _Damaged]:
    """`decode(value)` of each of `keys`' records in `table` (value None for a miss), in order,
    read together (`Table.get_many`), or opened from `stored`, their values as stored (read
    already: `Table.stored`, a raw walk); `DAMAGED` for each record that does not open or
    decode (`UNREADABLE`), the others as they are."""
    keys = keys if type(keys) is list else list(keys)
    try:
        values = table.get_many(txn, keys) if stored is None else \
            table.open_many(txn, keys, stored)
        return [decode(value) for value in values]
    except UNREADABLE:
        pass
    return _each(zip(keys, table.stored(txn, keys) if stored is None else stored),
                 lambda kv: decode(table.open(txn, *kv)))


def decode_each(values: Sequence, whole: Callable[[Sequence], list[T]],
                one: Callable[[object], T]) -> list[T | _Damaged]:
    """`whole(values)` (a batch decoded together, records already opened), or, when that fails
    (`UNREADABLE`), `one(value)` of each, `DAMAGED` for each that fails alone."""
    try:
        return whole(values)
    except UNREADABLE:
        return _each(values, one)


def _each(values, one: Callable[[object], T]) -> list[T | _Damaged]:
    out: list[T | _Damaged] = []
    for value in values:
        try:
            out.append(one(value))
        except UNREADABLE:
            out.append(DAMAGED)
    return out


_NAMED = re.compile(rb'"user":"((?:[^"\\]|\\.)+)"[,}]')


def plain_user(stored: bytes) -> str | None:
    """The user a plain record's text names (dead letters, send records: JSON written by
    `json.dumps`, ASCII, with a `"user":"<id>"` member), read without decoding the rest: one
    damaged elsewhere (its message) still names its user; None when its text names nobody
    (that member's name hit, or its id's text: no longer ASCII, no longer a JSON string, or no
    longer one member: its closing quote hit)."""
    m = _NAMED.search(stored)
    if m is None or not m.group(1).isascii():
        return None
    try:
        return json.loads(b'"' + m.group(1) + b'"')
    except ValueError:
        return None


DEAD_LETTER, SEND, IMPRESSION, ADDRESS_ENTRY = "dead_letter", "send", "impression", "address_entry"
"""`report_damaged`'s records: a dead letter, a send recipient's record, an impression, an
entry of an address index (`messages.phones`)."""
RECORDS = {DEAD_LETTER: "dead letter(s)", SEND: "send record(s)", IMPRESSION: "impression(s)",
           ADDRESS_ENTRY: "address index entry(ies)"}
LIST, RESUME, EXPORT, ERASE, RETRY, CANCEL, LOG_EXPORT, LOOKUP, JOIN = (
    "list", "resume", "export", "erase", "retry", "cancel", "log_export", "lookup", "join")
USES = (LIST, RESUME, EXPORT, ERASE, RETRY, CANCEL, LOG_EXPORT, LOOKUP, JOIN)
"""`report_damaged`'s uses (`metrics.RECORDS_DAMAGED`'s `use` label)."""


def report_damaged(n: int, record: str, use: str, what: str) -> None:
    """Log and count `n` damaged `record`s (`RECORDS`) found where read for `use` (`USES`),
    `what` saying what became of them."""
    if not n:
        return
    from .. import metrics  # here: the writer processes import this module, never the metrics
    metrics.RECORDS_DAMAGED.labels(record, use).inc(n)
    logger.warning("%d %s damaged (do not open or decode): %s; docs/operations.md, \"When "
                   "things go wrong\"", n, RECORDS[record], what)
