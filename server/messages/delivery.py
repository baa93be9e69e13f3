"""Hand a composed message to its channel's adapter, retry, keep dead letters, record the send.

Adapters: email over SMTP (`smtp.SmtpSender`, optionally DKIM-signed by `dkim.DkimSigner`),
SMS and push through the provider's HTTP webhook (`webhook.WebhookSender`). Every attempt's
failure is transient or permanent; `retry.Retry` retries the transient ones with backoff, and a
message that still did not go is kept as a dead letter (`deadletters.DeadLetters`) with its
bytes, to be listed (`ListDeadLetters`) and retried (`RetryDeadLetter`).

Each delivered message records a `<channel>_sent` event carrying the decision id (event id
`tailor:sent-<decision id>`, so a repeated delivery of one decision is recorded once), which caps,
rewards and attribution read. ComposeMessage's and RetryDeadLetter's are dated when the message
was handed to the adapter, so for a user erased while the adapter took its time the ingestion
refuses the event (from before the erasure) rather than build them a new profile.
SendCampaign uses the parts separately: `flatten` (at composition), `send_or_bury` (the bytes
stored before delivery), and `record_sent` (its events, in batches). A stored message
(SendCampaign's, a dead letter) is held against the contact policy's consent and suppression
list, and against today's address rules (one stored by a Tailor from before a rule), again
just before it goes (`refusal`), ComposeMessage's just before its hand-over, and
every message before each retry after a transient failure (`still`): an opt-out, an erasure,
a suppressed address or an archive since the decision stops it (`NoLongerAllowed`, no dead
letter kept); a send job adds its cancel to that check (`SendJob._still`).
"""
from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from email.utils import parseaddr

from contract.keyring import keyring_path

from ..batching import exempt
from ..contact.addresses import labelled_domain
from ..contact.consent import MARKETING
from ..contact.policy import ADDRESS_ATTRIBUTES
from ..errors import FailedPrecondition, TailorError
from ..interfaces import EventRecorder
from ..limits import DEFAULT_LIMITS, Limits
from ..profiles import TrackedEvent
from ..security.secrets import MissingSecret
from ..security.userref import user_ref
from ..validation import check_id, check_known, check_range
from .breaker import BounceBreaker
from .channels import MESSAGE_CHANNELS
from .deadletters import DeadLetter, DeadLetters, sent_event_id
from .dkim_signer import DkimSigner
from .errors import (
    BadAddress,
    DeadLetterNotFound,
    DeliveryRefused,
    DeliveryUnavailable,
    NoLongerAllowed,
    Permanent,
    RelayRefused,
    Transient,
)
from .gate import SendGate
from .handovers import Handovers
from .logging import logger
from .once import Once
from .phones import normalize_phone
from .reports import record_opt_out, record_report
from .retry import Retry
from .smtp import SmtpConfig, SmtpSender
from .webhook import WebhookSender, webhook_body
from .wire import email_bytes

__all__ = ["Delivery", "sent_event", "address_of", "MISSING_ADDRESS", "UNDELIVERED"]

"""The profile attribute each channel's messages go to (the contact policy prefers channels
the user has one for: `contact.policy.Contact.reachable`)."""
MISSING_ADDRESS = {"email": "no email address", "sms": "no phone number",
                   "push": "no push token"}
"""SendCampaign's failure reason for a user without that attribute."""
UNDELIVERED = (DeliveryRefused, DeliveryUnavailable)
"""What a message that did not go raises (it is a dead letter by then)."""
_EMAIL_PART = r"[^\x00-\x20\x7f-\U0010ffff()<>\[\]:;@\\,\"]+"
_EMAIL = re.compile(f"{_EMAIL_PART}@{_EMAIL_PART}")
"""An address SMTP carries without SMTPUTF8 (not asked for), one that also stays one header
value: printable ASCII, no whitespace, no `<>"` or other specials of RFC 5322, one `@`; its
domain's dots are `contact.addresses.labelled_domain`'s (UpsertAttributes' rule too)."""


def address_of(channel: str, attributes) -> str:
    """The address a message on `channel` goes to: the user's `ADDRESS_ATTRIBUTES[channel]` attribute,
    surrounding whitespace dropped (a phone number in its E.164 form); "" when there is none;
    `BadAddress` when it is no address the adapter can carry (checked before flattening: a
    CR/LF or non-ASCII address breaks the email, or the relay's RCPT) or whose opt-out could
    not be honoured (a phone number without its country code: a STOP from it, reported in
    E.164, would find no one, and the suppression list holds E.164 numbers only)."""
    to = (attributes.get(ADDRESS_ATTRIBUTES[channel]) or "").strip()
    if to and channel == "email" and not (_EMAIL.fullmatch(to) and labelled_domain(to)):
        raise BadAddress(channel, ADDRESS_ATTRIBUTES[channel])
    if to and channel == "sms":
        to = normalize_phone(to)
        if to is None:
            raise BadAddress(channel, ADDRESS_ATTRIBUTES[channel])
    return to


def stored_address_refusal(channel: str, to: str) -> str | None:
    """`BadAddress.reason` when a stored message's address `to` is none `address_of` gives
    today (a message composed by a Tailor from before a rule: `Ann@Example.ORG.`, which a
    lenient relay delivers to ann@example.org while the suppression list holds that spelling
    apart, so a complaint's listing did not stop it); None when it is one."""
    try:
        address_of(channel, {ADDRESS_ATTRIBUTES[channel]: to})
    except BadAddress as err:
        return err.reason
    return None


def sent_event(channel: str, campaign_id: str, decision_id: str, user_id: str,
               at: float) -> TrackedEvent:
    """The `<channel>_sent` event of a delivered message (its id fixed by the decision)."""
    return TrackedEvent(sent_event_id(decision_id), user_id, f"{channel}_sent", channel, campaign_id,
                        "", 0.0, at, {"decision_id": decision_id}, by_server=True)


BOUNCE_EVENTS = {"email": "email_bounce", "sms": "sms_bounce"}
"""The event a hard bounce on a channel records (`Delivery._bounced`; push tokens are not
listed: a gone one is dropped from the profile, `Delivery._token_gone`)."""
NOT_LISTED = {"email": "the addresses held are not listed",
              "sms": "the numbers held are not listed",
              "push": "the tokens held are not dropped"}
"""What a send job's tripped breaker leaves undone, per channel, in its log line (what each
channel's hard bounce does: list the address or number, drop the push token; the line said
"addresses" on every channel)."""
BOUNCING_CHANNELS = tuple(NOT_LISTED)
"""The channels whose hard bounces a send job's breaker judges (`breaker.BounceBreaker`): a
relay answering every push `410` (an endpoint retired: `410 Gone`) would drop every token of the
audience, as one answering 5.1.1 to every address would list them."""
RELAY_CHECK_SECONDS = 2.0
"""How long `Delivery.check_relay` waits for the relay's session before it lets the job start
(as for a relay not reachable): well within a SendCampaign's deadline (the CLI's is 5 s),
where `smtp_timeout_seconds` is per command (10 s by default: a relay that took the connection
and said nothing held the call past that deadline, and no job started, however often
repeated). A relay answering slower than this is only not checked."""


class Delivery:
    def __init__(self, smtp: SmtpSender | None, sender: str, events: EventRecorder, *,
                 webhooks: WebhookSender | None = None, retry: Retry | None = None,
                 dead: DeadLetters | None = None, dkim=None, limits: Limits = DEFAULT_LIMITS,
                 gate: SendGate | None = None, suppressions=None):
        """`gate`: asks the contact policy again before a stored message goes (none: not);
        `suppressions`: the list a hard bounce at the relay puts the address on
        (`contact.Suppressions.add`; none: only the bounce event is recorded)."""
        self.smtp, self.sender, self.events, self.webhooks = smtp, sender, events, webhooks
        self.suppressions = suppressions
        self.retry, self.dead, self.dkim, self.gate = retry or Retry(), dead, dkim, gate
        self.limits = limits
        self.claim_seconds = self._longest_send(retry or Retry()) + 60.0
        """How long a RetryDeadLetter's claim, or a request id's delivery claim (`Once`),
        holds without a renewal (renewed every third of it while the retry or send runs): its
        attempts at most, and a margin (a worker that died mid-send leaves a claim that lapses
        after it)."""
        self.envelope = parseaddr(sender)[1]
        """The envelope sender (MAIL FROM): the address of `sender`."""
        self.addresses: dict = {}
        """Channel -> its `phones.AddressIndex` (set by the app): the address a text goes to
        is indexed as it goes (`_went`)."""
        self.stops = None
        """`stops.SmsStops` (set by the app): a 21610 stops the number as a STOP reply does
        (`_opted_out`); None: the user's unsubscribe event alone."""
        self.profiles = None
        """`profiles.Profiles` (set by the app): a push token the provider says is gone is
        dropped from the profile holding it (`_token_gone`); None: kept."""
        self.handovers = Handovers(limits.detached_deliveries)
        """ComposeMessage's hand-overs and RetryDeadLetter's retries, which their caller
        giving up does not stop (the server's stop ends them within its grace:
        `Handovers.close`)."""

    def _longest_send(self, retry: Retry) -> float:
        """Seconds `send` can take at most: every attempt timing out (an SMTP exchange is a
        handful of commands, each with the timeout), and the backoffs between them."""
        per_attempt = max(8 * self.smtp.config.timeout if self.smtp is not None else 0.0,
                          self.webhooks.timeout.total if self.webhooks is not None else 0.0)
        return retry.attempts * per_attempt + sum(retry.delay(i) for i in range(1, retry.attempts))

    @classmethod
    def from_settings(cls, s, events: EventRecorder, store, ring,
                      gate: SendGate | None = None, suppressions=None) -> Delivery:
        """The adapters `Settings` configure; `ring`: the optional `delivery-webhook` keyring
        (a webhook URL without it refuses to start)."""
        if (s.sms_webhook_url or s.push_webhook_url) and ring is None:
            raise MissingSecret("delivery-webhook", keyring_path("delivery-webhook", s.secrets_dir))
        smtp = SmtpConfig.from_settings(s)
        return cls(SmtpSender(smtp) if smtp else None, s.smtp_from, events,
                   webhooks=WebhookSender.from_settings(s, ring), retry=Retry.from_settings(s),
                   dead=DeadLetters(store, s.limits.profile_export_message_bytes),
                   dkim=DkimSigner.from_settings(s), limits=s.limits, gate=gate,
                   suppressions=suppressions)

    # -- adapters ------------------------------------------------------------------------------
    def check_adapter(self, channel: str) -> None:
        if channel == "email" and self.smtp is None:
            raise FailedPrecondition("deliver: no SMTP relay configured (setting smtp_host: "
                                     "TAILOR_SMTP_HOST)")
        if channel != "email" and (self.webhooks is None or channel not in self.webhooks.urls):
            raise FailedPrecondition(f"deliver: no {channel} webhook configured "
                                     f"(setting {channel}_webhook_url: TAILOR_{channel.upper()}_WEBHOOK_URL, "
                                     "and the delivery-webhook keyring)")

    def check_adapters(self, channels) -> None:
        """FailedPrecondition (`check_adapter` of the first) unless one of a campaign's
        `channels` (`CampaignSpec.message_channels`) has an adapter: its messages are chosen
        among the channels that have one (`Contact.reachable`)."""
        if not any(self.has_adapter(c) for c in channels):
            self.check_adapter(channels[0])

    async def check_relay(self, channels) -> None:
        """`RelayRefused` when the SMTP relay refuses Tailor's session for good (its login:
        535) and `channels` (a SendCampaign's) include email: checked as a job starts. Before,
        a wrong smtp_password made every recipient of the audience a dead letter, each a logged
        contact that the frequency caps counted against the user. A relay not reachable now
        (or not through its login within `RELAY_CHECK_SECONDS`) is no reason to refuse: the
        job's messages retry as they go. The session is a new one, as the job's lanes are:
        the shared one may have logged in before the relay stopped taking the password (a
        NOOP on it passed, then each of the job's 535)."""
        if "email" not in channels or self.smtp is None:
            return
        relay = SmtpSender(self.smtp.config)  # as `connection` gives the job's lanes
        try:
            await asyncio.wait_for(relay.check(), RELAY_CHECK_SECONDS)
        except Permanent as err:
            raise RelayRefused(err.reason) from None
        except (TimeoutError, Transient):
            return
        finally:
            await relay.close()

    def has_adapter(self, channel: str) -> bool:
        try:
            self.check_adapter(channel)
        except FailedPrecondition:
            return False
        return True

    def flatten(self, message, to: str) -> bytes:
        """The message as the bytes its adapter gets: the email (DKIM-signed when a key is
        configured) or the webhook's JSON body."""
        if message.channel != "email":
            return webhook_body(message, to)
        data = email_bytes(message, to, self.sender)
        return data if self.dkim is None else self.dkim.sign(data)

    def connection(self) -> SmtpSender:
        """Another connection to the relay (SendCampaign's lanes; the caller closes it)."""
        self.check_adapter("email")
        return SmtpSender(self.smtp.config)

    # -- sending -------------------------------------------------------------------------------
    def ready(self, message, attributes) -> tuple[str, bytes]:
        """(address, flattened bytes) of `message`, to send now or, deferred by the contact
        policy, at its send_at (`jobs.SendJobs.schedule`). FailedPrecondition when it cannot
        go at all (no adapter, no address, one the adapter cannot carry): nothing was tried."""
        self.check_adapter(message.channel)
        to = address_of(message.channel, attributes)
        if not to:
            raise FailedPrecondition(f"deliver: the user has no `{ADDRESS_ATTRIBUTES[message.channel]}` "
                                     "attribute")
        return to, self.flatten(message, to)

    async def hand(self, message, user_id: str, to: str, data: bytes, once: Once | None = None
                   ) -> bool:
        """`deliver` of a message `ready` gave (`to`, `data`)."""
        handed = None if once is None else await once.claim(time.time() + self.claim_seconds)
        if handed is None:
            renewing = None if once is None else asyncio.ensure_future(self._keep_once(once))
            try:
                handed = await self._hand_over(message, user_id, to, data, once)
            finally:
                if renewing is not None:
                    renewing.cancel()
        with exempt():  # the message went: its event is never refused as overload
            await self.events.track([sent_event(message.channel, message.campaign_id,
                                                message.decision_id, user_id, handed)])
        return True

    async def _hand_over(self, message, user_id: str, to: str, data: bytes,
                         once: Once | None) -> float:
        """`send_or_bury` the flattened `message`; when it was handed over (its event's time:
        a user erased meanwhile is not brought back). `once` keeps the outcome. The contact
        policy is asked again first (`still`): an opt-out or erasure acknowledged since the
        decision (while the message was rendered, or its request's claim written) stops it."""
        handed, failed = time.time(), None
        try:
            refused = await self.still(message.campaign_id, user_id, message.channel, to)
            if refused is not None:
                raise NoLongerAllowed(refused)
            await self.send_or_bury(message.channel, to, data, campaign=message.campaign_id,
                                    decision=message.decision_id, user=user_id, at=handed)
        except BaseException as err:
            handed, failed = None, err
            raise
        finally:
            if once is not None:
                await once.settle(handed, failed)
        return handed

    async def send(self, channel: str, to: str, data: bytes, via: SmtpSender | None = None,
                   unless: asyncio.Event | None = None,
                   still: Callable[[], Awaitable[str | None]] | None = None) -> int:
        """Hand flattened bytes to `channel`'s adapter (SMTP over `via` or the shared
        connection), retrying transient failures until `unless` is set and while `still` gives
        no reason (`Retry.run`); the attempts it took. No event: see `record_sent`.
        FailedPrecondition when the channel has no adapter (a stored message resumed by a
        server started without it)."""
        self.check_adapter(channel)
        if channel == "email":
            smtp = via or self.smtp
            return await self.retry.run(
                channel, lambda: smtp.send_bytes(self.envelope, to, data), unless, still)
        return await self.retry.run(channel, lambda: self.webhooks.post(channel, data), unless,
                                    still)

    async def send_or_bury(self, channel: str, to: str, data: bytes, *, campaign: str,
                           decision: str, user: str, at: float, via: SmtpSender | None = None,
                           unless: asyncio.Event | None = None,
                           still: Callable[[], Awaitable[str | None]] | None = None,
                           breaker: BounceBreaker | None = None) -> int:
        """`send`; a message that did not go is kept as a dead letter, and the error raised;
        one refused before a retry (`still`, by default `Delivery.still`; `unless` ends a
        backoff early to ask it) raises `NoLongerAllowed` (none kept). `at`: when the caller
        last asked the contact policy before it, the time of a hard bounce's event
        (`_bounced`); `breaker`: a send job's, which holds a hard bounce's listing until its
        bound clears (`breaker.BounceBreaker`; none: listed at once)."""
        await self._went(channel, user, to)
        try:
            return await self.send(channel, to, data, via, unless,
                                   still or (lambda: self.still(campaign, user, channel, to)))
        except UNDELIVERED as err:
            if self.dead is not None:
                letter = DeadLetter(channel, campaign, decision, user, to, data.decode("latin-1"),
                                    err.reason, err.attempts)
                await asyncio.to_thread(self.dead.add, letter, True)
            listing = functools.partial(self._bounced, err, channel, campaign, decision, user,
                                        to, at)
            await (listing() if breaker is None or not _bounce(err)
                   else breaker.list_or_hold(listing))
            await self._opted_out(err, channel, campaign, decision, user, to, at)
            raise

    async def _bounced(self, err: Exception, channel: str, campaign: str, decision: str,
                       user: str, to: str, at: float) -> None:
        """A hard bounce at the relay (`DeliveryRefused.bounced`: 550 5.1.1 and the like; an
        SMS provider's code for a number that takes no texts, `webhook.NUMBER_GONE_CODES`) is
        recorded as the provider's report of it would be (`reports.record_report`): `to`
        listed, and the user's `email_bounce` (`sms_bounce`) event while their profile holds
        `to`, dated `at` (from before the send: a user erased while it went is not brought
        back). Without it the next campaign mailed the dead address again, which is what costs
        a sender its reputation. A failure here is logged: the refusal stands, its letter
        kept."""
        if channel == "push" and _bounce(err):
            return await self._token_gone(user, to)
        event_type = BOUNCE_EVENTS.get(channel)
        if event_type is None or not _bounce(err):
            return
        try:
            await record_report(self.events, self.suppressions, event_type, to, user,
                                campaign, decision, at)
        except TailorError as failure:
            logger.warning("a%s %s hard-bounced, but its bounce was not recorded: %s",
                           "n" if channel == "email" else "", channel, type(failure).__name__)

    async def _token_gone(self, user: str, token: str) -> None:
        """The push provider said `token` is no longer registered (`webhook.TOKEN_GONE_STATUS`):
        drop it from `user`'s profile while it holds it (a token the app registered since is
        kept; an erased user is not brought back), so no campaign pushes to it again. A failure
        here is logged (its kind only): the refusal stands, its letter kept."""
        if self.profiles is None:
            return
        try:
            if await self.profiles.drop_attribute(user, "push_token", token):
                logger.info("push token of %s dropped: the provider answered it gone",
                            user_ref(user))
        except TailorError as failure:
            logger.warning("a push token was answered gone, but could not be dropped: %s",
                           type(failure).__name__)

    async def _opted_out(self, err: Exception, channel: str, campaign: str, decision: str,
                         user: str, to: str, at: float) -> None:
        """A provider's refusal saying the user opted out of the sender
        (`DeliveryRefused.opted_out`: an SMS provider's 21610, STOP texted to the carrier,
        `webhook.OPTED_OUT_CODES`) stops the number `to` as a STOP texted from it does (every
        profile at it, marketing and transactional texts: `stops.SmsStops`), and is recorded
        as the user's `unsubscribe` event on `channel` (`reports.record_opt_out`) while their
        profile holds `to` (a dead letter to a number they no longer hold says nothing of the
        one they hold), dated `at`. At once, never held by a job's breaker (it is no bounce).
        A failure here is logged (its kind only): the refusal stands, its letter kept."""
        if not (isinstance(err, DeliveryRefused) and err.opted_out):
            return
        try:
            await record_opt_out(self.events, self.suppressions, channel, to, user, campaign,
                                 decision, at, self.stops)
        except TailorError as failure:
            logger.warning("a %s was refused as opted out, but the opt-out was not recorded: "
                           "%s", channel, type(failure).__name__)

    async def _went(self, channel: str, user: str, to: str) -> None:
        """Index `to` for `user` before a text goes there (`AddressIndex.went`): one composed
        before a message to a new address dropped it (a deferred SendCampaign message, a dead
        letter's retry) still reaches them with a STOP from it. A failure (a full store) is
        logged, the text still goes."""
        index = self.addresses.get(channel)
        if index is None:
            return
        try:
            await asyncio.to_thread(index.went, user, to)
        except TailorError as err:
            logger.warning("could not index the address a %s message goes to: %s", channel,
                           type(err).__name__)

    async def record_sent(self, events: Sequence[TrackedEvent], batch: int) -> None:
        for at in range(0, len(events), batch):
            await self.events.track(events[at:at + batch])

    def refusal(self, user: str, channel: str, purpose: str, to: str) -> str | None:
        """Why a stored message (composed earlier) may not go now: an address its adapter no
        longer carries (`stored_address_refusal`), or `gate.SendGate.refusal`."""
        return stored_address_refusal(channel, to) or (
            None if self.gate is None else self.gate.refusal(user, channel, purpose, to))

    async def still(self, campaign: str, user: str, channel: str, to: str,
                    purpose: str = "") -> str | None:
        """Why a message of `campaign` to `user` at `to` may not go now (archived, or
        `refusal` for `purpose`, read from the campaign when not given); None when it may, or
        there is no gate. Asked just before a stored message goes and before each retry."""
        if self.gate is None:
            return None
        return await self.archived(campaign) or self.refusal(
            user, channel, purpose or await self.purpose(campaign), to)

    async def archived(self, campaign: str) -> str | None:
        """`archived` when a stored message's campaign was archived since (`SendGate.archived`);
        None when it was not, or there is no gate."""
        return None if self.gate is None else await self.gate.archived(campaign)

    async def purpose(self, campaign: str) -> str:
        """The campaign's purpose, as `refusal` asks for it."""
        return MARKETING if self.gate is None else await self.gate.purpose(campaign)

    # -- dead letters --------------------------------------------------------------------------
    async def dead_letters(self, limit: int, channel: str = "") -> list[DeadLetter]:
        check_range("limit", limit, 1, self.limits.dead_letters_listed)
        if channel:
            check_known("channel", channel, MESSAGE_CHANNELS)
        return await asyncio.to_thread(self.dead.list, limit, channel)

    async def retry_dead_letter(self, letter_id: str) -> DeadLetter:
        """Send a dead letter again (every attempt of `retry`); on success its `<channel>_sent`
        event is recorded and it is dropped, otherwise it stays with the new reason. The retry
        claims the letter in the store and renews the claim while it runs (`_keep_claim`:
        however long it waits for the shared connection or the relay): another retry
        meanwhile, in any worker, is refused (`DeadLetterBusy`). A letter whose message went
        already (its event is recorded: `DeadLetters.went`) is dropped, not sent again. Run
        apart from the call (`handovers`): a caller giving up mid-send (its deadline, a
        cancel) leaves the retry to end and settle its letter; before, the letter was written
        back (no sent event) while the relay kept the message, and the next retry sent it
        again."""
        check_id("id", letter_id, self.limits.id_bytes)
        return await self.handovers.run(self._retry_letter(letter_id))

    async def _retry_letter(self, letter_id: str) -> DeadLetter:
        """`retry_dead_letter`, its claim to its settled letter."""
        now = time.time()
        letter = await asyncio.to_thread(self.dead.claim, letter_id, now + self.claim_seconds, now)
        if letter is None:
            raise DeadLetterNotFound(letter_id)
        handed = None
        renewing = asyncio.ensure_future(self._keep_claim(letter))
        try:
            if not await asyncio.to_thread(self.dead.went, letter):
                handed = await self._retry(letter)
        except BaseException:  # failed, refused, or cancelled: written back unclaimed (if ours)
            await asyncio.shield(asyncio.to_thread(self.dead.release, letter))
            raise
        finally:
            renewing.cancel()
        await asyncio.shield(self._settle(letter, handed))
        return letter

    async def _settle(self, letter: DeadLetter, handed: float | None) -> None:
        """A letter that went (`handed`: when; None: it had gone before): its event recorded
        first (then no retry sends it again, should the drop fail), then dropped. Neither
        failure fails the call: the message went."""
        if handed is not None:
            try:
                with exempt():  # it went: its event is never refused as overload
                    await self.events.track([sent_event(letter.channel, letter.campaign,
                                                        letter.decision, letter.user, handed)])
            except TailorError as err:
                logger.warning("a retried dead letter went, but its sent event was not "
                               "recorded: %s", type(err).__name__)
        try:
            await asyncio.to_thread(self.dead.drop, letter.id)
        except TailorError as err:  # its recorded event keeps it from going again
            logger.warning("a retried dead letter went, but could not be dropped: %s",
                           type(err).__name__)

    def _keep_once(self, once: Once) -> Awaitable[None]:
        """Renew a request's delivery claim (`Once`) until its send ends or the delivery is no
        longer being made: a repeat meanwhile hears it is being delivered, not that whether it
        went is unknown (which invites a send under a new request id, a second message)."""
        return self._keep(once.renew, "a delivery's claim")

    def _keep_claim(self, letter: DeadLetter) -> Awaitable[None]:
        """Renew `letter`'s claim until its retry ends or the claim is no longer its retry's."""
        return self._keep(lambda until: asyncio.to_thread(self.dead.renew, letter, until),
                          "a dead letter's claim",
                          lost="a dead letter's claim was lost while its retry ran")

    async def _keep(self, renew: Callable[[float], Awaitable[bool]], what: str,
                    lost: str = "") -> None:
        """`renew(until)` every third of `claim_seconds` until cancelled, or until it says the
        claim is no longer held (logged as `lost`, if given)."""
        while True:
            await asyncio.sleep(self.claim_seconds / 3)
            try:
                if not await renew(time.time() + self.claim_seconds):
                    if lost:
                        logger.warning(lost)
                    return
            except TailorError as err:  # e.g. a full store: the next renewal tries again
                logger.warning("could not renew %s: %s", what, type(err).__name__)

    async def _retry(self, letter: DeadLetter) -> float:
        """Send the claimed `letter` (raises when it did not go or may not go now); when it was
        handed over (its event's time)."""
        self.check_adapter(letter.channel)
        still = functools.partial(self.still, letter.campaign, letter.user, letter.channel,
                                  letter.to)
        handed = time.time()  # before the check: a user erased after it is not brought back
        refused = await still()
        if refused is not None:  # kept, with the reason (a renewed opt-in may allow it again)
            letter.reason = refused
            raise NoLongerAllowed(refused)
        await self._went(letter.channel, letter.user, letter.to)
        try:
            await self.send(letter.channel, letter.to, letter.data.encode("latin-1"), still=still)
        except UNDELIVERED as err:
            letter.reason, letter.attempts = err.reason, letter.attempts + err.attempts
            await self._bounced(err, letter.channel, letter.campaign, letter.decision,
                                letter.user, letter.to, handed)
            await self._opted_out(err, letter.channel, letter.campaign, letter.decision,
                                  letter.user, letter.to, handed)
            raise
        except NoLongerAllowed as err:  # refused before a retry: kept, as above
            letter.reason = err.reason
            raise
        return handed

    async def close(self) -> None:
        if self.smtp is not None:
            await self.smtp.close()
        if self.webhooks is not None:
            await self.webhooks.close()


def _bounce(err: Exception) -> bool:
    """Whether `err` is a hard bounce at the relay (`DeliveryRefused.bounced`)."""
    return isinstance(err, DeliveryRefused) and err.bounced
