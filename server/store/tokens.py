"""Keyed hashes that stand in for user ids and event ids in store keys (key version 2).

No store key holds a raw user id or event id: a key names its user by `user_token(id)`, 32 hex
characters of HMAC-SHA256 under the `store-id` keyring's key, and an event by `event_token(id)`
(the same key, another domain). The key is installed per process (`use_key`, by
`StoreCrypto`, before the store opens); the store records a check value of it and refuses a
different key (`StoreCrypto.check_key`). Until `use_key` runs, a fixed key stands in: stores
opened that way (tests, benchmarks) are keyed, but not secret.

The key must stay for the life of the store (rotating it would rename every record): rotate the
`encryption` master key instead (`python -m server rotate-key`).

A process that serves two stores (two `TailorServer`s embedded in one program, each its own data
dir and keyrings) keys each one's tokens with its own key: a server runs its start, its calls
and its stop in a context bound to its key (`bound_context`; asyncio tasks and `to_thread`
carry it, executor calls and threads are given it: `server.contexts.carried`); the installed
key stands in outside any. Before, the second server's `use_key` re-keyed the first one's store
under it: the first answered NOT_FOUND for users it held, and wrote new ones under the other key.
"""
from __future__ import annotations

import contextvars
import functools

from kernels.keyed import KeyedHash

__all__ = ["TOKEN_CHARS", "UNCONFIGURED_KEY", "use_key", "bound_context", "forget_ids",
           "user_token", "user_tokens", "event_token", "event_tokens", "keyed_digest", "key_check"]

TOKEN_CHARS = 32
"""Hex characters of a token (128 bits)."""
UNCONFIGURED_KEY = b"tailor store-id key (unconfigured: tests and benchmarks only)"

_key = UNCONFIGURED_KEY
_hash = KeyedHash(_key)
"""HMAC-SHA256 under `_key`, its padded key blocks hashed once (`kernels.keyed`: ~0.2 µs a token
in C, where six `hashlib` calls a token took ~2 µs)."""
_bound: contextvars.ContextVar[KeyedHash | None] = contextvars.ContextVar(
    "tailor_store_id_key", default=None)
"""The key of the server whose context this is (`bound_context`); None: the installed one."""


def use_key(key: bytes) -> None:
    """Install the `store-id` key for this process (what tokens are under outside any server's
    `bound_context`)."""
    global _key, _hash
    _key = key
    _hash = _hasher(key)


@functools.lru_cache(maxsize=16)
def _hasher(key: bytes) -> KeyedHash:
    """One `KeyedHash` a key: the caches below are keyed by it."""
    return KeyedHash(key)


def bound_context(key: bytes) -> contextvars.Context:
    """A copy of the current context in which tokens are under `key` (a server's `store-id`
    key): run in it whatever computes that server's store keys."""
    context = contextvars.copy_context()
    context.run(_bound.set, _hasher(key))
    return context


def _current() -> KeyedHash:
    return _bound.get() or _hash


def _hmac_hex(message: bytes) -> str:
    return _current().hexdigest(message)


def keyed_digest(domain: bytes, data: bytes) -> str:
    """HMAC-SHA256 (hex) of `data` under the same key, in its own `domain`: a digest of user
    ids kept in a record (an audience) that nobody without the key can test a guessed id
    against."""
    return _hmac_hex(domain + b"\x00" + data)


def forget_ids(erased=None) -> None:
    """Empty the caches of tokens by id, whose keys are user and event ids (a `Tombstones`
    watcher: an erased user's id must not stay in memory; `functools` cannot drop one)."""
    _user_token.cache_clear()
    _event_token.cache_clear()


def user_token(user_id: str) -> bytes:
    """The key part that names `user_id`: 32 hex characters of HMAC-SHA256(key, "u" + id)."""
    return _user_token(_current(), user_id)


@functools.lru_cache(maxsize=1 << 16)  # by key and id: a process may serve two stores
def _user_token(hasher: KeyedHash, user_id: str) -> bytes:
    return hasher.token(b"u\x00", user_id.encode("utf-8", "surrogatepass"), TOKEN_CHARS)


def event_token(event_id: bytes) -> bytes:
    """The key part that names an event (its id, UTF-8): HMAC-SHA256(key, "e" + id), 32 hex."""
    return _event_token(_current(), event_id)


@functools.lru_cache(maxsize=1 << 12)  # one id at a time (a batch's: `event_tokens`)
def _event_token(hasher: KeyedHash, event_id: bytes) -> bytes:
    return hasher.token(b"e\x00", event_id, TOKEN_CHARS)


def event_tokens(event_ids: list[bytes]) -> list[bytes]:
    """`event_token` of many ids (UTF-8) at once, without its cache (a batch's events: each id
    is hashed once for its events and dedupe keys, `keys.event_and_dedupe_keys`)."""
    return _current().tokens(b"e\x00", event_ids, TOKEN_CHARS)


def key_check() -> bytes:
    """A value that identifies the installed key without revealing it (stored in `meta`)."""
    return _hmac_hex(b"tailor store-id check")[:16].encode()


use_key(UNCONFIGURED_KEY)


def user_tokens(user_ids) -> list[bytes]:
    """`user_token` of many ids without going through its cache (a whole bundle's users at
    load would only evict the served users' tokens). Hashed without the GIL (a loading thread's
    whole bundle: the event loop serves meanwhile)."""
    return _current().tokens(b"u\x00", [u.encode("utf-8", "surrogatepass") for u in user_ids],
                             TOKEN_CHARS, release=True)
