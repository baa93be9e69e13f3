"""Bring a store to key version 2 (keyed-hash ids) and, with encryption on, seal its records.

Run by `Store.__init__` before the record-layout migrations (`migrate`), only when a stamp says
it is needed (every later open: one read):

- `key-version` absent with records present (a data dir from before tokens): every per-user
  key `<user id>␟...` becomes `<user token>␟...`, event ids in events and dedupe keys become
  event tokens, and the values that hold such keys (dedupe entries, the decision index and
  pending-window entries) follow. The phone index's user entry is re-keyed too. This one runs
  in write transactions of `REKEY_CHUNK` records each, so its memory stays bounded whatever
  the store's size: per table, the old records move under their new keys to a scratch table
  (`rekey-scratch`, so no new key is visited again), then back. `meta rekey-progress` says which
  table and half is under way, written in each chunk's transaction: a process killed midway
  leaves whole chunks, and the next open goes on from there (the records still in the table
  are the old ones, those in the scratch table the new ones). The last chunk stamps
  `key-version` and drops the scratch table.
- `sealed` absent with encryption on: every per-user value of `keys.USER_TABLES` is sealed under
  its user's (new) data key (`sealed.SealedTable`), and so is the user id in each phone index
  entry (not an unnamed one, `keys.ADDRESS_UNNAMED`: it names none), and each send recipient and
  dead letter (`Store.seal_for_user`), in write transactions of `REKEY_CHUNK` records. A sealed
  record keeps its key, so the records are sealed in key order, table by table, and `meta
  seal-progress` (written in each chunk's transaction) names the part under way and the last key
  sealed there: a process killed midway leaves whole chunks, and the next open goes on after
  that key (a plaintext and a sealed record cannot be told apart, so where it stopped is
  recorded, not guessed). The last chunk stamps `sealed` and deletes the progress. A store with
  a seal under way is an encrypted one: opened without encryption, it is refused as a sealed one
  is. A copy of one (a backup) that nothing opens as a store tells its sealed records from the
  others by the same mark and the same order of parts (`seal_reached`: a restore's `opener`).

The `store-id` key's check value is stamped at the first open with encryption configured, and
a store stamped under another key is refused (its records would not be found). An encrypted
store opened without encryption is refused too, and so is one stamped with a later
key version than `KEY_VERSION` (a newer Tailor's: re-keying it would hash its tokens again).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

from ..errors import FailedPrecondition
from . import keys as K
from .errors import StoreEncrypted, StoreKeyMismatch
from .migrate import holds_records
from .sealed import is_user_key
from .table import Table
from .tokens import event_token, key_check, user_token

__all__ = ["open_format", "format_first", "refuse_newer_key_version", "sealed_stamp",
           "seal_reached", "KEY_VERSION", "KEY_VERSION_KEY", "SEALED_KEY", "KEY_CHECK_KEY"]

logger = logging.getLogger("tailor.store")

KEY_VERSION = 2
KEY_VERSION_KEY = b"key-version"
SEALED_KEY = b"sealed"
KEY_CHECK_KEY = b"store-id-check"
REKEY_PROGRESS_KEY = b"rekey-progress"
"""meta: JSON [step, half] of a re-key under way (`_rekey_chunk`); absent before and after."""
SEAL_PROGRESS_KEY = b"seal-progress"
"""meta: JSON [part, last key sealed in it (hex) or null] of a seal under way (`_seal_chunk`);
absent before and after."""
REKEY_CHUNK = 10_000
"""Records re-keyed (or sealed) per write transaction."""
_SCRATCH = b"rekey-scratch"


def open_format(store, readonly: bool) -> None:
    """Check and, if needed (and writable), migrate the store's key version and sealing."""
    meta = store.raw_table("meta")
    with store.read() as txn:
        version, sealed = meta.get(txn, KEY_VERSION_KEY), meta.get(txn, SEALED_KEY)
        check, some_sealed = meta.get(txn, KEY_CHECK_KEY), sealed_stamp(meta, txn)
        empty = _empty(store, txn)
    encrypt = store.datakeys is not None
    refuse_newer_key_version(version)
    _refuse_other_keys(store, some_sealed, check)
    wanted = (version == b"%d" % KEY_VERSION and (sealed is not None or not encrypt)
              and (check is not None or store.crypto is None))
    if wanted:
        return
    if readonly:
        if empty:
            return
        raise FailedPrecondition(f"store at {store.path} needs its keys migrated (version 2, "
                                 "encryption); open it writable once")
    if version != b"%d" % KEY_VERSION:
        n = _rekey(store)
        if n:
            logger.info("re-keyed %d records to key version %d (keyed hashes of ids)", n,
                        KEY_VERSION)
    if encrypt and sealed is None:
        n = _seal(store)
        logger.info("encrypted %d per-user records at rest", n)
    store.write(lambda txn: _migrate(store, txn))


def format_first(store) -> bool:
    """Records keyed by raw ids (key version 1), or plaintext records to seal: re-key and seal
    them before any layout step (the steps read records through the sealed tables). A store
    sealed or keyed under other keys than `store`'s is refused here, before any step: a layout
    step run on records it cannot read would rewrite them for good."""
    meta = store.raw_table("meta")
    with store.read() as txn:
        sealed, version = sealed_stamp(meta, txn), meta.get(txn, KEY_VERSION_KEY)
        refuse_newer_key_version(version)
        _refuse_other_keys(store, sealed, meta.get(txn, KEY_CHECK_KEY))
        pending = (version is None
                   or (store.datakeys is not None and meta.get(txn, SEALED_KEY) is None))
        return pending and not _empty(store, txn)


def refuse_newer_key_version(version: bytes | None) -> None:
    """A store a newer Tailor moved to a later key version is refused: re-keyed here, its
    tokens would be hashed again as if they were ids (every record lost)."""
    if version is not None and version != b"%d" % KEY_VERSION:
        raise FailedPrecondition(
            f"the store was written by a newer Tailor; key version "
            f"{version.decode(errors='replace')[:16]} unknown here (known {KEY_VERSION})")


def _refuse_other_keys(store, sealed: bytes | None, check: bytes | None) -> None:
    """StoreKeyMismatch for a store keyed under another `store-id` key, StoreEncrypted for a
    sealed one opened without encryption."""
    if check is not None and store.crypto is not None and check != key_check():
        raise StoreKeyMismatch(store.path)
    if sealed is not None and store.datakeys is None:
        raise StoreEncrypted(store.path)


def _empty(store, txn) -> bool:
    return not holds_records(store, txn, (*K.USER_TABLES, "dedupe"))


def sealed_stamp(meta: Table, txn) -> bytes | None:
    """The `sealed` stamp, or the progress of a seal under way (some records sealed already)."""
    stamp = meta.get(txn, SEALED_KEY)
    return stamp if stamp is not None else meta.get(txn, SEAL_PROGRESS_KEY)


def _migrate(store, txn) -> None:
    """Stamp the store-id key's check value, once re-keyed and sealed (`_rekey`, `_seal`: their
    own transactions)."""
    meta = store.raw_table("meta")
    if store.crypto is not None and meta.get(txn, KEY_CHECK_KEY) is None:
        meta.put(txn, KEY_CHECK_KEY, key_check())


# -- key version 1 -> 2 ---------------------------------------------------------------------------
def _user_key(key: bytes) -> bytes:
    """`<user>␟rest` (version 1) -> `<token>␟rest`."""
    user, rest = key.split(K.SEP, 1)
    return user_token(user.decode()) + K.SEP + rest


def _event_key(key: bytes) -> bytes:
    user, ms, event_id = key.split(K.SEP)
    return K.SEP.join([user_token(user.decode()), ms, event_token(event_id)])


Step = tuple[str, Callable[[bytes], bool], Callable[[bytes], bytes], Callable[[bytes], bytes]]


def _steps() -> list[Step]:
    """(table, which keys hold old records, their new key, their new value) per table."""
    prefix = K.PHONE_USER_PREFIX
    return [*((name, lambda k: not k.startswith(K.SEP),
               _event_key if name == "events" else _user_key, _same) for name in K.USER_TABLES),
            ("decisions", lambda k: k.startswith(K.SEP), _same, _user_key),  # index, pending
            ("dedupe", lambda k: True,
             lambda k: K.DEDUPE_PREFIX + event_token(k[len(K.DEDUPE_PREFIX):]), _event_key),
            ("meta", lambda k: k.startswith(prefix),
             lambda k: prefix + user_token(k[len(prefix):].decode()), _same)]


def _same(raw: bytes) -> bytes:
    return raw


def _rekey(store) -> int:
    """Key version 1 -> 2 in chunks (module doc); records re-keyed by this call."""
    scratch = Table(_SCRATCH.decode(), store.open_db(_SCRATCH.decode()))
    n, where = 0, (-1, b"")
    while True:
        moved, where = store.write(lambda txn, at=where: _rekey_chunk(store, scratch, txn, at))
        n += moved
        if where is None:
            return n


def _rekey_chunk(store, scratch: Table, txn, where: tuple[int, bytes]):
    """One transaction of the re-key: up to `REKEY_CHUNK` records moved. `where`: (step, key)
    this process's previous chunk stopped at in a step's first half (only keys from there on
    can still be old; a hint: the state itself is read from `txn`). Returns (old records
    moved out, the next `where`, or None once done)."""
    meta = store.raw_table("meta")
    raw = meta.get(txn, REKEY_PROGRESS_KEY)
    if raw is None:
        if meta.get(txn, KEY_VERSION_KEY) == b"%d" % KEY_VERSION:
            return 0, None  # another process finished it
        if _empty(store, txn):
            return _rekeyed(store, txn, scratch)
        raw = json.dumps([0, 1]).encode()  # from now on a resumed re-key goes on from here
        meta.put(txn, REKEY_PROGRESS_KEY, raw)
    step, half = json.loads(raw)
    steps = _steps()
    name, which, new_key, new_value = steps[step]
    table = store.raw_table(name)
    if half == 1:  # old records out to the scratch table under their new keys
        start = where[1] if where[0] == step else b""
        old = _first(table.keys_from(txn, start), which)
        for key in old:
            value = table.get(txn, key)
            table.delete(txn, key)
            scratch.put(txn, new_key(key), new_value(value))
        if len(old) == REKEY_CHUNK:
            return len(old), (step, old[-1])
        meta.put(txn, REKEY_PROGRESS_KEY, json.dumps([step, 2]).encode())
        return len(old), (step, b"")
    new = _first(scratch.keys(txn), lambda k: True)  # the new records back, in place
    for key in new:
        table.put(txn, key, scratch.get(txn, key))
        scratch.delete(txn, key)
    if len(new) == REKEY_CHUNK:
        return 0, (step, b"")
    if step + 1 == len(steps):
        return _rekeyed(store, txn, scratch)
    meta.put(txn, REKEY_PROGRESS_KEY, json.dumps([step + 1, 1]).encode())
    return 0, (step + 1, b"")


def _first(keys, which, limit: int | None = None) -> list[bytes]:
    """The first `limit` (`REKEY_CHUNK`) of `keys` that pass `which` (copied: the table
    changes next)."""
    limit = REKEY_CHUNK if limit is None else limit
    out = []
    for key in keys:
        if which(key):
            out.append(bytes(key))
            if len(out) == limit:
                break
    return out


def _rekeyed(store, txn, scratch: Table):
    """The re-key's last transaction: stamped, its progress and scratch table gone."""
    meta = store.raw_table("meta")
    meta.put(txn, KEY_VERSION_KEY, b"%d" % KEY_VERSION)
    meta.delete(txn, REKEY_PROGRESS_KEY)
    txn.drop(scratch.db, delete=True)
    return 0, None


# -- sealing ----------------------------------------------------------------------------------------
Part = tuple[str, bytes, Callable[[bytes], bool] | None, Callable]
_PARTS: tuple[tuple[str, bytes, Callable[[bytes], bool] | None], ...] = (
    *((name, b"", is_user_key) for name in K.USER_TABLES),
    *(("meta", prefix, None) for prefix in (K.PHONE_PREFIX, K.EMAIL_PREFIX)),
    *(("sends", prefix, None) for prefix in (K.SEND_USER_PREFIX, K.DEAD_LETTER_PREFIX)))
"""(table, key prefix, which keys) of every part of the seal, in the order it runs: the seal
(`_seal_parts`) and the reader of a store it left half done (`seal_reached`) take them from
here."""


def seal_reached(meta: Table, txn) -> Callable[[str, bytes], bool]:
    """Whether the record `key` of table `name` is sealed, in the store whose `meta` table
    `txn` reads, by its stamps: every record of the seal's parts (`_PARTS`) once `sealed`;
    none before a seal began; while one is under way (`seal-progress`: a start stopped
    midway, or a backup of such a store), those of the parts before the one it names, and of
    that one up to the last key it sealed (`_seal_chunk` seals each part in key order). A
    key of no part (the decision index, a send job) is never sealed. Told by the key alone:
    an unnamed address entry (`keys.ADDRESS_UNNAMED`), which the seal passes and leaves as
    is, is answered as the named ones beside it (its value tells it: `messages.phones`)."""
    if meta.get(txn, SEALED_KEY) is not None:
        return lambda name, key: _part_of(name, key) is not None
    raw = meta.get(txn, SEAL_PROGRESS_KEY)
    if raw is None:
        return lambda name, key: False
    part, after = json.loads(raw)
    last = None if after is None else bytes.fromhex(after)

    def sealed(name: str, key: bytes) -> bool:
        at = _part_of(name, key)
        return at is not None and (at < part or (at == part and last is not None and key <= last))
    return sealed


def _part_of(name: str, key: bytes) -> int | None:
    """The part of the seal (`_PARTS`) record `key` of table `name` is sealed in, or None."""
    for at, (table, prefix, which) in enumerate(_PARTS):
        if table == name and key.startswith(prefix) and (which is None or which(key)):
            return at
    return None


def _seal_parts(store) -> list[Part]:
    """(table, key prefix, which keys, how to seal one record) of every part of the seal
    (`_PARTS`), in the order it runs. Each seal function takes (txn, key, plaintext) and
    writes the sealed record under the same key."""
    def user_table(name: str):
        sealed = store.table(name)
        return lambda txn, key, value: sealed.put(txn, key, value)

    def index(txn, key: bytes, user: bytes) -> None:  # the address indexes (messages.phones)
        if user == K.ADDRESS_UNNAMED:
            return  # names no user: stays as is (sealed, it read as the id "\x00unnamed")
        store.raw_table("meta").put(txn, key, store.seal_for_user(txn, user.decode(), key, user))

    def send(txn, key: bytes, value: bytes) -> None:  # send recipients and dead letters
        user = json.loads(value)["user"]
        store.raw_table("sends").put(txn, key, store.seal_for_user(txn, user, key, value))
    how = {**{name: user_table(name) for name in K.USER_TABLES}, "meta": index, "sends": send}
    return [(name, prefix, which, how[name]) for name, prefix, which in _PARTS]


def _seal(store) -> int:
    """Seal every plaintext per-user record, `REKEY_CHUNK` a write transaction (module doc);
    records sealed by this call."""
    n = 0
    while True:
        sealed, done = store.write(lambda txn: _seal_chunk(store, txn))
        n += sealed
        if done:
            return n


def _seal_chunk(store, txn) -> tuple[int, bool]:
    """One transaction of the seal: up to `REKEY_CHUNK` records sealed from where the last
    committed chunk stopped (read from `txn`: two processes opening the store at once take
    turns, never sealing a record twice). Returns (records sealed, whether the seal is done)."""
    meta = store.raw_table("meta")
    if meta.get(txn, SEALED_KEY) is not None:
        return 0, True  # another process finished it
    raw = meta.get(txn, SEAL_PROGRESS_KEY)
    part, after = json.loads(raw) if raw is not None else (0, None)
    parts, n = _seal_parts(store), 0
    while part < len(parts) and n < REKEY_CHUNK:
        name, prefix, which, seal = parts[part]
        table, budget = store.raw_table(name), REKEY_CHUNK - n
        start = bytes.fromhex(after) + b"\x00" if after is not None else prefix
        keys = _first(_prefixed(table.keys_from(txn, start), prefix), which or _any_key, budget)
        for key in keys:  # listed first: each value is rewritten under the same key
            seal(txn, key, bytes(table.get(txn, key)))
        n += len(keys)
        if len(keys) == budget:  # the chunk is full: this part may go on
            after = keys[-1].hex()
            break
        part, after = part + 1, None
    if part == len(parts):
        meta.put(txn, SEALED_KEY, b"1")
        meta.delete(txn, SEAL_PROGRESS_KEY)
        return n, True
    meta.put(txn, SEAL_PROGRESS_KEY, json.dumps([part, after]).encode())
    return n, False


def _any_key(key: bytes) -> bool:
    return True


def _prefixed(keys, prefix: bytes):
    for key in keys:
        if not key.startswith(prefix):
            return
        yield key
