"""The signature on the provider webhooks Tailor receives (inbound SMS, delivery reports); one
scheme for both:

    X-Tailor-Timestamp: <when the provider signed, Unix seconds (an integer)>
    X-Tailor-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" under a key of
                        the endpoint's keyring>

Every key of the keyring verifies (the provider's secret can change without dropping requests).
A missing or wrong signature, or a timestamp more than `webhook_tolerance_seconds` from now (a
captured request sent again later), is 401. The same signature again within the tolerance (a
replay while it is still fresh) is 409. Both change nothing. Signatures are remembered in memory,
per process (each worker keeps its own, at most `limits.webhook_signatures`): the timestamp
bounds a replay's age everywhere, and the handler passes it on (an SMS reply's consent change
carries its signed time, so an old START never undoes a later STOP).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict

from aiohttp import web

from ..security.secrets import Keyring
from .bounds import within

__all__ = ["SignedRequests", "SeenSignatures", "sign", "signed_by", "SIGNATURE_HEADER",
           "TIMESTAMP_HEADER"]

SIGNATURE_HEADER = "X-Tailor-Signature"
TIMESTAMP_HEADER = "X-Tailor-Timestamp"
_TIMESTAMP_DIGITS = 12


def sign(key: bytes, body: bytes, timestamp: str) -> str:
    """The signature header's value for `body` sent at `timestamp` (what the provider sends;
    tests use it)."""
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_by(ring: Keyring, body: bytes, timestamp: str, given: str) -> bool:
    """Whether `given` is the signature of (`timestamp`, `body`) under any key of `ring` (every
    key is tried: the time taken does not tell which one matched). Compared as bytes: a header
    that is not ASCII is no match (`compare_digest` refuses non-ASCII str with a TypeError)."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _TIMESTAMP_DIGITS):
        return False
    given_bytes = given.encode("utf-8", "surrogateescape")
    return any([hmac.compare_digest(sign(key, body, timestamp).encode(), given_bytes)
                for _, key in ring.keys])


class SeenSignatures:
    """The signatures accepted lately (until their timestamp goes stale), at most `most`: the
    oldest are forgotten first (only validly signed requests get here, so only the provider
    can fill it, and a forgotten one is still refused once its timestamp is stale)."""

    def __init__(self, most: int):
        self.most = most
        self._until: OrderedDict[str, float] = OrderedDict()

    def first_time(self, signature: str, until: float, now: float) -> bool:
        """Remember `signature` until `until`; False if it was remembered already."""
        while self._until and next(iter(self._until.values())) <= now:
            self._until.popitem(last=False)
        if signature in self._until:
            return False
        self._until[signature] = until
        while len(self._until) > self.most:
            self._until.popitem(last=False)
        return True


class SignedRequests:
    """Reads a webhook request and checks its signature, freshness and novelty."""

    def __init__(self, ring: Keyring, tolerance: float, remember: int, body_seconds: float = 10.0):
        """`body_seconds`: longest the body may take to arrive (then 408)."""
        self._ring, self.tolerance, self.body_seconds = ring, tolerance, body_seconds
        self.seen = SeenSignatures(remember)

    async def read(self, request: web.Request) -> tuple[bytes, float]:
        """The body and its signed timestamp; HTTP 401 (unsigned, wrongly signed, stale) or
        409 (a replay) otherwise; 408 for a body slower than `body_seconds`."""
        body = await within(self.body_seconds, request.read())
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signed_by(self._ring, body, timestamp, signature):
            raise web.HTTPUnauthorized(text="bad signature")
        now, signed_at = time.time(), float(timestamp)
        if abs(now - signed_at) > self.tolerance:
            raise web.HTTPUnauthorized(text=f"{TIMESTAMP_HEADER}: more than {self.tolerance:g} s "
                                            "from now")
        if not self.seen.first_time(signature, signed_at + self.tolerance, now):
            raise web.HTTPConflict(text="already received (a request is signed once)")
        return body, signed_at
