"""Compose: decision (campaigns) → verdict (contact policy) → render → headers.

`Composer.compose` makes one logged decision through the campaigns domain, so a message is
attributed like any ChooseVariant (its decision id rides on the `*_sent`/`*_click` events). The
message is rendered while the decision's record commits (`VariantChooser.decide`) and answered
once the commit is done, so the answer waits for the longer of the two, not for their sum.
`Composer.preview` renders without deciding or logging anything.

The items a message's `recommend()` calls picked are logged as impressions (under the decision
id) only once the message stands (`record_shown`): ComposeMessage's when it is answered or, with
`deliver`, once it went; SendCampaign's when its message is stored ready to go. A preview, a
suppressed decision or a render that fails logs none: the impression log says what users saw.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import quote

from ..campaigns.errors import CampaignArchived
from ..config import Settings
from ..errors import FailedPrecondition, InvalidArgument, TailorError
from ..interfaces import ProfileReader, Recommendations, VariantChooser
from ..security.hosts import with_port
from ..security.pii import PiiPolicy
from ..validation import check_count, check_id, check_known, check_text, shown
from .channels import MESSAGE_CHANNELS, PARTS, check_parts
from .context import MessageContext, Recipient, read_recipient
from .delivery import Delivery
from .errors import LoggedOnAPlacement, NoLongerAllowed, NotAMessageChannel, ScheduledNotSent
from .logging import logger
from .once import Once
from .phones import AddressIndex
from .templates import TemplateCache
from .unsubscribe import UnsubscribeTokens

__all__ = ["Message", "Composer", "Verdict", "verdict_of", "PREVIEW_USER"]

_MESSAGE_CHANNELS = frozenset(MESSAGE_CHANNELS)

PREVIEW_USER = "tailor-preview-sample"
"""Whose recommendations a sample-profile preview shows (no profile: the popular items)."""


@dataclass(frozen=True)
class Verdict:
    """What the contact policy said of a decision (issue 15): send, when, where, or not."""

    suppressed: bool = False
    reason: str = ""
    channel: str = ""
    send_at: float = 0.0


def verdict_of(choice, default_channel: str) -> Verdict:
    """THE seam where the contact policy is honoured: a decision carrying `suppressed`,
    `reason`, `channel`, `send_at` (ChooseVariant's result, `campaigns.Choice`) is obeyed;
    one without them is sent now on the campaign's channel."""
    return Verdict(bool(getattr(choice, "suppressed", False)), getattr(choice, "reason", "") or "",
                   getattr(choice, "channel", "") or default_channel,
                   float(getattr(choice, "send_at", 0.0) or 0.0))


@dataclass
class Message:
    campaign_id: str
    channel: str
    decision_id: str = ""
    variant_id: str = ""
    send_at: float = 0.0
    suppressed: bool = False
    reason: str = ""
    holdout: bool = False
    parts: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    unsubscribe_url: str = ""
    sms: dict = field(default_factory=dict)
    delivered: bool = False
    scheduled: bool = False
    """`deliver` stored it to go at its `send_at` (the contact policy deferred it)."""
    send_id: str = ""
    """A scheduled message's send job (GetSendProgress): `jobs.scheduled_id`."""
    shown: list = field(default_factory=list, repr=False, compare=False)
    """(query, answer, time asked) of each `recommend()` call of the render, not yet logged as
    impressions (`Composer.record_shown`)."""
    request: bytes = field(default=b"", repr=False, compare=False)
    """The digest of the call's request id (b"": none; `PendingChoice.request`)."""
    repeat: bool = field(default=False, repr=False, compare=False)
    """The decision a repeated `request_id` was answered (rendered again): the first answer
    logged its impressions."""


class Composer:
    def __init__(self, settings: Settings, campaigns: VariantChooser, profiles: ProfileReader,
                 recommender: Recommendations, tokens: UnsubscribeTokens,
                 phones: AddressIndex | None = None, delivery: Delivery | None = None,
                 emails: AddressIndex | None = None):
        """`phones`, `emails`: where SMS recipients' numbers (for STOP replies) and email
        recipients' addresses (a one-click unsubscribe reaches every profile mailed at one)
        are indexed; `delivery`: the adapter `deliver=True` hands messages to."""
        self.delivery = delivery
        self.settings, self.limits = settings, settings.limits
        self.campaigns, self.profiles, self.tokens, self.phones = campaigns, profiles, tokens, phones
        self.addresses = {i.channel: i for i in (phones, emails) if i is not None}
        if settings.unsubscribe_mailto:
            logger.warning("unsubscribe_mailto is ignored: nothing reads that mailbox, so an "
                           "unsubscribe sent to it would be lost; List-Unsubscribe offers the "
                           "one-click https link only")
        self.context = MessageContext(recommender, settings.limits)
        self.templates = TemplateCache(limits=settings.limits)
        self.later = None
        """Where a message to deliver that the contact policy deferred is stored to go at its
        send_at (`jobs.SendJobs.schedule`; set by the app: the jobs compose through this)."""

    # -- links and headers ----------------------------------------------------------------------
    @property
    def public_base(self) -> str:
        s = self.settings
        if s.public_url:
            return s.public_url.rstrip("/")
        if s.public_http_port:
            scheme = "https" if s.tls_cert is not None else "http"
            return f"{scheme}://{with_port(s.host, s.public_http_port)}"
        raise FailedPrecondition("messages need unsubscribe links: set --public-url (or "
                                 "--public-http-port)")

    def unsubscribe_url(self, user_id: str, channel: str, campaign_id: str) -> str:
        token = self.tokens.issue(user_id, channel, campaign_id)
        return f"{self.public_base}/u/{quote(token, safe='.-_~')}"

    def email_headers(self, decision_id: str, url: str) -> dict[str, str]:
        """RFC 8058 one-click headers and a Message-ID fixed by the decision (a resend after a
        crash carries the same id, so receivers can drop it). The https link only: a mailto:
        would need a mailbox something reads (`unsubscribe_mailto` is ignored)."""
        return {"List-Unsubscribe": f"<{url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Message-ID": f"<{decision_id}@{self.settings.message_id_domain}>"}

    # -- compose and preview --------------------------------------------------------------------
    async def message_campaign(self, campaign_id: str):
        campaign = await self.campaigns.get(campaign_id)
        if campaign.spec.channel not in MESSAGE_CHANNELS:
            raise NotAMessageChannel(campaign_id, campaign.spec.channel)
        return campaign

    async def compose(self, campaign_id: str, user_id: str, context: Mapping[str, float],
                      deliver: bool = False, request_id: str = "", caller: str = "") -> Message:
        """ComposeMessage; `request_id` (with `caller`): a repeat of it is answered the
        decision logged for it (`Campaigns.decide`)."""
        if deliver:  # before the decision: a refused call logs nothing (as SendCampaign)
            if self.delivery is None:
                raise FailedPrecondition("deliver: this server has no delivery adapter")
            campaign = await self.message_campaign(campaign_id)
            self.delivery.check_adapters(campaign.spec.message_channels)
        out, recipient = await self.decide_and_render(
            campaign_id, user_id, context, on_loop=True, request_id=request_id, caller=caller,
            delivered=deliver)
        if deliver and recipient is not None:
            await self._deliver(out, recipient, user_id)
        if recipient is not None and not out.repeat and not deliver:
            self.record_shown(out)  # a delivered one's once it went, a scheduled one's once
            # its job is stored (`_deliver`)
        return out

    async def _deliver(self, out: Message, recipient: Recipient, user_id: str) -> None:
        """Hand `out` over now, or, deferred by the contact policy (`send_at`), store it to go
        then (`later`: a send job, as SendCampaign's deferred messages); once per request."""
        try:
            to, data = self.delivery.ready(out, recipient.attributes)
        except FailedPrecondition:  # it cannot go: nobody will receive it
            await self._withdraw(out)
            raise
        once = (Once(self.campaigns, out.request, out.decision_id, out.channel)
                if out.request else None)
        if not out.send_at:  # its caller giving up or not (`handovers`)
            await self.delivery.handovers.run(self._hand(out, user_id, to, data, once))
            return
        try:
            progress = await self.later.schedule(  # its caller giving up or not
                out, user_id, to, data, self.shown_items(out), once,
                stored=None if out.repeat else lambda: self.record_shown(out))
        except TailorError:  # not stored: nobody will receive it
            await self._withdraw(out)
            raise
        _followed(out, progress)

    async def _hand(self, out: Message, user_id: str, to: str, data: bytes,
                    once: Once | None) -> None:
        """Hand `out` over now (`Delivery.hand`), and what follows from its outcome: its
        impressions once it went, its decision withdrawn when nothing was attempted. Run
        apart from the call (`Delivery.handovers`): a caller giving up mid-send leaves the
        outcome kept against its request id, not in doubt."""
        try:
            out.delivered = await self.delivery.hand(out, user_id, to, data, once)
        except NoLongerAllowed as err:  # opted out meanwhile: withdrawn if nothing was
            if not err.attempts:  # attempted (a failed attempt may have reached the
                await self._withdraw(out)  # relay: kept, as SendCampaign keeps it)
            raise
        if not out.repeat:
            self.record_shown(out)

    @staticmethod
    def shown_items(out: Message) -> list[str]:
        """The ids of the items `out`'s `recommend()` calls put in it, in order."""
        return [i for _, r, _ in out.shown for i in r.bundle.items["item_ids"][r.rows].tolist()]

    def unavailable(self, item_ids: Sequence[str]) -> set[str]:
        """Those of `item_ids` no longer in the catalog (removed since a message showed them)."""
        return self.context.recommender.unavailable(item_ids)

    def record_shown(self, out: Message) -> None:
        """Log the items `out` shows (its `recommend()` answers) as impressions under its
        decision id: once, when the message stands (see the module doc). Each is dated when
        its `recommend()` call asked (before it read the profile), so the impression log drops
        those of a user erased since (`impressions.writer`), however late the message stands."""
        shown, out.shown = out.shown, []
        for query, result, asked in shown:
            self.context.recommender.record(out.decision_id, query, result, asked)

    async def decide_and_render(self, campaign_id: str, user_id: str,
                                context: Mapping[str, float], on_loop: bool = False,
                                decision_id: str = "", request_id: str = "",
                                caller: str = "", delivered: bool = False
                                ) -> tuple[Message, Recipient | None]:
        """One logged decision, the contact policy's verdict, and (unless suppressed or in the
        holdout, where the recipient is None) the rendered message with its recipient.
        `on_loop`: the template's `recommend()` calls run on the event loop (one message asked
        for, ComposeMessage), not in the batch thread (SendCampaign's many at once share its
        batches; `Recommender.recommend`). `decision_id`: the id the caller fixed for the
        decision (SendCampaign's, so that a resumed job finds it: `render_logged`).
        `request_id`, `caller`: as `Campaigns.decide` (a repeated request renders the decision
        logged for it). The channel is chosen among the message channels (never a placement:
        web, app); `delivered`: the message is handed to this server's adapters (deliver,
        SendCampaign), so among those with an adapter, and an address in the profile where
        there are any (`Contact.reachable`, `Contact.addressed`).

        The message is rendered while the decision's record is being committed (the variant is
        known before; only a frequency cap's refusal comes from the commit), and the answer
        waits for the commit: a decision it finds over a cap drops the render and is answered
        suppressed, as is a render error (raised only for a decision that stands)."""
        check_id("user_id", user_id, self.limits.id_bytes)
        campaign = await self.message_campaign(campaign_id)
        recommender = self.context.recommender  # (None: a composer without recommendations)
        since = recommender.since() if recommender is not None else None  # before the read
        try:
            pending = self.campaigns.decide(campaign_id, user_id, context, profile=True,
                                            seen=on_loop, decision_id=decision_id,
                                            request_id=request_id, caller=caller,
                                            reachable=self._reachable(delivered),
                                            addressed=delivered)
        except CampaignArchived:  # a repeat of a request answered before: that decision
            answered = self.campaigns.answered_before(campaign_id, user_id, request_id, caller)
            if answered is None:
                raise
            out, recipient = await self.render_logged(campaign_id, user_id, answered[0])
            out.repeat, out.request = True, answered[1]
            return out, recipient
        try:
            return await self._drafted(campaign, pending, user_id, on_loop, since)
        except asyncio.CancelledError:
            if decision_id:  # a SendCampaign job stopping: resumed, it renders the decision
                pending.cancel()  # logged for this id (`render_logged`), or decides anew
            else:  # the caller gave up: nobody will receive it
                self.campaigns.abandon(pending)
            raise

    async def _drafted(self, campaign, pending, user_id: str, on_loop: bool, since: int | None
                       ) -> tuple[Message, Recipient | None]:
        """`decide_and_render` once the decision is queued (`pending`); `since`: the
        recommender's `since()` from before the decision read the profile."""
        profile = None if pending.profile is None else (*pending.profile, since)
        try:
            await asyncio.sleep(0)  # the record goes to its writer (the commit starts) first
            drafted = await self._draft(campaign, pending.choice, user_id, on_loop, profile)
        except Exception as err:  # raised once the commit says the decision stands
            drafted = err
        choice = await pending.logged(on_cancel=lambda _: None)  # left to `abandon`
        if choice.decision_id != pending.choice.decision_id:  # a repeated request's decision
            out, recipient = await self.render_logged(campaign.spec.campaign_id, user_id,
                                                      choice)
            out.repeat, out.request = True, pending.request
            return out, recipient
        out = _message(campaign, choice)
        if out.suppressed or out.holdout:
            return out, None
        if isinstance(drafted, Exception):
            out.request = pending.request
            await self._withdraw(out)
            raise drafted
        drafted[0].request = pending.request
        return await self._addressed(*drafted, user_id)

    async def _withdraw(self, out: Message) -> None:
        """Withdraw `out`'s decision (`VariantChooser.withdraw`): its message could not be
        rendered or cannot go, so nobody received it; it then counts toward no frequency cap,
        stats or default reward (a pull of a variant nobody saw), and a repeat of its request
        decides anew. A repeated request's decision is left alone (its first call may have
        delivered it). Shielded: it is done if the caller gives up meanwhile."""
        if out.repeat or not out.decision_id:
            return
        try:
            await asyncio.shield(self.campaigns.withdraw(
                [(out.decision_id, out.request) if out.request else out.decision_id]))
        except TailorError as err:  # the answer is the message's error; say this one too
            logger.warning("withdrawing a message's decision failed: %s", type(err).__name__)

    def _reachable(self, delivered: bool) -> frozenset[str]:
        """The channels a message may go on: the message channels (a placement, web or app,
        has no message), those this server has an adapter for when it delivers it."""
        if not delivered:
            return _MESSAGE_CHANNELS
        if self.delivery is None:
            return frozenset()
        return frozenset(c for c in MESSAGE_CHANNELS if self.delivery.has_adapter(c))

    async def render_logged(self, campaign_id: str, user_id: str, choice
                            ) -> tuple[Message, Recipient | None]:
        """As `decide_and_render`, for a decision logged before (`choice`, as the campaigns
        domain stored it: `VariantChooser.logged_decisions`): a SendCampaign job resumed after a
        crash renders the decision it logged for the user before the crash rather than decide
        again (a second decision would count as a second contact against the caps)."""
        campaign = await self.message_campaign(campaign_id)
        drafted = await self._draft(campaign, choice, user_id)
        if drafted is None:
            return _message(campaign, choice), None
        return await self._addressed(*drafted, user_id)

    async def _addressed(self, out: Message, recipient: Recipient, user_id: str
                         ) -> tuple[Message, Recipient]:
        """A rendered message about to go: an SMS recipient's number (STOP replies) or an
        email recipient's address (one-click unsubscribes) is indexed."""
        index = self.addresses.get(out.channel)
        address = recipient.attributes.get(index.attribute) if index is not None else None
        if address and not index.indexed(user_id, address):  # a write only for a new one
            await asyncio.to_thread(index.remember, user_id, address)
        return out, recipient

    async def _draft(self, campaign, choice, user_id: str, on_loop: bool = False,
                     profile: tuple | None = None) -> tuple[Message, Recipient] | None:
        """The rendered message of a decision (None: nothing to render), from the profile the
        contact policy read for it (`profile`: (feature state, meta, live seen-set, the
        recommender's `since()` before that read); read here if it read none)."""
        out = _message(campaign, choice)
        if out.suppressed or out.holdout:
            return None
        if out.channel not in PARTS:  # a repeat of a decision another call logged (ChooseVariant)
            raise LoggedOnAPlacement(out.decision_id, out.channel)
        if all(v.id != choice.variant_id for v in campaign.spec.variants):
            campaign = await self.message_campaign(campaign.spec.campaign_id)  # a new variant
        recipient = await read_recipient(self.profiles, user_id, profile)
        await self._render(out, campaign, recipient, user_id, on_loop, profile)
        return out, recipient

    async def preview(self, campaign_id: str, variant_id: str = "", user_id: str = "",
                      attributes: Mapping[str, str] | None = None,
                      interests: Sequence[str] = (), channel: str = "",
                      pii: PiiPolicy | None = None) -> Message:
        """The variant rendered for `user_id` or a sample profile, deciding nothing. `pii`: mask
        the user's PII attributes with it before rendering (a caller without `pii-reader`). The
        unsubscribe link is the placeholder `<public url>/u/preview` either way: a working one
        would let whoever previews opt the user out."""
        campaign = await self.message_campaign(campaign_id)
        spec = campaign.spec
        channel = channel or spec.channel
        check_known("channel", channel, spec.message_channels)  # never a placement (web, app)
        if variant_id and variant_id not in {v.id for v in spec.variants}:
            raise InvalidArgument("variant_id", f"{shown(variant_id)} is not a variant of "
                                  f"campaign {campaign_id!r}")
        out = Message(campaign_id, channel, variant_id=variant_id or spec.variants[0].id)
        if user_id:
            check_id("user_id", user_id, self.limits.id_bytes)
            recipient = await read_recipient(self.profiles, user_id)
            if pii is not None:
                attributes = dict(recipient.attributes)
                pii.mask_map(attributes)
                recipient = replace(recipient, attributes=attributes)
        else:
            check_count("sample_interests", len(interests), self.limits.preview_attributes)
            recipient = Recipient(PREVIEW_USER, self._sample(attributes or {}),
                                  tuple(check_text("sample_interests", i, 256) for i in interests))
        await self._render(out, campaign, recipient, "")  # a preview's link unsubscribes nobody
        return out

    def _sample(self, attributes: Mapping[str, str]) -> dict[str, str]:
        lim = self.limits
        check_count("sample_attributes", len(attributes), lim.preview_attributes)
        for k, v in attributes.items():
            check_text("sample_attributes key", k, lim.attribute_key_chars)
            if len(v) > lim.attribute_value_chars:  # the value is not echoed: it may be PII
                raise InvalidArgument(f"sample_attributes[{shown(k)}]", f"{len(v)} characters, "
                                      f"at most {lim.attribute_value_chars}")
        return dict(attributes)

    async def _render(self, out: Message, campaign, recipient: Recipient, user_id: str,
                      on_loop: bool = False, read: tuple | None = None) -> None:
        spec = campaign.spec
        variant = next(v for v in spec.variants if v.id == out.variant_id)
        compiled = self.templates.get(spec.campaign_id, campaign.revision,
                                      [(v.id, v.content) for v in spec.variants],
                                      spec.message_channels)
        if out.channel in ("email", "sms"):
            out.unsubscribe_url = (self.unsubscribe_url(user_id, out.channel, spec.campaign_id)
                                   if user_id else f"{self.public_base}/u/preview")
        ctx = self.context.build(recipient, channel=out.channel, campaign=spec, variant=variant,
                                 unsubscribe_url=out.unsubscribe_url, on_loop=on_loop, read=read,
                                 shown=out.shown)
        rendered = await compiled.render(variant.id, ctx)
        out.parts = {p: rendered[p] for p in PARTS[out.channel] if p in rendered}
        out.sms = check_parts(variant.id, out.channel, out.parts, self.limits)
        if out.channel == "email":
            out.headers = self.email_headers(out.decision_id or "preview", out.unsubscribe_url)


def _followed(out: Message, progress) -> None:
    """`out` scheduled, as its send job (`progress`) has it: a repeat of its request after
    the job ended says it went (`delivered`), was stopped (`suppressed` with the reason:
    `archived`, `no_consent`...) or did not go (ScheduledNotSent, the adapter's reason)."""
    out.scheduled, out.send_id = True, progress.send_id
    if progress.sent:
        out.delivered = True
    elif progress.suppressed:
        out.suppressed, out.reason = True, next(iter(progress.suppressed))
    elif progress.failed:
        raise ScheduledNotSent(out.channel, next(iter(progress.failed)))


def _message(campaign, choice) -> Message:
    """The unrendered message of a decision, as the contact policy's verdict has it."""
    verdict = verdict_of(choice, campaign.spec.channel)
    # A suppressed decision has no arm either (arm < 0) but is not the holdout.
    held_out = not verdict.suppressed and choice.arm < 0
    out = Message(campaign.spec.campaign_id, verdict.channel, choice.decision_id,
                  choice.variant_id, verdict.send_at, verdict.suppressed, verdict.reason, held_out)
    if out.suppressed or out.holdout:
        out.variant_id = ""
    return out
