"""Re-erasure of the records keyed by a user's token: the user tables, their events' dedupe
keys, their decisions' index and pending-window entries (and the pending counters those
count, `pending`), their events' keys in outbox entries, their pointers and entries in the
address indexes, and their data key (`shred`)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from .. import keys, outbox
from ..keys import SEP, USER_TABLES
from ..opener import Opener
from ..table import Table
from .pending import due, uncount
from .shred import shred

__all__ = ["erase_users"]

_POINTERS = (b"", SEP + b"held", SEP + b"sent")
"""Suffixes of a user's pointers into an address index (messaged, held, sent: `AddressIndex`)."""


def erase_users(txn, t: dict[str, Table], prefixes: list[bytes], opened: Opener,
                named: Callable[[str], bool] | None) -> tuple[Counter, list[int]]:
    """Delete the records of the users whose keys start with `prefixes` (`<token>␟`) and
    what points at them; the records removed by table (with `pending.uncount`'s counts), and
    the pad slots of their data keys, to zero after the commit (`shred.zero`)."""
    doomed = {key for prefix in prefixes for key in _prefixed(txn, t["decisions"], prefix)}
    due_entries = due(txn, t["decisions"], doomed)
    removed = uncount(txn, t["bandit"], [pkey for _, pkey in due_entries], opened)
    removed["decisions"] += sum(int(t["decisions"].delete(txn, k)) for k, _ in due_entries)
    for prefix in prefixes:
        for key in _prefixed(txn, t["events"], prefix):
            removed["dedupe"] += t["dedupe"].delete(txn, keys.dedupe_key_of_event(key))
        for key in _prefixed(txn, t["decisions"], prefix):
            removed["decisions"] += t["decisions"].delete(
                txn, keys.decision_index_key(key[len(prefix):].decode()))
        for name in USER_TABLES:
            removed[name] += t[name].delete_prefix(txn, prefix)
        removed["outbox"] += outbox.forget(txn, t["outbox"], prefix)
        removed["meta"] += _addresses(txn, t["meta"], prefix[:-1], named)
    slots = shred(txn, t["datakeys"], t["meta"], [p[:-1] for p in prefixes])
    removed["datakeys"] += len(slots)
    return +removed, slots


def _prefixed(txn, table: Table, prefix: bytes) -> list[bytes]:
    """The keys of `table` that start with `prefix`."""
    out = []
    for key, _ in table.items(txn, prefix):
        if not key.startswith(prefix):
            break
        out.append(bytes(key))
    return out


def _addresses(txn, meta: Table, token: bytes, named: Callable[[str], bool] | None) -> int:
    """The user's pointers into each address index and the entries they point at, and an
    older one-user entry there that names them (`AddressIndex._legacy_names`, as DeleteProfile
    finds it): sealed for them, it starts with their token; without encryption at rest it is
    their id, which `named` accepts."""
    removed = 0
    for channel in keys.ADDRESS_PREFIXES:
        base = keys.address_token_user_key(channel, token)
        for pointer in (base + s for s in _POINTERS):
            raw = meta.get(txn, pointer)
            if raw is None:
                continue
            digest = bytes(raw).removeprefix(keys.ADDRESS_UNSURE).decode()
            removed += meta.delete(txn, keys.address_token_entry_key(channel, digest, token))
            legacy = keys.address_key(channel, digest)
            if _names(bytes(meta.get(txn, legacy) or b""), token, named):
                removed += meta.delete(txn, legacy)
            removed += meta.delete(txn, pointer)
    return removed


def _names(entry: bytes, token: bytes, named: Callable[[str], bool] | None) -> bool:
    """Whether an older one-user address entry is the user's (token `token`): sealed for them,
    or their id as it is (a store without encryption at rest; an unnamed entry,
    `keys.ADDRESS_UNNAMED`, is nobody's)."""
    if entry.startswith(token):
        return True
    try:
        return bool(entry) and named is not None and named(entry.decode())
    except UnicodeDecodeError:  # sealed for another user
        return False
