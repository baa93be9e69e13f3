"""The SMS provider's inbound webhook: STOP / START replies change the user's SMS consent.

    POST /sms/inbound   form fields `From` (the sender's number; a leading "+" may be
                        written as it is or as %2B) and `Body` (the text),
                        signed under a key of the `sms-webhook` keyring (headers
                        `X-Tailor-Timestamp` and `X-Tailor-Signature`, `server.http.signing`)

The endpoint exists only when the optional `sms-webhook` keyring is provided
(`TAILOR_SECRET_SMS_WEBHOOK` or `<secrets_dir>/sms-webhook.keys`, `server.security.secrets`);
every key of it verifies, so the provider's secret can change without dropping replies.
A missing, wrong or stale signature is 401, a replayed one 409; both change nothing. The first
word of the body (the symbols around it dropped, a leading "please" read past) opts the
sender out of SMS when it is STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT
("opt out", "opt-out"), ARRET or REMOVE, or the whole body is TD (accents and full-width
letters folded: "Arrêt"):
marketing and transactional texts both when the reply is the word alone, a trailing "." or
"!" aside (carriers block the number after such a STOP until START, and CTIA asks that nothing
but its confirmation follow it: a receipt sent after it was refused by the provider, a dead
letter, or reached the person who said STOP); a reply that only starts with one ("Cancel my
3pm appointment", "Please remove the 2nd item") closes marketing only, as no carrier blocks
on it (it closed the user's codes and receipts too until they texted START). START or UNSTOP, as the
whole body (a trailing "." or "!" aside), opts back in what a STOP (a reply, a carrier's 21610)
closed, never giving a consent not given before (`contact.consent.reopens`), nor reopening an
opt-out given by other means (SetConsent, a one-click link, an `unsubscribe` event a client
tracked), whatever its time (`contact.consent.closed_by_stop`).
YES is no keyword: "Yes" (or "Yes, see you then") to a transactional text restarted the
marketing texts of a user who had texted STOP. Anything else is ignored. The consent change
carries the signed time (at most `event_future_tolerance_s` ahead of ours: a provider's clock
further ahead, within the webhook's tolerance, was refused as a change from the future, a 400
the provider does not retry), so a START signed before a later STOP does not reopen SMS. A
number no SMS went to is ignored too (200, so the provider does not retry), and so is a reply
of a user erased since (it would bring their profile back: `ErasedSince`). The sender is found
through `PhoneIndex` (hashed numbers): every profile texted at the number is changed (several
may share one), by `messages.stops.SmsStops`, which a provider's 21610 (the carrier's block
of the number) goes through too.
"""
from __future__ import annotations

import logging
import re
import time
import unicodedata
from urllib.parse import parse_qs, unquote_plus

from aiohttp import web

from ..messages.stops import REPLY_SOURCE, SmsStops
from ..security.userref import user_ref
from .signing import SignedRequests

__all__ = ["SmsInbound", "STOP_WORDS", "WHOLE_STOP_WORDS", "START_WORDS"]

logger = logging.getLogger("tailor.http.sms")

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE",
                        "OPTOUT", "ARRET", "REMOVE"})
"""The carriers' words (the US and Canadian list AWS End User Messaging requires: ARRET,
CANCEL, END, OPT-OUT, OPTOUT, QUIT, REMOVE, STOP, TD, UNSUBSCRIBE; ARRET is French, for
Canada) and those 47 CFR 64.1200(a)(12) names ("stop", "quit", "end", "revoke", "opt out",
"cancel", "unsubscribe"; "opt out" and "opt-out" read as OPTOUT)."""
WHOLE_STOP_WORDS = frozenset({"TD"})
"""Opt-out words read only as the whole reply: "TD Bank called" is none."""
START_WORDS = frozenset({"START", "UNSTOP"})
"""CTIA's re-subscribe keywords, read only as the whole reply (`_keyword`). Not YES: "Yes" to
a transactional text ("Reply YES to confirm") restarted the marketing texts of a user who
had texted STOP; a flow that needs a YES records its own consent."""
_OPT_OUT = re.compile(r"\bOPT[\s-]+OUT\b")
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")
"""The symbols around a word (punctuation, quotes, emoji)."""
_POLITE = frozenset({"PLEASE", "PLS", "PLZ"})
"""Words read past before an opt-out word ("Please stop")."""


class SmsInbound:
    def __init__(self, signed: SignedRequests, stops: SmsStops, future_s: float = 300.0):
        """`stops`: the consent change of every profile at a number (`messages.stops`, shared
        with a provider's 21610); `future_s`: how far ahead of now a consent change may be
        dated (Settings `event_future_tolerance_s`)."""
        self.signed, self.stops, self.future_s = signed, stops, future_s

    async def handle(self, request: web.Request) -> web.Response:
        body, signed_at = await self.signed.read(request)
        raw = body.decode("utf-8", "replace")
        sender, text = _sender(raw), parse_qs(raw).get("Body", [""])[0]
        word = _keyword(text)
        opted_in = False if word in STOP_WORDS or word in WHOLE_STOP_WORDS else \
            True if word in START_WORDS else None
        if opted_in is None:
            return web.Response(text="ignored")
        dated = min(signed_at, time.time() + self.future_s)  # a clock ahead
        changed, unnamed = await self.stops.change(sender, opted_in, _whole(text) == word,
                                                   f"{REPLY_SOURCE}{word}", dated)
        for user in sorted(changed):
            logger.info("sms %s from %s", word, user_ref(user))
        return web.Response(text="ok" if changed or unnamed else "unknown number")


def _sender(form: str) -> str:
    """The form's first `From`, decoded. A leading "+" written as it is (not `%2B`) is the
    number's own: form decoding reads it as a space, and " 447700900123" is no E.164 number,
    so such a provider's STOP matched nobody (a form's space never starts a number)."""
    for field in form.split("&"):
        name, _, value = field.partition("=")
        if unquote_plus(name) == "From":
            decoded = unquote_plus(value)
            return "+" + decoded[1:] if value.startswith("+") else decoded
    return ""


def _keyword(text: str) -> str:
    """The reply's keyword ("" for none), upper-cased. An opt-out word is read generously, as
    the first word holding a letter or digit, without the symbols around it ("Stop, please",
    "Stop🛑", "\"STOP\"" and "🛑 Stop" are STOP; "opt out" and "opt-out" are OPTOUT), after a
    leading "please" ("Please stop"): being generous with an opt-out is safe. An opt-in word only as the
    whole reply, a trailing "." or "!" aside ("Start!"; "Start the car" is none)."""
    upper = _folded(text).strip().upper()
    words = [w for w in (_EDGES.sub("", t) for t in _OPT_OUT.sub("OPTOUT", upper).split()) if w]
    first = words[1] if len(words) > 1 and words[0] in _POLITE else words[0] if words else ""
    if first in STOP_WORDS:
        return first
    whole = _whole(text)
    return whole if whole in START_WORDS or whole in WHOLE_STOP_WORDS else ""


def _whole(text: str) -> str:
    """The whole reply, folded and upper-cased, a trailing "." or "!" aside ("OPT OUT" read
    as OPTOUT): the keyword a carrier blocks the number on, and START is read as."""
    whole = _folded(text).strip().upper().rstrip(".!").rstrip()
    return _OPT_OUT.sub("OPTOUT", whole) if _OPT_OUT.fullmatch(whole) else whole


def _folded(text: str) -> str:
    """`text` without accents, full-width letters as ASCII ("Arrêt" is ARRET, "ＳＴＯＰ" STOP:
    a reply typed on a French or CJK keyboard was ignored)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))
