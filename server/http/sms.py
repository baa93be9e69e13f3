"""The SMS provider's inbound webhook: STOP / START replies change the user's SMS consent.

    POST /sms/inbound   form fields `From` (the sender's number) and `Body` (the text)
                        header `X-Tailor-Signature: sha256=<hex HMAC-SHA256 of the raw body
                        under a key of the `sms-webhook` keyring>`

The endpoint exists only when the optional `sms-webhook` keyring is provided
(`TAILOR_SECRET_SMS_WEBHOOK` or `<secrets_dir>/sms-webhook.keys`, `server.security.secrets`);
every key of it verifies, so the provider's secret can change without dropping replies.
A missing or wrong signature is 401 and changes nothing. The first word of the body decides:
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT opt the sender out of marketing SMS; START,
UNSTOP, YES opt back in; anything else is ignored. A number no SMS went to is ignored too (200,
so the provider does not retry). The sender is found through `PhoneIndex` (hashed numbers).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from urllib.parse import parse_qs

from aiohttp import web

from ..interfaces import ConsentWriter
from ..messages.phones import PhoneIndex
from ..security.secrets import Keyring
from ..security.userref import user_ref

__all__ = ["SmsInbound", "STOP_WORDS", "START_WORDS", "sign", "signed_by", "SIGNATURE_HEADER"]

logger = logging.getLogger("tailor.http.sms")

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
SIGNATURE_HEADER = "X-Tailor-Signature"


def sign(key: bytes, body: bytes) -> str:
    """The signature header's value for `body` (what the provider sends; tests use it)."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signed_by(ring: Keyring, body: bytes, given: str) -> bool:
    """Whether `given` is `body`'s signature under any key of `ring` (every key is tried: the
    time taken does not tell which one matched). Compared as bytes: a header that is not ASCII
    is simply no match (`compare_digest` refuses non-ASCII str with a TypeError)."""
    given_bytes = given.encode("utf-8", "surrogateescape")
    return any([hmac.compare_digest(sign(key, body).encode(), given_bytes)
                for _, key in ring.keys])


class SmsInbound:
    def __init__(self, ring: Keyring, phones: PhoneIndex, consent: ConsentWriter):
        self._ring, self.phones, self.consent = ring, phones, consent

    def signed(self, body: bytes, given: str) -> bool:
        return signed_by(self._ring, body, given)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.signed(body, request.headers.get(SIGNATURE_HEADER, "")):
            raise web.HTTPUnauthorized(text="bad signature")
        form = parse_qs(body.decode("utf-8", "replace"))
        sender, text = form.get("From", [""])[0], form.get("Body", [""])[0]
        word = text.strip().split(maxsplit=1)[0].upper().strip(".!") if text.strip() else ""
        opted_in = False if word in STOP_WORDS else True if word in START_WORDS else None
        if opted_in is None:
            return web.Response(text="ignored")
        user = await asyncio.to_thread(self.phones.lookup, sender)
        if user is None:
            return web.Response(text="unknown number")
        await self.consent.set_consent(user, "sms", opted_in, f"sms reply {word}")
        logger.info("sms %s from %s", word, user_ref(user))
        return web.Response(text="ok")
