"""SMS and push delivery through the provider's HTTP webhook (aiohttp client).

One JSON POST per message to the channel's URL (`sms_webhook_url`, `push_webhook_url`):

    {"id": <decision id>, "channel": "sms" | "push", "to": <phone number | push token>,
     "campaign_id": ..., "parts": {"text": ...} | {"title": ..., "body": ..., "url": ...},
     "send_at": <unix seconds>}

signed as the webhooks Tailor receives are (`server.http.signing`): `X-Tailor-Timestamp` (Unix
seconds, at each attempt) and `X-Tailor-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw
body>">` under the signing key of the `delivery-webhook` keyring, whose key id rides in
`X-Tailor-Key-Id` (so a provider can hold the old and the new secret during a rotation). The
`id` is fixed by the decision: a retried or resent message carries the same one, so the provider
can drop a duplicate. A 2xx reply is success; 5xx, 408, 429, a timeout (`webhook_timeout_seconds`)
or a connection error before the status is transient (retried by `retry.Retry`); any other
reply is permanent, a redirect too: it is not followed (aiohttp turns a POST redirected by
301/302/303 into a GET without the body, whose 200 would count a message the provider never got
as sent; set the URL the redirect names). The reply's body is read up to
`Limits.webhook_reply_bytes`: one longer, stalled or broken off leaves the status to decide (a
2xx is sent: retrying it would send the message again). A refusal's body is read for the
provider's error code (`error_code`): JSON `{"code": ...}` (Twilio's REST error), or
`error_code` / `ErrorCode` (its Message resource and status callback). A code saying the
number itself takes no texts (`NUMBER_GONE_CODES`) is a hard bounce, as SMTP's 5.1.1
(`Permanent.bounced`: the number is listed, the user's `sms_bounce` event recorded:
`Delivery._bounced`); any other code, or none, is the refusal it was (4xx permanent, nothing
listed). A code saying the number's owner texted STOP to the sender (`OPTED_OUT_CODES`:
21610) is their opt-out of sms (`Permanent.opted_out`: `Delivery._opted_out`). Before, every 4xx
was the same `webhook 4xx` and a dead number was texted again by every campaign.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from ..security.secrets import Keyring
from .channels import json_bytes
from .errors import Permanent, Transient

if TYPE_CHECKING:
    import aiohttp

__all__ = ["WebhookSender", "webhook_body", "error_code", "code_of", "CODE_DIGITS",
           "KEY_ID_HEADER", "NUMBER_GONE_CODES", "OPTED_OUT_CODES", "RETRIED_STATUSES",
           "TOKEN_GONE_STATUS"]

KEY_ID_HEADER = "X-Tailor-Key-Id"
RETRIED_STATUSES = frozenset({408, 429})
"""Besides every 5xx: replies that say "later"."""
NUMBER_GONE_CODES = frozenset({21211, 21614, 21635, 30005, 30006})
"""Twilio's error codes that say the number takes no texts, for good: 21211 invalid 'To' number,
21614 'To' is not a valid mobile number, 21635 'To' cannot be a landline, 30005 unknown
destination handset (the number does not exist), 30006 landline or unreachable carrier. Not
30003 (unreachable handset: Twilio's own page says it is usually temporary, a phone off or
without signal), nor 21610 (the recipient texted STOP to the sender: an opt-out, not a bounce),
nor 21612 (no route from this sender: about the sender, not the number)."""
OPTED_OUT_CODES = frozenset({21610})
"""Twilio's error codes that say the number's owner opted out of texts from the sender: 21610,
they replied STOP to it and the carrier (the provider) refuses every text from it to the number
until START. The user's opt-out, recorded as an `unsubscribe` event on sms would be
(`Delivery._opted_out`); before, it was listed nowhere and every campaign texted it again (each
refused, each a dead letter). Read on the sms channel only: the push webhook's 4xx with the
same code is the refusal it is (before, it looked the push token up as a phone number and
raised KeyError)."""

TOKEN_GONE_STATUS = 410
"""The push webhook's reply saying the push token is no longer registered (the app was
uninstalled, or the token replaced): APNs's own status for it (`410 Unregistered`), which a
provider relay also answers for FCM's `UNREGISTERED`. A hard bounce of the token
(`Permanent.bounced`): the user's `push_token` is dropped while their profile holds it
(`Delivery._bounced`). Not 404, which a wrong webhook URL answers too. Before, every 4xx was the
same refusal and each campaign pushed to the dead token again (each a dead letter)."""


def webhook_body(message, to: str) -> bytes:
    """The JSON body of a composed SMS or push `message` to `to`."""
    return json_bytes({"id": message.decision_id, "channel": message.channel, "to": to,
                       "campaign_id": message.campaign_id, "parts": message.parts,
                       "send_at": message.send_at})


class WebhookSender:
    """POSTs signed bodies to each channel's URL over one aiohttp session (made lazily, in the
    running loop; `close()` ends it)."""

    def __init__(self, urls: dict[str, str], ring: Keyring, timeout: float = 10.0,
                 reply_bytes: int = 64 * 1024):
        import aiohttp  # here: a server without webhook URLs never loads the HTTP client

        self.urls = {channel: url for channel, url in urls.items() if url}
        self.ring, self.timeout = ring, aiohttp.ClientTimeout(total=timeout)
        self.reply_bytes = reply_bytes
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, s, ring: Keyring | None) -> WebhookSender | None:
        urls = {"sms": s.sms_webhook_url, "push": s.push_webhook_url}
        if not any(urls.values()) or ring is None:
            return None
        return cls(urls, ring, s.webhook_timeout_seconds, s.limits.webhook_reply_bytes)

    def headers(self, body: bytes) -> dict[str, str]:
        from ..http.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign  # loads aiohttp.web

        timestamp = str(int(time.time()))
        return {"Content-Type": "application/json", KEY_ID_HEADER: self.ring.kid,
                TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self.ring.key, body, timestamp)}

    async def post(self, channel: str, body: bytes) -> None:
        """One attempt: returns on 2xx, raises `Transient` or `Permanent` otherwise."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        try:
            async with self._session.post(self.urls[channel], data=body, headers=self.headers(body),
                                          allow_redirects=False) as reply:
                status = reply.status
                body = await _drain(reply, self.reply_bytes, keep=not 200 <= status < 300)
        except TimeoutError:
            raise Transient("webhook timeout") from None
        except aiohttp.ClientError as err:
            raise Transient(f"webhook {type(err).__name__}") from None
        if 200 <= status < 300:
            return
        if status >= 500 or status in RETRIED_STATUSES:
            raise Transient(f"webhook {status}")
        code = error_code(body)
        reason = f"webhook {status}" if code is None else f"webhook {status} code {code}"
        # the codes are texts' (Twilio's): a push provider's says nothing of a number
        gone = status == TOKEN_GONE_STATUS if channel == "push" else code in NUMBER_GONE_CODES
        raise Permanent(reason, bounced=gone, opted_out=channel == "sms" and code in OPTED_OUT_CODES)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def error_code(body: bytes) -> int | None:
    """The provider's error code in a refusal's JSON body (`code`, `error_code` or `ErrorCode`,
    a number or its digits), None when there is none (not JSON, not an object, no such field)."""
    try:
        reply = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(reply, dict):
        return None
    for name in ("code", "error_code", "ErrorCode"):
        code = code_of(reply.get(name))
        if code is not None:
            return code
    return None


CODE_DIGITS = 9
"""At most this many digits in a provider's error code (Twilio's have 5): the reply is untrusted,
and the code goes into the refusal's reason (a dead letter's, the recipient's that
GetSendProgress counts by)."""


def code_of(value) -> int | None:
    """A provider's error code given as a JSON number or its digits (at most `CODE_DIGITS`, not
    negative); None for anything else. Before, a JSON number was taken whole: one of hundreds
    of digits (or a negative one) was copied into the refusal's reason."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10 ** CODE_DIGITS:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() \
            and len(value) <= CODE_DIGITS:
        return int(value)
    return None


async def _drain(reply, most: int, keep: bool = False) -> bytes:
    """Read `reply`'s body so its connection is reused; the body when `keep` (a refusal's: its
    error code), else b"". Past `most` bytes, or when it stalls past the timeout or breaks off,
    close the connection instead (b"": the status decides)."""
    import aiohttp

    read, chunks = 0, []
    try:
        async for chunk in reply.content.iter_any():
            read += len(chunk)
            if read > most:
                break
            if keep:
                chunks.append(chunk)
        else:
            return b"".join(chunks)
    except (TimeoutError, aiohttp.ClientError):
        pass
    reply.close()
    return b""
