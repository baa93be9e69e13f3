"""One-click unsubscribe tokens (RFC 8058): who, which channel, which campaign, sealed.

    token = "1." b64url(iv | ciphertext) "." b64url(mac) "." kid

Keys come from the `unsubscribe` keyring (`server.security.secrets`), one pair per key id:
`enc = HMAC(key, "unsubscribe/enc")`, `mac = HMAC(key, "unsubscribe/mac")`. The payload
`user ␟ channel ␟ campaign` is encrypted with AES-256-CTR under `enc` and the IV is a MAC of
the payload (`HMAC(mac, "iv" | payload)[:16]`, SIV-style): the same message always gets the same
token, and no two payloads share an IV. `mac = HMAC-SHA256(mac key, "1." body "." kid)` covers
everything (encrypt-then-MAC), checked in constant time before anything is decrypted.

Why sealed rather than a reference to a stored record: the endpoint stays stateless (no write
per composed message, any worker can answer, nothing to expire or erase), and the user id,
which may be an email address or a customer number, is not readable from a link that mail
clients, proxies and scanners log. The key id is in clear so rotated keys keep verifying the
links of messages already sent (`secrets rotate unsubscribe`); drop an old key to void its links.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import InvalidArgument
from ..security.secrets import Keyring
from ..validation import SEP

__all__ = ["Unsubscribe", "UnsubscribeTokens", "BadToken"]

VERSION = "1"
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


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    c = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return c.update(data) + c.finalize()


class UnsubscribeTokens:
    """Issues and reads tokens under a keyring (the first key seals, every key opens)."""

    def __init__(self, ring: Keyring):
        self._keys = {kid: self._derive(key) for kid, key in ring.keys}
        self._kid = ring.kid

    @staticmethod
    def _derive(key: bytes) -> tuple[bytes, bytes]:
        return (hmac.new(key, b"unsubscribe/enc", hashlib.sha256).digest(),
                hmac.new(key, b"unsubscribe/mac", hashlib.sha256).digest())

    def issue(self, user_id: str, channel: str, campaign_id: str) -> str:
        enc, mac = self._keys[self._kid]
        payload = SEP.join((user_id, channel, campaign_id)).encode()
        iv = hmac.new(mac, b"iv" + payload, hashlib.sha256).digest()[:16]
        body = _b64(iv + _ctr(enc, iv, payload))
        signed = f"{VERSION}.{body}.{self._kid}"
        tag = _b64(hmac.new(mac, signed.encode(), hashlib.sha256).digest())
        return f"{VERSION}.{body}.{tag}.{self._kid}"

    def read(self, token: str) -> Unsubscribe:
        """The token's contents; BadToken unless it verifies under a key of the ring."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise BadToken("missing or too long")
        version, _, rest = token.partition(".")
        body, _, rest = rest.partition(".")
        tag, _, kid = rest.partition(".")
        keys = self._keys.get(kid)
        if version != VERSION or keys is None:
            raise BadToken()
        enc, mac = keys
        try:
            raw, given = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            raise BadToken() from None
        want = hmac.new(mac, f"{VERSION}.{body}.{kid}".encode(), hashlib.sha256).digest()
        if len(raw) < 17 or not hmac.compare_digest(want, given):
            raise BadToken()
        parts = _ctr(enc, raw[:16], raw[16:]).decode("utf-8", "replace").split(SEP)
        if len(parts) != 3:
            raise BadToken()
        return Unsubscribe(*parts)
