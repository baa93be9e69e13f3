"""What finds, in a restored store copy, the record-key tokens of the users a carried
tombstone names: the keyed hash a tombstone keeps of its user's token (`found_by`), the check
value of the `erasure` key it was written under (`key_check`), and the walk of the copy's
tokens that hashes each once (`tokens_found`)."""
from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import lmdb

from contract.erasure import digest

from .. import keys
from ..keys import USER_TABLES
from ..lmdb_store import open_env
from ..tokens import TOKEN_CHARS

__all__ = ["found_by", "key_check", "tokens_found"]

_DOMAIN = keys.SEP_CHAR + "token" + keys.SEP_CHAR
"""Prefix of what `found_by` hashes: no user id holds the separator, so the hash of a token
never equals a tombstone's hash of an id under the same key."""

def found_by(key: bytes, token: bytes) -> str:
    """What a tombstone keeps of its user's record-key `token`: its hex HMAC-SHA256 under the
    tombstone's `erasure` key `key` (`Tombstones.erase_user`)."""
    return digest(key, _DOMAIN + token.decode())


def key_check(key: bytes) -> bytes:
    """A value that tells the `erasure` key `key` without revealing it (a token is hex
    digits: no token's `found_by` is hashed from this)."""
    return digest(key, _DOMAIN + "key check")[:16].encode()


def tokens_found(store_dir: Path, wanted: Mapping[str, Collection[str]],
                 ring: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The record-key tokens of the store copy under `store_dir` whose `found_by` under key
    `kid` of `ring` is in `wanted[kid]` (key ids `ring` lacks find nothing)."""
    by_kid = [(kid, key, wanted[kid]) for kid, key in ring if wanted.get(kid)]
    return [token for token in _stored_tokens(store_dir)
            if any(found_by(key, token) in digests for _, key, digests in by_kid)]


def _stored_tokens(store_dir: Path) -> Iterator[bytes]:
    """Every user token keying a record of the copy (`keys.USER_TABLES`, `datakeys`), in
    order, each once, one at a time: one seek past each user's keys per table (the index
    keys, which start with the separator, below the tokens' hex digits, skipped), the tables'
    walks merged (a set of them all held ~120 bytes a user: 1.2 GB for ten million)."""
    env = open_env(store_dir, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            walks = []
            for name in (*USER_TABLES, "datakeys"):
                try:
                    db = env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                walks.append(_tokens_of(txn.cursor(db=db)))
            last = None
            for token in heapq.merge(*walks):
                if token != last:
                    yield token
                    last = token
    finally:
        env.close()


def _tokens_of(cur) -> Iterator[bytes]:
    """The tokens one table's keys start with, in order (cursor `cur`)."""
    more = cur.set_range(b"0")
    while more:
        token = bytes(cur.key()[:TOKEN_CHARS])
        yield token
        more = cur.set_range(token + b"\x20")  # past `<token>` and `<token>␟...`
