"""One-click unsubscribe tokens (RFC 8058): who, which channel, which campaign, sealed.

    token = "2." b64url(iv | ciphertext) "." b64url(mac) "." kid

Keys come from the `unsubscribe` keyring (`server.security.secrets`), one pair per key id:
`enc = HMAC(key, "unsubscribe/enc")`, `mac = HMAC(key, "unsubscribe/mac")`. The payload
`user ␟ channel ␟ campaign`, padded with NUL bytes to a multiple of `PAD_BYTES` (64), is
encrypted with AES-256-CTR under `enc` and the IV is a MAC of the padded payload
(`HMAC(mac, "iv" | payload)[:16]`, SIV-style): the same message always gets the same token, and
no two payloads share an IV. `mac = HMAC-SHA256(mac key, "2." body "." kid)` covers everything
(encrypt-then-MAC), checked in constant time before anything is decrypted. Version 1 tokens
(links already sent) are the same without the padding, and still read: CTR keeps the length, so
their length gave the user id's away (ids hold no control character, so NULs only pad).

Why sealed rather than a reference to a stored record: the endpoint stays stateless (no write
per composed message, any worker can answer, nothing to expire or erase), and the user id,
which may be an email address or a customer number, is not readable from a link that mail
clients, proxies and scanners log. The key id is in clear so rotated keys keep verifying the
links of messages already sent (`secrets rotate unsubscribe`); drop an old key to void its links.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import InvalidArgument
from ..security.secrets import Keyring
from ..validation import SEP

__all__ = ["Unsubscribe", "UnsubscribeTokens", "BadToken"]

VERSION = "2"
READ_VERSIONS = frozenset({"1", VERSION})
"""1: the payload unpadded (links sent before version 2); still read."""
PAD_BYTES = 64
"""Version 2 payloads are a multiple of this long: a token's length no longer gives the user
id's away (ids of up to ~60 bytes all make tokens of one length)."""
MAX_TOKEN_CHARS = 2048


class BadToken(InvalidArgument):
    """A token that does not verify (forged, truncated, or signed by a dropped key)."""

    def __init__(self, problem: str = "does not verify"):
        super().__init__("token", problem)


@dataclass(frozen=True)
class Unsubscribe:
    user_id: str
    channel: str
    campaign_id: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Ctr:
    """AES-256-CTR under one key, the same bytes as `modes.CTR(iv)`: the keystream is the ECB
    encryption of the counter blocks iv, iv + 1, ... (mod 2**128). One ECB context is kept per
    key (setting up a CTR context costs more than a token's few blocks); the lock serialises its
    use across threads."""

    def __init__(self, key: bytes):
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._lock = threading.Lock()

    def apply(self, iv: bytes, data: bytes) -> bytes:
        start, n = int.from_bytes(iv, "big"), -(-len(data) // 16)
        counters = b"".join(((start + i) & _BLOCK_MASK).to_bytes(16, "big") for i in range(n))
        with self._lock:
            stream = self._ecb.update(counters)
        mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream[:len(data)], "big")
        return mixed.to_bytes(len(data), "big")


_BLOCK_MASK = (1 << 128) - 1


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


class UnsubscribeTokens:
    """Issues and reads tokens under a keyring (the first key seals, every key opens)."""

    def __init__(self, ring: Keyring):
        self._keys = {kid: self._derive(key) for kid, key in ring.keys}
        self._kid = ring.kid

    @staticmethod
    def _derive(key: bytes) -> tuple[_Ctr, bytes]:
        return _Ctr(_mac(key, b"unsubscribe/enc")), _mac(key, b"unsubscribe/mac")

    def issue(self, user_id: str, channel: str, campaign_id: str) -> str:
        enc, mac = self._keys[self._kid]
        payload = SEP.join((user_id, channel, campaign_id)).encode()
        payload += b"\0" * (-len(payload) % PAD_BYTES)
        iv = _mac(mac, b"iv" + payload)[:16]
        body = _b64(iv + enc.apply(iv, payload))
        tag = _b64(_mac(mac, f"{VERSION}.{body}.{self._kid}".encode()))
        return f"{VERSION}.{body}.{tag}.{self._kid}"

    def read(self, token: str) -> Unsubscribe:
        """The token's contents; BadToken unless it verifies under a key of the ring."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise BadToken("missing or too long")
        version, _, rest = token.partition(".")
        body, _, rest = rest.partition(".")
        tag, _, kid = rest.partition(".")
        keys = self._keys.get(kid)
        if version not in READ_VERSIONS or keys is None:
            raise BadToken()
        enc, mac = keys
        try:
            raw, given = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            raise BadToken() from None
        want = _mac(mac, f"{version}.{body}.{kid}".encode())
        if len(raw) < 17 or not hmac.compare_digest(want, given):
            raise BadToken()
        payload = enc.apply(raw[:16], raw[16:])
        if version != "1":
            payload = payload.rstrip(b"\0")
        parts = payload.decode("utf-8", "replace").split(SEP)
        if len(parts) != 3:
            raise BadToken()
        return Unsubscribe(*parts)
