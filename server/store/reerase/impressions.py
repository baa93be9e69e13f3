"""Re-erasure of impressions: they are keyed by a hash of the user id under the `user-id`
keyring (`<kid>␟<user hash>␟...`), not by the token, so a tombstone keeps its own keyed hash
of each such prefix (`impressions_found_by`); `impressions_found` walks the copy's impression
users to find them."""
from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import lmdb

from contract.erasure import digest

from .. import keys
from ..keys import SEP
from ..lmdb_store import open_env
from ..table import Table

__all__ = ["erase_impressions", "impressions_found", "impressions_found_by"]

_IMPRESSIONS = keys.SEP_CHAR + "impressions" + keys.SEP_CHAR
"""Prefix of what `impressions_found_by` hashes."""


def impressions_found_by(key: bytes, kid: str, user_hash: str) -> str:
    """What a tombstone keeps (`impressions_by`, one per key of the `user-id` keyring) of the
    part `<kid>␟<user hash>` of its user's impression keys (`impressions.writer.user_hash`):
    its hex HMAC-SHA256 under the tombstone's `erasure` key `key`, in a domain of its own
    (a token or an id never hashes to it). The impression keys already hold the user hash:
    without the `erasure` key this links none of them to the tombstone."""
    return digest(key, _IMPRESSIONS + kid + keys.SEP_CHAR + user_hash)


def impressions_found(store_dir: Path, wanted: Mapping[str, Collection[str]],
                      ring: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """The impression key prefixes `<kid>␟<user hash>␟` of the store copy under `store_dir`
    whose `impressions_found_by` under key `ekid` of `ring` is in `wanted[ekid]` (one seek and
    one HMAC per user and key id)."""
    by_kid = [(key, wanted[kid]) for kid, key in ring if wanted.get(kid)]
    if not by_kid:
        return []
    return [kid.encode() + SEP + user.encode() + SEP for kid, user in _impression_users(store_dir)
            if any(impressions_found_by(key, kid, user) in found for key, found in by_kid)]


def _impression_users(store_dir: Path) -> Iterator[tuple[str, str]]:
    """(kid, user hash) of every user with an impression in the copy, one at a time (a list
    of them all held ~200 bytes a user: 2 GB for ten million): one seek past each user's keys
    (the counters and buckets, whose keys start with the separator, skipped)."""
    env = open_env(store_dir, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            try:
                db = env.open_db(b"impressions", txn=txn, create=False)
            except lmdb.NotFoundError:
                return
            cur = txn.cursor(db=db)
            more = cur.set_range(SEP + b"\xff")
            while more:
                kid, user = bytes(cur.key()).split(SEP, 2)[:2]
                yield kid.decode(), user.decode()
                more = cur.set_range(kid + SEP + user + b"\x20")  # past `<kid>␟<user>␟...`
    finally:
        env.close()


def erase_impressions(txn, impressions: Table, prefixes: Sequence[bytes]) -> int:
    """Delete the impressions under each of `prefixes` (`impressions_found`); how many."""
    return sum(impressions.delete_prefix(txn, prefix) for prefix in prefixes)
