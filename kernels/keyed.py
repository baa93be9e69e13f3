"""HMAC-SHA256 under one key, many short messages: the keyed tokens that stand in for user and
event ids in store keys (`server.store.tokens`).

`KeyedHash(key)` hashes the key's two padded blocks once (RFC 2104); each digest then costs two
state copies and two short updates. The native kernel (`kernels._keyed`, OpenSSL's SHA-256)
does them in C: ~0.2 µs a token in a batch, ~0.5 µs alone, where the reference, the same
precomputed states through `hashlib` (six Python-level calls a token), takes ~2 µs. With
``use_native=False`` (or when the kernel was not built: no libcrypto headers; or was built
from an older `_keyed.pyx`: `make build` rebuilds it) the reference serves, the same bytes;
the tests check both against `hmac.new`.
"""
from __future__ import annotations

import hashlib

try:
    from . import _keyed
except ImportError:  # built without libcrypto's headers: the reference serves
    _keyed = None
if getattr(_keyed, "API", None) != 2:  # not built, or built before `tokens(..., release)`
    _keyed = None

__all__ = ["KeyedHash", "NATIVE"]

NATIVE = _keyed is not None
BLOCK = 64
DIGEST_HEX = 64


def _block(key: bytes) -> bytes:
    """The key as one SHA-256 block (RFC 2104: hashed first when longer, then zero-padded)."""
    return (key if len(key) <= BLOCK else hashlib.sha256(key).digest()).ljust(BLOCK, b"\x00")


class _Reference:
    """The kernel's computation through `hashlib`: precomputed inner and outer states."""

    def __init__(self, block: bytes):
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def token(self, head: bytes, body: bytes, chars: int) -> bytes:
        _check_chars(chars)
        return self.hexdigest(head + body)[:chars].encode()

    def tokens(self, head: bytes, bodies: list[bytes], chars: int,
               release: bool = False) -> list[bytes]:  # (Python: other threads run anyway)
        _check_chars(chars)
        return [self.hexdigest(head + body)[:chars].encode() for body in bodies]


def _check_chars(chars: int) -> None:
    if not 0 <= chars <= DIGEST_HEX:
        raise ValueError(f"chars: {chars}, a digest has 0 to {DIGEST_HEX} hex characters")


def KeyedHash(key: bytes, use_native: bool = True):  # noqa: N802 (a class, from the caller's side)
    """HMAC-SHA256 under `key`: `hexdigest(message)` (str, 64 hex characters), `token(head,
    body, chars)` (bytes: the first `chars` hex characters of the HMAC of head | body) and
    `tokens(head, bodies, chars, release=False)` (a list of them; `release`: many ids hashed
    in a loading thread, without the GIL, so the event loop runs meanwhile)."""
    block = _block(bytes(key))
    return _keyed.KeyedHash(block) if NATIVE and use_native else _Reference(block)
