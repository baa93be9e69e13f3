"""Outbox entries (`keys.outbox_key`): what one ingestion batch's listener still has to apply.

The ingestion writes one entry per (batch, listener with an effect for some of its new events)
in the transaction that stores the events: key `<ms>␟<batch id>␟<listener tag>`, value the
replays tried so far and the events keys of the batch's events that listener acts on
(`value`). The listener deletes the entry in the one write transaction that applies the
batch's effects (`claim`), and applies only the events the entry still names, only if it was
still there: so an effect is applied once, whoever applies it (the worker that committed the
batch, or a replay after a crash: `server.profiles.outbox`).

The value holds events keys as the events table keys them (`keys.event_key`: the user's and the
event's keyed hashes, `tokens`, and the time), nothing else: no id, no address, no payload, so
it needs no per-user sealing. Erasure takes the user's keys out of every entry (`forget`).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = ["Batch", "batch_id", "value", "parsed", "claim", "claim_named", "keep", "forget",
           "names_user"]

_NL = b"\n"  # events keys are hex, digits and the 0x1F separator: never a newline


class Batch(NamedTuple):
    """A listener's share of one ingestion batch: its outbox entry's key and the events keys of
    the events handed with it (aligned with them)."""

    entry: bytes
    event_keys: list[bytes]


def batch_id() -> bytes:
    """A new batch's id (with the time in its key: unique among every worker's batches)."""
    return os.urandom(8).hex().encode()


def value(event_keys: Sequence[bytes], tries: int = 0) -> bytes:
    """An entry's value: the replays tried, then one events key a line."""
    return _NL.join([b"%d" % tries, *event_keys])


def parsed(stored: bytes) -> tuple[int, list[bytes]]:
    """(replays tried, events keys) of an entry's value."""
    tries, *event_keys = bytes(stored).split(_NL)
    return int(tries), event_keys


def claim(txn, table, entry: bytes) -> frozenset[bytes] | None:
    """Delete `entry` in the caller's write transaction `txn`; the events keys it still named
    (their effects are the caller's to apply, in that same transaction), None if it was gone
    (applied already, or every event it named was erased)."""
    stored = table.get(txn, entry)
    if stored is None:
        return None
    table.delete(txn, entry)
    return frozenset(parsed(stored)[1])


def claim_named(txn, table, entry: bytes, items: Iterable[tuple], at: int = 0) -> list[tuple]:
    """`claim` `entry` in `txn` and keep the `items` of the events it still names (each item a
    tuple with its event's events key at index `at`): those whose effects the caller applies,
    in that same transaction; none if the entry was gone."""
    named = claim(txn, table, entry)
    return [item for item in items if item[at] in named] if named else []


def keep(txn, table, entry: bytes, event_keys: Sequence[bytes]) -> None:
    """After a `claim` in `txn`: put `entry` back naming only `event_keys` (those left to apply
    on a later try: the impression join's unmatched events), its tries back to 0."""
    table.put(txn, entry, value(event_keys))


def names_user(stored: bytes, user_prefix: bytes) -> bool:
    """Whether a stored entry names an event under `user_prefix` (one user's events keys)."""
    return _NL + user_prefix in stored


def forget(txn, table, user_prefix: bytes) -> int:
    """Take the events keys under `user_prefix` (one user's) out of every entry, deleting an
    entry left with none (erasure, in its transaction: the entries are few, those of batches in
    flight or of a listener failing); how many entries changed."""
    changed = []
    for key, stored in table.items(txn):
        if names_user(stored, user_prefix):
            tries, event_keys = parsed(stored)
            changed.append((bytes(key), tries, [k for k in event_keys
                                                if not k.startswith(user_prefix)]))
    for key, tries, left in changed:
        if left:
            table.put(txn, key, value(left, tries))
        else:
            table.delete(txn, key)
    return len(changed)
