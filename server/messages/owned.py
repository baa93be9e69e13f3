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
the user's, and only those with it are decoded.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

from ..store import Store
from ..store.damaged import DAMAGED, UNREADABLE

__all__ = ["opened_if_users", "read_sealed", "with_messages", "masked_messages",
           "MESSAGE_SECTIONS"]

T = TypeVar("T")

MESSAGE_SECTIONS = ("dead_letters", "messages")
"""The access export's sections whose entries carry a message and its address."""


def opened_if_users(store: Store, txn, key: bytes, stored: bytes, user_id: str):
    """The opened record (JSON with a top-level `user`) if it is `user_id`'s; None otherwise
    (or its user erased), opening no other user's record; `DAMAGED`: one that is theirs by its
    token (sealed) or its text (plain) and does not open or decode (`read_sealed`), for an
    erasure to delete with the others and an access export to refuse (`MessageRecordDamaged`)."""
    sealed = store.sealed_for(stored, user_id)
    if sealed is False or sealed is None and _user_field(user_id) not in stored:
        return None
    got = read_sealed(store, txn, key, stored, _with_user)
    if got is None or got is DAMAGED:
        return got
    return got[0] if got[1] == user_id else None


def _with_user(raw: bytes) -> tuple[bytes, str]:
    """(an opened record, the `user` it names)."""
    return raw, json.loads(bytes(raw))["user"]


def read_sealed(store: Store, txn, key: bytes, stored: bytes, decode: Callable[[bytes], T]
                ) -> T | None | object:
    """`decode` of a record sealed for its user (`Store.seal_for_user`) as opened; None: its
    user was erased (their key shredded); `DAMAGED`: it does not open or decode
    (`store.damaged`), for the caller to leave out and count rather than fail every record."""
    try:
        raw = store.open_for_user(txn, key, stored)
        return None if raw is None else decode(raw)
    except UNREADABLE:
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
