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
whole body (a trailing "." or "!" aside), opts back in what a STOP (or another opt-out)
closed, never giving a consent not given before (`contact.consent.reopens`), nor reopening a
transactional opt-out given elsewhere (SetConsent).
YES is no keyword: "Yes" (or "Yes, see you then") to a transactional text restarted the
marketing texts of a user who had texted STOP. Anything else is ignored. The consent change
carries the signed time (at most `event_future_tolerance_s` ahead of ours: a provider's clock
further ahead, within the webhook's tolerance, was refused as a change from the future, a 400
the provider does not retry), so a START signed before a later STOP does not reopen SMS. A
number no SMS went to is ignored too (200, so the provider does not retry), and so is a reply
of a user erased since (it would bring their profile back: `ErasedSince`). The sender is found
through `PhoneIndex` (hashed numbers): every profile texted at the number is changed (several
may share one).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import unicodedata
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote_plus

from aiohttp import web

from ..config import DEFAULT_CONSENT
from ..contact.consent import TRANSACTIONAL, consent_entry, consent_reason, reopens
from ..interfaces import ConsentWriter, ProfileMetas
from ..messages.phones import PhoneIndex
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


CHUNK = 500
"""Profiles a reply changes per write transaction (`SmsInbound._write`)."""


class SmsInbound:
    def __init__(self, signed: SignedRequests, phones: PhoneIndex, consent: ConsentWriter,
                 future_s: float = 300.0, metas: ProfileMetas | None = None,
                 defaults: Mapping[str, str] = DEFAULT_CONSENT):
        """`future_s`: how far ahead of now a consent change may be dated (Settings
        `event_future_tolerance_s`); `metas` (the profiles' meta records) and `defaults`
        (Settings `consent_defaults`): a START re-opens only what a STOP closed
        (`contact.consent.reopens`)."""
        self.signed, self.phones, self.consent, self.future_s = signed, phones, consent, future_s
        self.metas, self.defaults = metas, dict(defaults)

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
        source, only = f"sms reply {word}", _whole(text) == word
        # the unnamed first: one named in between is then in `users` (`still_indexed`)
        tokens = await asyncio.to_thread(self.phones.unnamed, sender)
        users = await asyncio.to_thread(self.phones.lookup, sender)  # all who share it
        metas = await asyncio.to_thread(self.metas.metas, users) if self.metas is not None \
            else [None] * len(users)
        # `existing`: a reply changes a profile that exists, never brings one back (one erased
        # since, signed before or no profile since, is skipped)
        changed = await self._write(self._grouped(users, metas, opted_in, only), functools.partial(
            self.consent.set_consents, channel="sms", opted_in=opted_in, source=source,
            timestamp=dated, existing=True))
        for user in sorted(changed):
            logger.info("sms %s from %s", word, user_ref(user))
        unnamed = await self._change_unnamed(tokens, opted_in, only, source, dated)
        return web.Response(text="ok" if changed or unnamed else "unknown number")

    async def _change_unnamed(self, tokens: list[bytes], opted_in: bool, only: bool,
                              source: str, dated: float) -> int:
        """The change of the profiles indexed at the number by token alone, `tokens` (stored
        before the index, their id nowhere in the store: `PhoneIndex.unnamed`); how many
        changed."""
        if not tokens:
            return 0
        metas = await asyncio.to_thread(self.metas.unnamed_metas, tokens) \
            if self.metas is not None else [None] * len(tokens)
        changed = await self._write(self._grouped(tokens, metas, opted_in, only), functools.partial(
            self.consent.set_unnamed_consents, channel="sms", opted_in=opted_in, source=source,
            still=self.phones.still_indexed, timestamp=dated))
        if changed:
            logger.info("sms %s: %d unnamed profiles at the number", source, len(changed))
        return len(changed)

    @staticmethod
    async def _write(groups: dict[str, list], write) -> set:
        """`await write(ids, purpose=...)` of each purpose's profiles, `CHUNK` a call (one
        write transaction: a STOP from a number 1,000 profiles share took 2,000 fsync'd
        writes, 7.2 s of the provider's call); the profiles changed."""
        changed = set()
        for purpose, ids in groups.items():
            for start in range(0, len(ids), CHUNK):
                changed.update(await write(ids[start:start + CHUNK], purpose=purpose))
        return changed

    def _grouped(self, ids: list, metas: list, opted_in: bool, only: bool) -> dict[str, list]:
        """{purpose: the profiles of `ids` whose `purpose` the reply changes} (`_purposes` of
        each one's meta record), marketing first."""
        groups: dict[str, list] = {"marketing": [], "transactional": []}
        for profile, meta in zip(ids, metas):
            for purpose in self._purposes(meta, opted_in, only):
                groups[purpose].append(profile)
        return {purpose: group for purpose, group in groups.items() if group}

    def _purposes(self, meta, opted_in: bool, only: bool) -> list[str]:
        """The purposes a reply changes for one profile: a STOP closes marketing and
        transactional texts (the carriers block the number: nothing but the STOP's
        confirmation may follow it), a transactional opt-out given elsewhere left as it is; a
        START reopens what a STOP closed, giving no consent not given before (`reopens`).
        `only`: the reply is the opt-out word alone; a reply merely starting with one ("Cancel
        my 3pm appointment") closes marketing only (carriers block the number on a
        single-word reply only)."""
        if not opted_in and not only:
            return ["marketing"]
        if opted_in and self.metas is not None:
            return [p for p, ok in (("marketing", reopens(meta, "sms", self.defaults)),
                                    ("transactional", _stopped(meta))) if ok]
        if not opted_in and consent_reason(meta, "sms", TRANSACTIONAL, self.defaults):
            return ["marketing"]  # closed already: START must not reopen it
        return ["marketing", "transactional"]


def _stopped(meta) -> bool:
    """Whether the SMS transactional texts are closed by an SMS reply (a STOP)."""
    entry = consent_entry(meta, "sms", TRANSACTIONAL)
    return entry is not None and not entry.get("opted_in") and \
        str(entry.get("source", "")).startswith("sms reply ")


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
