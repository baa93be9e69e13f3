"""Bring a store to key version 2 (keyed-hash ids) and, with encryption on, seal its records.

Run by `Store.__init__` before the record-layout migrations (`migrate`), in one write
transaction each, only when a stamp says it is needed (every later open: one read):

- `key-version` absent with records present (a data dir from before tokens): every per-user
  key `<user id>␟...` becomes `<user token>␟...`, event ids in events and dedupe keys become
  event tokens, and the values that hold such keys (dedupe entries, the decision index and
  pending-window entries) follow. The phone index's user entry is re-keyed too.
- `sealed` absent with encryption on: every per-user value of `keys.USER_TABLES` is sealed
  under its user's (new) data key (`sealed.SealedTable`), and so is the user id in each phone
  index entry, and each send recipient and dead letter (`Store.seal_for_user`).

The `store-id` key's check value is stamped at the first open with encryption configured, and
a store stamped under another key is refused (its records would not be found). An encrypted
store opened without encryption is refused too.
"""
from __future__ import annotations

import json
import logging

from ..errors import FailedPrecondition
from . import keys as K
from .errors import StoreEncrypted, StoreKeyMismatch
from .sealed import is_user_key
from .tokens import event_token, key_check, user_token

__all__ = ["open_format", "format_first", "KEY_VERSION", "KEY_VERSION_KEY", "SEALED_KEY", "KEY_CHECK_KEY"]

logger = logging.getLogger("tailor.store")

KEY_VERSION = 2
KEY_VERSION_KEY = b"key-version"
SEALED_KEY = b"sealed"
KEY_CHECK_KEY = b"store-id-check"


def open_format(store, readonly: bool) -> None:
    """Check and, if needed (and writable), migrate the store's key version and sealing."""
    meta = store.raw_table("meta")
    with store.read() as txn:
        version, sealed = meta.get(txn, KEY_VERSION_KEY), meta.get(txn, SEALED_KEY)
        check = meta.get(txn, KEY_CHECK_KEY)
        empty = _empty(store, txn)
    encrypt = store.datakeys is not None
    _refuse_other_keys(store, sealed, check)
    wanted = (version == b"%d" % KEY_VERSION and (sealed is not None or not encrypt)
              and (check is not None or store.crypto is None))
    if wanted:
        return
    if readonly:
        if empty:
            return
        raise FailedPrecondition(f"store at {store.path} needs its keys migrated (version 2, "
                                 "encryption); open it writable once")
    store.write(lambda txn: _migrate(store, txn, encrypt))


def format_first(store) -> bool:
    """Records keyed by raw ids (key version 1), or plaintext records to seal: re-key and seal
    them before any layout step (the steps read records through the sealed tables). A store
    sealed or keyed under other keys than `store`'s is refused here, before any step: a layout
    step run on records it cannot read would rewrite them for good."""
    meta = store.raw_table("meta")
    with store.read() as txn:
        sealed = meta.get(txn, SEALED_KEY)
        _refuse_other_keys(store, sealed, meta.get(txn, KEY_CHECK_KEY))
        pending = (meta.get(txn, KEY_VERSION_KEY) is None
                   or (store.datakeys is not None and sealed is None))
        return pending and not _empty(store, txn)


def _refuse_other_keys(store, sealed: bytes | None, check: bytes | None) -> None:
    """StoreKeyMismatch for a store keyed under another `store-id` key, StoreEncrypted for a
    sealed one opened without encryption."""
    if check is not None and store.crypto is not None and check != key_check():
        raise StoreKeyMismatch(store.path)
    if sealed is not None and store.datakeys is None:
        raise StoreEncrypted(store.path)


def _empty(store, txn) -> bool:
    for name in (*K.USER_TABLES, "dedupe"):
        try:
            table = store.raw_table(name)
        except KeyError:
            continue
        if table.first_key(txn, b"") is not None:
            return False
    return True


def _migrate(store, txn, encrypt: bool) -> None:
    meta = store.raw_table("meta")
    if meta.get(txn, KEY_VERSION_KEY) != b"%d" % KEY_VERSION:
        if not _empty(store, txn):
            n = _rekey(store, txn)
            logger.info("re-keyed %d records to key version %d (keyed hashes of ids)", n,
                        KEY_VERSION)
        meta.put(txn, KEY_VERSION_KEY, b"%d" % KEY_VERSION)
    if encrypt and meta.get(txn, SEALED_KEY) is None:
        n = _seal(store, txn)
        logger.info("encrypted %d per-user records at rest", n)
        meta.put(txn, SEALED_KEY, b"1")
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


def _rekey(store, txn) -> int:
    n = 0
    for name in K.USER_TABLES:
        move = _event_key if name == "events" else _user_key
        n += _move(store.raw_table(name), txn, lambda k: not k.startswith(K.SEP), move,
                   lambda v: v)
    n += _move(store.raw_table("decisions"), txn, lambda k: k.startswith(K.SEP),
               lambda k: k, _user_key)  # index and pending entries -> decision key
    n += _move(store.raw_table("dedupe"), txn, lambda k: True,
               lambda k: K.DEDUPE_PREFIX + event_token(k[len(K.DEDUPE_PREFIX):]), _event_key)
    prefix = K.PHONE_USER_PREFIX
    n += _move(store.raw_table("meta"), txn, lambda k: k.startswith(prefix),
               lambda k: prefix + user_token(k[len(prefix):].decode()), lambda v: v)
    return n


def _move(table, txn, which, new_key, new_value) -> int:
    """Rewrite every record of `table` whose key passes `which` (keys listed first: new keys
    sort elsewhere, and must not be visited again)."""
    old = [bytes(k) for k in table.keys(txn) if which(k)]
    for key in old:
        value = table.get(txn, key)
        table.delete(txn, key)
        table.put(txn, new_key(key), new_value(value))
    return len(old)


# -- sealing ----------------------------------------------------------------------------------------
def _seal(store, txn) -> int:
    n = 0
    for name in K.USER_TABLES:
        raw, sealed = store.raw_table(name), store.table(name)
        doomed = [bytes(k) for k in raw.keys(txn) if is_user_key(k)]
        for key in doomed:
            sealed.put(txn, key, raw.get(txn, key))
        n += len(doomed)
    meta = store.raw_table("meta")  # the phone index: user ids in values (messages.phones)
    for key in [bytes(k) for k, _ in meta.scan_prefix(txn, K.PHONE_PREFIX)]:
        user = meta.get(txn, key)
        meta.put(txn, key, store.seal_for_user(txn, user.decode(), key, user))
        n += 1
    sends = store.raw_table("sends")  # send recipients and dead letters: JSON naming the user
    for prefix in (K.SEND_USER_PREFIX, K.DEAD_LETTER_PREFIX):
        for key in [bytes(k) for k, _ in sends.scan_prefix(txn, prefix)]:
            value = bytes(sends.get(txn, key))
            sends.put(txn, key, store.seal_for_user(txn, json.loads(value)["user"], key, value))
            n += 1
    return n
