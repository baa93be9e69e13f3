"""AES-256-GCM of many small records, each under its own key (per-user data keys at rest).

`AesGcm(key)` has the interface of `cryptography`'s `AESGCM` (`encrypt(nonce, data, aad)`,
`decrypt(nonce, data, aad)`, the same bytes: ciphertext then the 16-byte tag; `InvalidTag` on a
forged value), and `seal_records` / `open_records` do a whole batch in one call. The native
kernel (`kernels._aead`, OpenSSL 3's AES-256-GCM called through the default provider's
dispatch table, without EVP's per-call parameter queries) makes a key object 32 bytes (no cipher
context per key: ~0.05 µs to build where `AESGCM` takes ~1 µs) and a record ~0.6 µs where a
Python loop over `AESGCM` takes ~1.5 µs. With ``use_native=False`` (or when the kernel was not
built: no libcrypto headers) the same functions run on `cryptography`'s `AESGCM`, which is the
reference the tests compare the kernel with.
"""
from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:
    from . import _aead
except ImportError:  # built without libcrypto's headers: the reference serves
    _aead = None

__all__ = ["AesGcm", "NATIVE", "PLAIN", "open_records", "pick", "seal_records", "user_tokens"]

NATIVE = _aead is not None
"""Whether the kernel is built (else every call runs the reference)."""
NONCE = 12
PLAIN = object()
"""`pick`'s cipher for a record that is not per-user: `open_records` passes its value through."""


def AesGcm(key: bytes, use_native: bool = True):  # noqa: N802 (a class, from the caller's side)
    """A cipher of one 256-bit key."""
    if len(key) != 32:
        raise ValueError(f"key: {len(key)} bytes, AES-256-GCM takes 32")
    return _aead.AesGcm(key) if NATIVE and use_native else AESGCM(key)


def user_tokens(keys: list[bytes], size: int, sep: int, values: list | None = None
                ) -> list[bytes | None]:
    """keys[i][:size] where byte `size` of keys[i] is `sep` (a per-user record key) and, given
    `values`, values[i] is not None; else None."""
    if NATIVE:
        try:
            return _aead.user_tokens(keys, size, sep, values)
        except TypeError:  # a key that is not bytes
            pass
    return [k[:size] if len(k) > size and k[size] == sep and (values is None or values[i] is not None)
            else None for i, k in enumerate(keys)]


def pick(memo: dict, tokens: list[bytes | None], plain=None, strict: bool = False,
         missing: list | None = None) -> list:
    """The cipher of each token in `memo` (None when it lacks one, and the token appended to
    `missing` when given; KeyError if `strict`), `plain` where a token is None:
    `pick(memo, tokens, strict=True)` for `seal_records` (every user has a key),
    `pick(memo, tokens, PLAIN)` for `open_records` (shredded: None)."""
    if NATIVE:
        return _aead.pick(memo, tokens, plain, strict, missing)
    out = [plain if t is None else memo[t] if strict else memo.get(t) for t in tokens]
    if missing is not None:
        missing.extend(t for t, c in zip(tokens, out) if t is not None and c is None)
    return out


def seal_records(ciphers: list, keys: list[bytes], values: list[bytes], head: bytes, aad: bytes,
                 nonces: bytes) -> list[bytes]:
    """For each i: ``head | nonce_i | AES-GCM(values[i])`` under ciphers[i] with associated
    data ``aad | keys[i]`` (nonce_i: bytes 12 i to 12 i + 12 of `nonces`); the value as it is
    where ciphers[i] is None. Native unless a cipher is a reference one."""
    if NATIVE:
        try:
            return _aead.seal_records(ciphers, keys, values, head, aad, nonces)
        except TypeError:  # a reference cipher among them
            pass
    out = []
    for i, (c, key, value) in enumerate(zip(ciphers, keys, values)):
        nonce = nonces[NONCE * i:NONCE * (i + 1)]
        out.append(value if c is None else head + nonce + c.encrypt(nonce, value, aad + key))
    return out


def open_records(ciphers: list, keys: list[bytes], values: list, body: int, aad: bytes) -> list:
    """Inverse of `seal_records` (`body`: len(head) + 12, where the ciphertext starts): None
    where values[i] or ciphers[i] is None, values[i] as it is where ciphers[i] is `PLAIN`;
    `InvalidTag` on a forged or misplaced value."""
    if NATIVE:
        try:
            return _aead.open_records(ciphers, keys, values, body, aad, PLAIN)
        except TypeError:  # a reference cipher among them
            pass
    return [None if c is None or v is None else v if c is PLAIN
            else c.decrypt(bytes(v[body - NONCE:body]), bytes(v[body:]), aad + key)
            for c, key, v in zip(ciphers, keys, values)]
