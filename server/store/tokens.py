"""Keyed hashes that stand in for user ids and event ids in store keys (key version 2).

No store key holds a raw user id or event id: a key names its user by `user_token(id)`, 32 hex
characters of HMAC-SHA256 under the `store-id` keyring's key, and an event by `event_token(id)`
(the same key, another domain). The key is installed per process (`use_key`, by
`StoreCrypto`, before the store opens); the store records a check value of it and refuses a
different key (`StoreCrypto.check_key`). Until `use_key` runs, a fixed key stands in: stores
opened that way (tests, benchmarks) are keyed, but not secret.

The key must stay for the life of the store (rotating it would rename every record): rotate the
`encryption` master key instead (`python -m server rotate-key`).
"""
from __future__ import annotations

import functools
import hashlib

__all__ = ["TOKEN_CHARS", "UNCONFIGURED_KEY", "use_key", "forget_ids", "user_token", "user_tokens",
           "event_token", "keyed_digest", "key_check"]

TOKEN_CHARS = 32
"""Hex characters of a token (128 bits)."""
UNCONFIGURED_KEY = b"tailor store-id key (unconfigured: tests and benchmarks only)"

_key = UNCONFIGURED_KEY
_inner = _outer = hashlib.sha256()


def use_key(key: bytes) -> None:
    """Install the `store-id` key for this process."""
    global _key, _inner, _outer
    _key = key
    # HMAC (RFC 2104) with its padded-key states hashed once: a token then costs two hash
    # copies (~8x cheaper than `hmac.digest`, which redoes the key schedule every call).
    block = (key if len(key) <= 64 else hashlib.sha256(key).digest()).ljust(64, b"\x00")
    _inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    _outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    user_token.cache_clear()
    event_token.cache_clear()


def _hmac_hex(message: bytes) -> str:
    inner = _inner.copy()
    inner.update(message)
    outer = _outer.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def keyed_digest(domain: bytes, data: bytes) -> str:
    """HMAC-SHA256 (hex) of `data` under the same key, in its own `domain`: a digest of user
    ids kept in a record (an audience) that nobody without the key can test a guessed id
    against."""
    return _hmac_hex(domain + b"\x00" + data)


def forget_ids(erased=None) -> None:
    """Empty the caches of tokens by id, whose keys are user and event ids (a `Tombstones`
    watcher: an erased user's id must not stay in memory; `functools` cannot drop one)."""
    user_token.cache_clear()
    event_token.cache_clear()


@functools.lru_cache(maxsize=1 << 16)
def user_token(user_id: str) -> bytes:
    """The key part that names `user_id`: 32 hex characters of HMAC-SHA256(key, "u" + id)."""
    return _hmac_hex(b"u\x00" + user_id.encode("utf-8", "surrogatepass"))[:TOKEN_CHARS].encode()


@functools.lru_cache(maxsize=1 << 12)  # an event's id is hashed for its events and dedupe keys
def event_token(event_id: bytes) -> bytes:
    """The key part that names an event (its id, UTF-8): HMAC-SHA256(key, "e" + id), 32 hex."""
    return _hmac_hex(b"e\x00" + event_id)[:TOKEN_CHARS].encode()


def key_check() -> bytes:
    """A value that identifies the installed key without revealing it (stored in `meta`)."""
    return _hmac_hex(b"tailor store-id check")[:16].encode()


use_key(UNCONFIGURED_KEY)


def user_tokens(user_ids) -> list[bytes]:
    """`user_token` of many ids without going through its cache (a whole bundle's users at
    load would only evict the served users' tokens)."""
    return [_hmac_hex(b"u\x00" + u.encode("utf-8", "surrogatepass"))[:TOKEN_CHARS].encode()
            for u in user_ids]
