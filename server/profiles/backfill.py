"""Tell the attribute watchers of the profiles stored before them: one walk per store.

An attribute watcher (`server.interfaces.AttributeWatcher`: the address index of STOP replies
and one-click unsubscribes, `server.messages.phones`) is told of each UpsertAttributes as it
commits. Profiles stored before it was (their address set, never messaged at it) were in no
index: a STOP or an unsubscribe from the address missed them, and the next campaign went to
the address through them. The first start after an upgrade (and `python -m server migrate`)
walks the stored meta records and tells each watcher of each one (`on_stored`).

In write transactions of `CHUNK` profile records each, so a large store is never one long
transaction: `meta attributes-backfill` (`keys.ATTRIBUTES_BACKFILL`) holds the last meta key
done, written in each chunk's transaction. A process killed midway leaves whole chunks, and
the next start goes on after that key; two processes starting at once take turns (the key is
read in each chunk's transaction), and a watcher's `on_stored` writes nothing twice. Once
every record is walked the key says `done`, and each later start reads that one key.

The store keeps no user id beside a profile's attributes (its keys hold a keyed hash, its
token). A profile's events do (`tailor.v1.Event`): the walk reads its first event (one seek)
and hands the watcher the id when its token matches; a profile without events is handed None.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence

from ..interfaces import AttributeWatcher
from ..store import Store
from ..store.damaged import DAMAGED, read_each
from ..store.keys import ATTRIBUTES_BACKFILL, PROFILE_META_SUFFIX, SEP
from ..store.tokens import user_tokens
from .codec import decode_meta
from .damage import BACKFILL, META, report_count
from .records import event_user

__all__ = ["backfill_attributes", "backfill_chunk", "CHUNK", "DONE"]

logger = logging.getLogger("tailor.profiles")

CHUNK = 1000
"""Profile records (meta and feature state: two a profile) walked per write transaction."""
DONE = b"done"


def backfill_attributes(store: Store, watchers: Sequence[AttributeWatcher],
                        chunk: int = CHUNK) -> int:
    """Walk the stored profiles not walked yet, telling `watchers` (module doc), `chunk`
    profile records a transaction; the records they wrote (0: walked before)."""
    written, walked = 0, 0
    while True:
        wrote, seen, done = store.write(lambda txn: backfill_chunk(store, watchers, txn, chunk))
        written, walked = written + wrote, walked + seen
        if done:
            if walked:
                logger.info("profiles stored before their attribute watchers: %d records "
                            "walked, %d index records written", walked, written)
            return written


def backfill_chunk(store: Store, watchers: Sequence[AttributeWatcher], txn,
                   chunk: int = CHUNK) -> tuple[int, int, bool]:
    """One transaction `txn` of the walk, up to `chunk` profile records from where the last
    committed one stopped: (records written, profile records walked, done)."""
    meta = store.raw_table("meta")
    raw = meta.get(txn, ATTRIBUTES_BACKFILL)
    if raw is not None and bytes(raw) == DONE:
        return 0, 0, True  # (or another process finished it)
    start = bytes.fromhex(json.loads(bytes(raw))[0]) + b"\x00" if raw is not None else b""
    walked = [bytes(k) for k in itertools.islice(
        store.raw_table("profiles").keys_from(txn, start), chunk)]
    written = sum(_tell(store, watchers, txn, key) for key in walked
                  if key.endswith(PROFILE_META_SUFFIX))
    done = len(walked) < chunk
    meta.put(txn, ATTRIBUTES_BACKFILL, DONE if done else json.dumps([walked[-1].hex()]).encode())
    return written, len(walked), done


def _tell(store: Store, watchers: Sequence[AttributeWatcher], txn, key: bytes) -> int:
    """Tell `watchers` of the profile whose meta record is under `key`."""
    (meta,) = read_each(store.table("profiles"), txn, [key], decode_meta)
    if meta is DAMAGED:  # (its watchers' records wait for a restore; an erasure needs none)
        report_count(1, META, BACKFILL)
        return 0
    attributes = (meta.get("attributes") or {}) if meta else {}
    if not attributes:
        return 0
    token = key[:-len(PROFILE_META_SUFFIX)]
    user_id = _user_id(store, txn, token)
    return sum(w.on_stored(txn, token, user_id, attributes) for w in watchers)


def _user_id(store: Store, txn, token: bytes) -> str | None:
    """The id of the user whose token is `token`, from their first stored event; None when
    they have none (or it is not theirs: a token is a hash)."""
    events = store.table("events")
    key = next(iter(events.keys_from(txn, token + SEP)), None)
    if key is None or not bytes(key).startswith(token + SEP):
        return None
    raw = events.get(txn, bytes(key))
    user_id = event_user(bytes(raw)) if raw is not None else None
    return user_id if user_id and user_tokens([user_id])[0] == token else None
