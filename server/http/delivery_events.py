"""Bounce and complaint reports from the email provider: they feed the suppression list.

    POST /delivery/events   JSON {"type": "bounce" | "complaint",
                                  "address": <the address that bounced or complained>,
                                  "message_id": "<decision id@message_id_domain>"
                                  (or "decision_id": ...)}
                            signed under a key of the `delivery-events` keyring (headers
                            `X-Tailor-Timestamp`, `X-Tailor-Signature`: `server.http.signing`)

The endpoint exists only with the optional `delivery-events` keyring; every key verifies. A
missing, wrong or stale signature is 401, a replayed one 409, a malformed report 400 naming the
field; none changes anything.

The user is found through the message: its Message-ID carries the decision id, and the decision
log knows whose decision it is. Then an `email_bounce` / `email_complaint` event is recorded for
that user (event id `tailor:<type>-<decision id>`, so a report delivered twice counts once, with the
`decision_id` attribute): the suppression list follows it (`contact.suppression`, the user's
`email` attribute), as do caps and attribution. The reported address itself is listed too, by
its keyed hash (it may differ from the profile's address by now). A report naming no known
message lists the address alone. Each report answers 200 with what happened, so the provider
does not retry it.

The SMS provider's status callback of a text that did not arrive comes the same way, with
`"channel": "sms"`: JSON {"type": "bounce", "channel": "sms", "decision_id": <the webhook body's
`id`>, "address": <the number>, "error_code": <the provider's code, a number or its digits>}.
A code saying the number takes no texts for good (`webhook.NUMBER_GONE_CODES`) lists the
number and records the user's `sms_bounce` event, as the provider's synchronous refusal with it
does (`Delivery._bounced`); a code saying the number's owner texted STOP to the sender
(`webhook.OPTED_OUT_CODES`: 21610) stops the number as a STOP texted from it does (every
profile the address index holds there that holds it, marketing and transactional texts: the
carrier blocks them all; a report naming the number alone is enough), and records the user's `unsubscribe`
event on sms while their profile holds the number, as the synchronous refusal with it does
(`Delivery._opted_out`; nothing listed); any other code (30003: a phone off, usually for a
while) records nothing (`address_listed` false). An SMS report is a bounce with a code (400
otherwise).
"""
from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from ..contact.addresses import CHANNEL_KIND, EMAIL, PHONE, normalize
from ..errors import InvalidArgument
from ..interfaces import DecisionOwners, EventRecorder
from ..limits import Limits
from ..messages.deadletters import sent_event_id
from ..messages.reports import record_opt_out, record_report
from ..messages.webhook import CODE_DIGITS, NUMBER_GONE_CODES, OPTED_OUT_CODES, code_of
from ..security.userref import user_ref
from ..validation import check_id, check_known, check_text
from .signing import SignedRequests

__all__ = ["DeliveryEvents", "REPORT_TYPES"]

logger = logging.getLogger("tailor.http.delivery")

REPORT_TYPES = {"bounce": "email_bounce", "complaint": "email_complaint"}
"""Report type -> the tracked event type it records (an email's)."""
SMS_BOUNCE = "sms_bounce"
"""The tracked event type an SMS report whose code says the number is gone records."""
SMS_OPT_OUT = "unsubscribe"
"""The tracked event type an SMS report whose code says the owner opted out records."""
REPORT_CHANNELS = tuple(c for c, kind in CHANNEL_KIND.items() if kind in (EMAIL, PHONE))
"""The channels a report may name: email and sms (a push token gone is the push webhook's
410 at the send, `messages.webhook.TOKEN_GONE_STATUS`)."""


_JSON_TYPES = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


def text_field(report: dict, name: str) -> str:
    """The report's `name` field ("" when absent or null); InvalidArgument for one that is not
    a string: a number, list or object is not what the provider meant (read as its text, a
    `decision_id` of {"a": 1} found no message and the report answered 200)."""
    value = report.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        kind = _JSON_TYPES.get(type(value), "value")
        raise InvalidArgument(name, f"must be a string, not a JSON {kind}")
    return value


def decision_of(report: dict, limits: Limits) -> str:
    """The decision id a report names (`decision_id`, or the local part of `message_id`)."""
    given = text_field(report, "decision_id")
    message_id = text_field(report, "message_id")
    if not given and message_id:
        message_id = check_text("message_id", message_id, limits.address_chars)
        given = message_id.strip().strip("<>").rsplit("@", 1)[0]
    return check_id("decision_id", given, limits.id_bytes) if given else ""


class DeliveryEvents:
    def __init__(self, signed: SignedRequests, owners: DecisionOwners, events: EventRecorder,
                 suppressions, limits: Limits, stops=None):
        """`suppressions`: the suppression list (`contact.Suppressions.add`); `stops`
        (`messages.stops.SmsStops`): a 21610 stops the number as a STOP reply does."""
        self.signed, self.owners, self.events = signed, owners, events
        self.suppressions, self.limits, self.stops = suppressions, limits, stops

    async def handle(self, request: web.Request) -> web.Response:
        body, _ = await self.signed.read(request)
        try:
            report = json.loads(body)
            if not isinstance(report, dict):
                raise ValueError("not a JSON object")
        except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
            raise web.HTTPBadRequest(text=f"body: not a JSON report ({err})") from None
        return web.json_response(await self.apply(report))  # errors: `public._errors`

    def checked(self, report: dict) -> tuple[str, str, str]:
        """The tracked event type the report records ("" for an SMS one whose code lists
        nothing), its decision id and address, every field checked: a bad one is refused
        before anything is recorded (a 400 changes nothing)."""
        kind = check_known("type", text_field(report, "type"), tuple(REPORT_TYPES))
        channel = check_known("channel", text_field(report, "channel") or "email",
                              REPORT_CHANNELS)
        decision = decision_of(report, self.limits)
        address = text_field(report, "address")
        if not decision and not address:
            raise InvalidArgument("address", "a report names a message_id (or decision_id), an "
                                  "address, or both")
        if address:
            kind_of = CHANNEL_KIND[channel]
            normalize(kind_of, address, self.limits.address_chars, f"address.{kind_of}")
        if channel == "email":
            return REPORT_TYPES[kind], decision, address
        if kind != "bounce":
            raise InvalidArgument("type", "an sms report is a bounce")
        code = code_of(report.get("error_code"))
        if code is None:
            raise InvalidArgument("error_code", "an sms report carries the provider's error "
                                  f"code (a number of at most {CODE_DIGITS} digits)")
        return (SMS_BOUNCE if code in NUMBER_GONE_CODES else
                SMS_OPT_OUT if code in OPTED_OUT_CODES else ""), decision, address

    async def apply(self, report: dict) -> dict:
        """Record the report; what happened (`user_found`, `address_listed`)."""
        event_type, decision, address = self.checked(report)
        received = time.time()  # the event's time, before its user is looked up: a user erased
        owner = await self.owners.decision_owner(decision) if decision else None  # meanwhile
        user, campaign = owner or (None, "")  # is not brought back (refused as late)
        if not event_type:  # an sms code that says nothing for good about the number
            return {"user_found": owner is not None, "address_listed": False}
        if event_type == SMS_OPT_OUT:
            await self._opted_out(user, campaign, decision, address, received)
            return {"user_found": owner is not None, "address_listed": False}
        if await record_report(self.events, self.suppressions, event_type, address,
                               user, campaign, decision, received):
            logger.info("%s of %s (decision %s)", event_type, user_ref(user), decision)
        return {"user_found": owner is not None, "address_listed": bool(address)}

    async def _opted_out(self, user: str | None, campaign: str, decision: str, address: str,
                         received: float) -> None:
        """A report saying the number's owner texted STOP to the sender: the number stopped
        as a STOP reply from it stops it (every profile the index holds there, marketing and
        transactional; the address alone is enough), and the `unsubscribe` event on sms of
        the message's user (None: not known) recorded, unless their profile holds another
        number than the one reported (`Suppressions.holds`; `reports.record_opt_out`). A
        report of a text that went before a profile's latest opt-in (a START since: the
        decision's `sms_sent` event's time, `sent`) closes nothing of it."""
        sent = await self.events.recorded_at(sent_event_id(decision)) if decision else None
        if await record_opt_out(self.events, self.suppressions, "sms", address, user, campaign,
                                decision, received, self.stops, sent):
            logger.info("sms opt-out of %s reported (decision %s)", user_ref(user), decision)
