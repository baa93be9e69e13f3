"""Tombstones of erased users, as the server keeps them and training receives them.

A tombstone is (kid, digest, erased_at): `digest` is the hex HMAC-SHA256 of the user id (UTF-8)
under key `kid` of the `erasure` keyring, `erased_at` unix seconds. The server writes one per
DeleteProfile (`server.profiles.tombstones`); `training export` writes the list to a CSV with
`TOMBSTONE_COLUMNS`, and training drops every row of a matching user from before `erased_at`
(later rows are the user's new, consented activity). Raw ids of erased users never travel: the
training side hashes its own rows with the same keyring (`contract.keyring`, `erasure`).
"""
from __future__ import annotations

import csv
import hmac
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["TOMBSTONE_COLUMNS", "digest", "erased_at", "keys_in_use", "read_tombstones",
           "write_tombstones"]

TOMBSTONE_COLUMNS = ("kid", "digest", "erased_at")


def digest(key: bytes, user_id: str) -> str:
    """Hex HMAC-SHA256 of `user_id` under `key` (what a tombstone holds instead of the id)."""
    return hmac.digest(key, user_id.encode("utf-8", "surrogatepass"), "sha256").hex()


def write_tombstones(path: Path, rows: Iterable[tuple[str, str, float]]) -> int:
    """Write (kid, digest, erased_at) rows; returns how many."""
    n = 0
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(TOMBSTONE_COLUMNS)
        for kid, dig, at in rows:
            out.writerow([kid, dig, repr(float(at))])
            n += 1
    return n


def read_tombstones(path: Path) -> dict[tuple[str, str], float]:
    """{(kid, digest): erased_at} from a file `write_tombstones` wrote."""
    with open(path, newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if tuple(header or ()) != TOMBSTONE_COLUMNS:
            raise ValueError(f"{path}: expected the header {','.join(TOMBSTONE_COLUMNS)}")
        return {(kid, dig): float(at) for kid, dig, at in rows}


def keys_in_use(tombstones: Mapping[tuple[str, str], float],
                keys: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The (kid, key) pairs of `keys` that some tombstone was written under."""
    kids = {kid for kid, _ in tombstones}
    return [(kid, key) for kid, key in keys if kid in kids]


def erased_at(user_ids: Sequence[str], tombstones: Mapping[tuple[str, str], float],
              keys: Sequence[tuple[str, bytes]], digest_of=digest) -> list[float | None]:
    """Each user's erasure time (None: never erased), hashing with every key of `keys` (pass
    `keys_in_use`'s: one HMAC per user and key); `digest_of` is `digest` or a cached copy of it."""
    if not tombstones:
        return [None] * len(user_ids)
    ring = keys
    out: list[float | None] = []
    for uid in user_ids:
        at = None
        for kid, key in ring:
            at = tombstones.get((kid, digest_of(key, uid)))
            if at is not None:
                break
        out.append(at)
    return out
