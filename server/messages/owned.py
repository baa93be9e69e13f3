"""Find one user's records among the sealed JSON records of every user (dead letters, send
recipients) without opening the others'.

DeleteProfile runs each `UserEraser` inside its write transaction, which holds the store's write
lock: every writer waits for it. The messages domain keeps one record per recipient of an
unfinished SendCampaign job and one per dead letter, each sealed under its user's data key
(`Store.seal_for_user`), and had to open them all to find the user's: a job of 100,000
recipients held every writer 1.7 s per erasure. A sealed record starts with its user's keyed
token (`Store.sealed_for`), which says whose it is without decrypting anything; without
encryption the record is its JSON, whose top-level `"user":<id>` member (as `json.dumps`
writes it, ASCII) appears unescaped in no string value, so a record without that text is not
the user's, and only those with it are decoded. An erasure also deletes a plain record that
does not decode and whose text names nobody (`stray`): it may be the erased user's, their id hit.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TypeVar

from ..store import Store
from ..store.damaged import DAMAGED, UNREADABLE, plain_user
from ..store.table import Table

__all__ = ["owned", "stray", "STRAY", "read_sealed", "with_messages", "masked_messages",
           "MESSAGE_SECTIONS"]

T = TypeVar("T")

MESSAGE_SECTIONS = ("dead_letters", "messages")
"""The access export's sections whose entries carry a message and its address."""


class _Stray:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STRAY"


STRAY = _Stray()
"""`owned`'s value, while erasing, for a record that is nobody's it can read: plain, it does
not decode and its text does not name the user (`stray`)."""


def owned(store: Store, txn, table: Table, prefix: bytes, user_id: str,
          decode: Callable[[bytes, bytes], T], erasing: bool = False):
    """(key, `decode(key, opened record)`) of each of the user's records under `prefix` of
    `table`, in key order, one at a time, opening no other user's: theirs by the token a sealed
    one starts with (`Store.sealed_for`) or the `"user":<id>` member a plain one holds; `DAMAGED`
    for one of theirs that does not open or decode (`read_sealed`: an erasure deletes it with
    the others, an access export refuses: `MessageRecordDamaged`). `erasing`: also (key,
    `STRAY`) for each plain record that is not theirs by its text and does not decode
    (`stray`)."""
    field = _user_field(user_id)
    for key, stored in table.items(txn, prefix):
        if not key.startswith(prefix):
            return
        key = bytes(key)
        sealed = store.sealed_for(stored, user_id)
        if sealed is None and field not in stored:
            if erasing and stray(stored, functools.partial(decode, key)):
                yield key, STRAY
            continue
        if sealed is False:
            continue
        got = read_sealed(store, txn, key, stored, functools.partial(decode, key))
        if got is DAMAGED or got is not None and got.user == user_id:
            yield key, got


def stray(stored: bytes, decode: Callable[[bytes], object]) -> bool:
    """Whether a plain record does not decode. A record whose user-id text was hit (on disk,
    by a bad restore) no longer names its user, and nothing in its key does (a letter's id, a
    job's id and place): an erasure cannot tell whose it is, nor can any reader serve it, and
    it may hold the erased user's id, address and message, so an erasure deletes it (the
    others stay). Each record is written as ASCII JSON with a `"user":"` member (`json.dumps`);
    only one not of that shape (`_whole`: a cheap test, as the erasure holds the write lock
    and meets every record) is looked at further: one whose text still names a user
    (`store.damaged.plain_user`: damaged elsewhere, its message) is that user's, and stays,
    as does one that decodes. A change that leaves the record of that shape and decoding (one
    id character into another) is a record of another id: not seen here."""
    if _whole(stored) or plain_user(stored) is not None:
        return False
    return read_sealed(None, None, b"", stored, decode) is DAMAGED


def _whole(stored: bytes) -> bool:
    """Whether a plain record has the shape every record is written in."""
    return stored.isascii() and stored.startswith(b'{"') and stored.endswith(b"}") and \
        b'"user":"' in stored


def read_sealed(store: Store | None, txn, key: bytes, stored: bytes, decode: Callable[[bytes], T]
                ) -> T | None | object:
    """`decode` of a record sealed for its user (`Store.seal_for_user`) as opened (`store`
    None: a plain one, as it is); None: its user was erased (their key shredded); `DAMAGED`: it
    does not open or decode (`store.damaged`; or its JSON is not of the record's shape, a
    member's name hit), for the caller to leave out and count rather than fail every record."""
    try:
        raw = stored if store is None else store.open_for_user(txn, key, stored)
        return None if raw is None else decode(raw)
    except (*UNREADABLE, KeyError, TypeError):  # (the last two: JSON of another shape)
        return DAMAGED


def _user_field(user_id: str) -> bytes:
    return b'"user":' + json.dumps(user_id).encode()


def with_messages(entries: list[dict], texts: list[str | None], most: int) -> list[dict]:
    """`entries` (an access export's, in order), each given its message (`texts`: the bytes
    as stored, latin-1 text; None: it has none) as `message`, read as the text they are
    (`_readable`), while their JSON (as the document writes it) adds up to at most `most`
    bytes; past that, `message` None and `message_bytes` (its size): the document stays one
    gRPC message."""
    used = 0
    for entry, stored in zip(entries, texts):
        text = None if stored is None else _readable(stored)
        size = 0 if text is None else _size(text)
        used += size
        entry["message"] = text
        if used > most:
            _withhold(entry, size)
    return entries


def masked_messages(sections: dict, mask: Callable[[str], str]) -> None:
    """The entries of an access export's `MESSAGE_SECTIONS`, in place, for a caller without
    `pii-reader` (a role the auth config widened to ExportProfile, which gets the profile's
    PII attributes masked): each address masked (`mask`), each message (rendered with those
    attributes, addressed to that address) withheld, listed by its `message_bytes` (before,
    such a caller read 'Hi Zelda' and the address in full beside the masked `Z***`)."""
    for name in MESSAGE_SECTIONS:
        for entry in sections.get(name, ()):
            if entry.get("to"):
                entry["to"] = mask(entry["to"])
            if entry.get("message") is not None:
                _withhold(entry, _size(entry["message"]))


def _size(text: str) -> int:
    """Bytes of `text` as the document writes it (JSON, UTF-8 as is)."""
    return len(json.dumps(text, ensure_ascii=False).encode())


def _withhold(entry: dict, size: int) -> None:
    """List `entry`'s message by its size only."""
    entry["message"], entry["message_bytes"] = None, size


def _readable(stored: str) -> str:
    """A message's bytes, kept as latin-1 text (`Recipient.message`, `DeadLetter.data`), as the
    text they are: a webhook body is UTF-8 JSON (`Zoë` read as latin-1 is `ZoÃ«`), an email
    ASCII; bytes that are not UTF-8 are replaced, not dropped."""
    return stored.encode("latin-1").decode("utf-8", errors="replace")
