"""The contact policy: may this user be contacted for this campaign, on which channel, when?

`ContactPolicy.verdicts` is pure (no I/O) and batch-first: ChooseVariant calls it with one
`Contact`, PlanCampaign with a batch, each read by the caller in one read transaction. Checks,
in order: consent and suppression (`consent.consent_reason`, `Contact.suppressed`: the
campaign's channels the user may be contacted on whose address is not on the suppression list),
quiet hours (defer: `send_at` = when they end; or suppress), and, when the caller read the
user's `ContactHistory`, the frequency caps: a campaign of several channels then chooses among
those whose caps leave room at the time its message would go (now or the send time chosen
first, past quiet hours: `_going`), so a user capped on push then is contacted by email rather
than suppressed; only a user whose every allowed channel is capped is suppressed
`frequency_cap`. A caller that can put its message on some channels only (`Contact.reachable`:
ComposeMessage, SendCampaign) has a user it may contact on none of those, but on a message
channel it cannot send on (no adapter on this server), suppressed `channel_unavailable`, not
`no_consent`: the user did consent, and the fix is the server's, not the user's.

With a feature layout (`layout`), a campaign of several channels picks among the allowed ones
by Thompson sampling (`channel`), and a campaign with an active `send_window` picks the user's
best local hour in its next occurrence (`send_time`), both from the population prior of
`prior` (`PriorSource`); their propensities are in the verdict and logged with the decision.
The window's slots inside the quiet hours are no candidates (`choice`); quiet hours are then
checked at the chosen time (a window quiet throughout: its start, deferred or suppressed).
The caps are checked again, and counted, atomically where the decision is logged (`caps`),
which alone is authoritative: a verdict's other allowed channels (`Verdict.others`) are where
a decision found over its channel's caps there may fall back (`caps.Admission.settled`).
"""
from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from ..config import DEFAULT_CONSENT
from .addresses import CHANNEL_KIND
from .caps import FREQUENCY_CAP, Cap, ContactHistory, FrequencyCap, effective_caps
from .consent import NO_CONSENT, TRANSACTIONAL, consent_reason, need_of
from .prior import PriorSource
from .quiet_hours import QUIET_HOURS, QuietHours, SendWindow, quiet_until, zone, zone_of
from .suppression import SUPPRESSED_ADDRESS

if TYPE_CHECKING:
    from kernels.feature_layout import FeatureLayout

    from ..config import Settings

__all__ = ["Verdict", "Contact", "ContactPolicy", "Contactable", "channels_of",
           "ADDRESS_ATTRIBUTES", "CHANNEL_UNAVAILABLE"]

ADDRESS_ATTRIBUTES = CHANNEL_KIND
"""The profile attribute each message channel's messages go to (`server.messages.delivery`):
the kind of address the suppression list holds for it (`addresses.CHANNEL_KIND`)."""
CHANNEL_UNAVAILABLE = "channel_unavailable"
"""The reason of a user who may be contacted only on message channels the caller cannot put
its message on (no adapter for them on this server: `Contact.reachable`)."""


class Verdict(NamedTuple):
    """The contact policy's answer for one user (a NamedTuple: one per user of every batch)."""

    suppressed: bool
    reason: str
    """"" when allowed; else no_consent, channel_unavailable, suppressed_address,
    frequency_cap or quiet_hours."""
    channel: str
    """The channel to contact on."""
    send_at: float
    """Unix seconds; 0 = now."""
    channel_propensity: float = 1.0
    """Probability the policy had of choosing `channel` (1: no choice among channels)."""
    send_at_propensity: float = 1.0
    """Probability the policy had of choosing `send_at`'s slot (1: no send window)."""
    others: tuple[tuple[str, float], ...] = ()
    """The other channels the user may be contacted on (as `channel` is, the caps as far as
    the caller's history tells), in the campaign's order, each with the probability the
    policy had of choosing it: where the decision is logged, a `channel` found over its caps
    falls back on the first of them with room (`caps.Admission.settled`)."""


class Contact(NamedTuple):
    """What the caller read about one user (one read transaction for a batch; a NamedTuple:
    one per user of every batch)."""

    user_id: str
    meta: Mapping | None = None
    """The profile meta record (attributes, consent), None without a profile."""
    state: np.ndarray | None = None
    """The feature state (send-time and channel choice read it), None without one."""
    history: ContactHistory | None = None
    """Recent contacts, when the caller read them (None: caps are left to the writer)."""
    suppressed: frozenset[str] = frozenset()
    """Channels whose address (the profile's `email` / `phone` / `push_token`) is on the
    suppression list,
    as the caller read them (`suppression.Suppressions.suppressed_channels`)."""
    seen: object = None
    """The live seen-set (`profiles.seen.SeenSet`), when the caller read it for a message's
    recommendations (no policy check reads it)."""
    erased: bool = False
    """The user was erased (DeleteProfile) and has no profile since, as the caller read it
    (`needs_erasures`): no marketing on any channel whose consent is checked, though an
    opt_out channel would take a user never seen."""
    reachable: frozenset[str] | None = None
    """The channels the caller can put its message on: a message (ComposeMessage, SendCampaign)
    goes on a message channel (`ADDRESS_ATTRIBUTES`), never on a placement (web, app), and,
    when this server delivers it, on one with an adapter. The others are never chosen. None:
    any channel (ChooseVariant, PlanCampaign). A user who may be contacted on none of these
    but on a message channel left out (it has no adapter) is suppressed `CHANNEL_UNAVAILABLE`."""
    addressed: bool = False
    """The caller delivers to the address the profile holds (`ADDRESS_ATTRIBUTES`;
    ComposeMessage with `deliver`, SendCampaign): a channel the user has no address for is
    chosen only when no other is allowed. False: the caller sends, to addresses it may hold
    itself."""
    stamp: bytes = b""
    """The digest of the meta record's stored bytes in the caller's read snapshot
    (`campaigns.recheck`: the writer checks consent again when it changed since)."""


class Contactable(Protocol):
    """The campaign fields the policy reads (`campaigns.spec.CampaignSpec` has them)."""

    purpose: str
    channel: str
    channels: tuple[str, ...]
    frequency_caps: tuple[FrequencyCap, ...]
    quiet_hours: QuietHours
    send_window: SendWindow


class ContactPolicy:
    """Settings-level rules (consent defaults, default time zone, global caps) applied to a
    campaign's own (channels, purpose, caps, quiet hours)."""

    def __init__(self, consent_defaults: Mapping[str, str] = DEFAULT_CONSENT,
                 default_timezone: str = "UTC",
                 global_caps: Sequence[Cap] = (), *, layout: FeatureLayout | None = None,
                 prior: PriorSource | None = None, epsilon: float = 0.1, n_mc: int = 256,
                 rng: np.random.Generator | None = None):
        self.consent_defaults = dict(consent_defaults)
        self.default_zone: zoneinfo.ZoneInfo = zone("contact_default_timezone", default_timezone)
        self.global_caps = tuple(tuple(c) for c in global_caps)
        self.layout = layout
        self.prior = prior if prior is not None or layout is None else PriorSource(
            layout, lambda limit, start: (np.zeros((0, layout.size)), b""))
        self.epsilon, self.n_mc = float(epsilon), int(n_mc)
        self.rng = rng if rng is not None else np.random.default_rng()
        self._expected: tuple[float, dict] = (np.nan, {})
        """(now, {(quiet hours, zone, time): `_going`}) of the latest batch."""

    @classmethod
    def from_settings(cls, s: Settings, layout: FeatureLayout | None = None,
                      prior: PriorSource | None = None) -> ContactPolicy:
        return cls(s.consent_defaults, s.contact_default_timezone, s.contact_frequency_caps,
                   layout=layout, prior=prior, epsilon=s.contact_send_time_epsilon,
                   n_mc=s.contact_thompson_draws)

    def needs_profile(self, campaign: Contactable) -> bool:
        """Whether verdicts on `campaign` read the profile (consent, quiet hours, send time or
        channel to choose). Transactional campaigns always do: an explicit transactional
        opt-out may be stored on any channel, whatever its marketing default; only marketing
        on channels whose default is `none` (not email or sms: `consent.need_of`) needs no
        consent read."""
        needs_consent = campaign.purpose == TRANSACTIONAL or any(
            need_of(self.consent_defaults, c) != "none" for c in channels_of(campaign))
        return needs_consent or campaign.quiet_hours.active or self.needs_state(campaign)

    def needs_erasures(self, campaign: Contactable) -> bool:
        """Whether verdicts on `campaign` tell an erased user from one never seen
        (`Contact.erased`): a marketing campaign on a channel that takes a user without a
        profile yet checks consent (`opt_out`, email and sms `none` included: `need_of`;
        `opt_in` refuses them already)."""
        return campaign.purpose != TRANSACTIONAL and any(
            need_of(self.consent_defaults, c) == "opt_out" for c in channels_of(campaign))

    def needs_state(self, campaign: Contactable) -> bool:
        """Whether verdicts on `campaign` read the feature state (a send time or channel to
        choose)."""
        return self.layout is not None and (
            len(channels_of(campaign)) > 1 or campaign.send_window.active)

    def refresh_prior(self, now: float) -> None:
        """Refit the population prior if it is stale (reads the store: off the event loop)."""
        if self.prior is not None and self.prior.stale(now):
            self.prior.refresh(now)

    def caps(self, campaign: Contactable, channel: str) -> tuple[Cap, ...]:
        """The caps a decision of `campaign` on `channel` must pass (transactional campaigns
        skip the global ones)."""
        glob = () if campaign.purpose == TRANSACTIONAL else self.global_caps
        return effective_caps(channel, campaign.frequency_caps, glob)

    def verdicts(self, campaign: Contactable, contacts: Sequence[Contact],
                 now: float) -> list[Verdict]:
        """One verdict per contact, in order (send times and channels chosen in one batch):
        the send time first, then the channel among those allowed at that time (their caps
        judged when the message would go: `_going`)."""
        if not self.needs_state(campaign):  # nothing to choose: no batch to build
            return [self._verdict_now(campaign, c, now) for c in contacts]
        zones = [zone_of(c.meta, self.default_zone) for c in contacts]
        times = self._times(campaign, contacts, zones, now)
        allowed = [self._allowed(campaign, c, True,
                                 lambda z=z, t=t: self._going(campaign, z, t[0] or now, now))
                   for c, z, t in zip(contacts, zones, times)]
        picks = self._channels(contacts, [a[0] for a in allowed], now)
        return [self._verdict(campaign, c, a, z, (*p[:2], *t, p[2]), now)
                for c, a, z, p, t in zip(contacts, allowed, zones, picks, times)]

    def _allowed(self, campaign: Contactable, contact: Contact, every: bool,
                 at: Callable[[], float] | None) -> tuple[list[str], str | None, str | None]:
        """The campaign's channels the user may be contacted on (consent given, address not on
        the suppression list, and, for a campaign of several channels whose caller read the
        contact history, room under the channel's caps at `at()`, when the message would go;
        None: caps not asked; one the caller can use, `Contact.reachable`; for a caller that
        delivers to the profile's addresses, `Contact.addressed`, an address there, unless no
        allowed channel has one: then the first such channel, whose message fails for it as
        before): all of them when a channel is to be chosen (`every`), else the first only;
        the first channel refused only because its address is suppressed; and the first
        refused only by its caps."""
        out, listed, capped, when, bare = [], None, None, None, None
        several = at is not None and contact.history is not None and \
            len(channels_of(campaign)) > 1
        for c in channels_of(campaign):
            if contact.reachable is not None and c not in contact.reachable:
                continue  # no message goes on it (a placement; no adapter here)
            if consent_reason(contact.meta, c, campaign.purpose, self.consent_defaults) is not None:
                continue
            if contact.erased and campaign.purpose != TRANSACTIONAL and \
                    need_of(self.consent_defaults, c) != "none":
                continue  # erased: their consent went with them, and it was no
            if c in contact.suppressed:
                listed = listed or c
                continue
            if several:
                if when is None:
                    when = at()
                if contact.history.blocked_by(self.caps(campaign, c), when):
                    capped = capped or c
                    continue
            if contact.addressed and not _addressed(contact.meta, c):
                bare = bare or c
                continue
            out.append(c)
            if not every:
                break
        return out or ([bare] if bare else out), listed, capped

    def _going(self, campaign: Contactable, tz: zoneinfo.ZoneInfo, at: float,
               now: float) -> float:
        """When a message meant for `at` (now, or the send time chosen) would go: then, or
        when quiet hours end (deferred; the chosen channel's caps are checked again at the
        time in `_verdict`, and where the decision is logged). Users of one zone and time
        share it within a batch (one `now`)."""
        quiet = campaign.quiet_hours
        if not quiet.active or quiet.action == "suppress":
            return at
        if self._expected[0] != now:
            self._expected = (now, {})
        going = self._expected[1].get((quiet, tz, at))
        if going is None:
            going = self._expected[1][quiet, tz, at] = quiet_until(quiet, tz, at) or at
        return going

    def _verdict_now(self, campaign: Contactable, contact: Contact, now: float) -> Verdict:
        """The verdict on one contact of a campaign without a channel or send time to choose:
        its first allowed channel, now (what `_channels` picks then); the others allowed, when
        the caller read the history of a campaign of several channels, as fallbacks (never
        chosen here: propensity 0)."""
        several = len(channels_of(campaign)) > 1 and contact.history is not None
        allowed = self._allowed(campaign, contact, several, lambda: self._going(
            campaign, zone_of(contact.meta, self.default_zone), now, now))
        first = allowed[0][0] if allowed[0] else ""
        pick = (first, 1.0, 0.0, 1.0, tuple((c, 0.0) for c in allowed[0][1:]))
        return self._verdict(campaign, contact, allowed, None, pick, now)

    def _verdict(self, campaign: Contactable, contact: Contact,
                 allowed: tuple[list[str], str | None, str | None], tz: zoneinfo.ZoneInfo | None,
                 pick: tuple, now: float) -> Verdict:
        """The verdict on one contact; `tz`: the user's zone (None: read from its meta record
        when quiet hours need it). A user allowed on no channel is suppressed for the first
        reason that holds: caps, a suppressed address, a message channel the caller cannot
        send on (`_unreachable`), and only then no consent, on any channel of the campaign."""
        channels, listed, capped = allowed
        if not channels:
            if capped is not None:  # allowed but for the caps, on every such channel
                return Verdict(True, FREQUENCY_CAP, capped, 0.0)
            if listed is not None:  # consent given, but every such address is suppressed
                return Verdict(True, SUPPRESSED_ADDRESS, listed, 0.0)
            if contact.reachable is not None:  # a channel left out might have taken them
                return self._unreachable(campaign, contact) or \
                    Verdict(True, NO_CONSENT, channels_of(campaign)[0], 0.0)
            return Verdict(True, NO_CONSENT, channels_of(campaign)[0], 0.0)
        channel, p_channel, send_at, p_time, others = pick
        if campaign.quiet_hours.active:
            tz = tz or zone_of(contact.meta, self.default_zone)
            wake = quiet_until(campaign.quiet_hours, tz, send_at or now)
            if wake and campaign.quiet_hours.action == "suppress":
                return Verdict(True, QUIET_HOURS, channel, 0.0, p_channel, p_time)
            send_at = wake or send_at
        if contact.history is not None and contact.history.blocked_by(
                self.caps(campaign, channel), send_at or now):
            return Verdict(True, FREQUENCY_CAP, channel, send_at, p_channel, p_time)
        return Verdict(False, "", channel, send_at, p_channel, p_time, others)

    def _unreachable(self, campaign: Contactable, contact: Contact) -> Verdict | None:
        """The verdict on a user allowed on no channel the caller can use (`Contact.reachable`),
        neither capped nor listed there, who would be allowed on a message channel the caller
        left out (no adapter on this server): suppressed `CHANNEL_UNAVAILABLE` on it; else,
        where such a channel's address is listed, `SUPPRESSED_ADDRESS` on it (no adapter
        would carry it either): as on the reachable channels, one that takes them outranks a
        listed one. None: there is none (they consented nowhere, or only on a placement,
        where a message never goes), so `NO_CONSENT`. `_allowed` is asked again without
        `reachable`, on this path only: a verdict allowed on some channel, or of a caller
        without `reachable` (ChooseVariant), does not pay for it."""
        out, listed, _ = self._allowed(campaign, contact._replace(reachable=None, addressed=False),
                                       True, None)
        away = next((c for c in out if c in ADDRESS_ATTRIBUTES), None)
        if away is not None:
            return Verdict(True, CHANNEL_UNAVAILABLE, away, 0.0)
        # only a message channel has an address to list
        return None if listed is None else Verdict(True, SUPPRESSED_ADDRESS, listed, 0.0)

    def _times(self, campaign: Contactable, contacts: Sequence[Contact],
               zones: list[zoneinfo.ZoneInfo], now: float) -> list[tuple[float, float]]:
        """(send_at or 0 = now, propensity) per contact: a slot of the send window's next
        occurrence (`choice.choose_times`) for those who may be contacted on some channel
        (caps aside: they are judged at the time chosen), now for the others."""
        from .choice import choose_times

        out = [(0.0, 1.0)] * len(contacts)
        window = campaign.send_window
        if not window.active:
            return out
        ok = [i for i, c in enumerate(contacts) if self._allowed(campaign, c, False, None)[0]]
        quiet = campaign.quiet_hours if campaign.quiet_hours.active else None
        times = choose_times(self.layout, self.prior.current, self.rng,
                             [contacts[i].state for i in ok],
                             [self._window(window, zones[i], now) for i in ok], now,
                             epsilon=self.epsilon, quiet=quiet, zones=[zones[i] for i in ok])
        for i, t in zip(ok, times):
            out[i] = t
        return out

    def _channels(self, contacts: Sequence[Contact], allowed: list[list[str]],
                  now: float) -> list[tuple[str, float, tuple]]:
        """(channel, propensity, the others allowed with theirs: `Verdict.others`) per contact
        among its `allowed` ones (`choice.choose_channels` where there are several; the first,
        or none, with propensity 1 otherwise)."""
        from .choice import choose_channels

        out = [(a[0] if a else "", 1.0, ()) for a in allowed]
        several = [i for i, a in enumerate(allowed) if len(a) > 1]
        picks = choose_channels(self.layout, self.prior.current, self.rng,
                                [contacts[i].state for i in several],
                                [allowed[i] for i in several], now, n_mc=self.n_mc)
        for i, pick in zip(several, picks):
            out[i] = pick
        return out

    @staticmethod
    def _window(window: SendWindow, tz: zoneinfo.ZoneInfo, now: float) -> tuple[float, float]:
        """The (active) send window's next or current occurrence in `tz`, [start, end) as
        unix seconds (from `now` when inside it): its local wall hours turned into instants by
        `zoneinfo`, so they stay right across a DST change (an hour in a gap resolves as
        `quiet_hours` does). A day whose window lies wholly in a DST gap (02:00-03:00 on a
        spring-forward night) has none: the next day's is taken."""
        first, last = window.start_hour % 24, window.end_hour % 24
        today, one = datetime.fromtimestamp(now, tz).date(), timedelta(days=1)

        def starting(day: date) -> tuple[float, float]:  # ends the next day if it wraps
            return _local(day, first, tz), _local(day + one if last <= first else day, last, tz)
        start, end = next(w for w in map(starting, (today + k * one for k in range(-1, 3)))
                          if now < w[1] and w[0] < w[1])
        return max(start, now), end


def _addressed(meta: Mapping | None, channel: str) -> bool:
    """Whether the profile meta record `meta` holds an address for `channel` (not checked
    here whether its adapter can carry it: `messages.delivery.address_of`)."""
    attribute = ADDRESS_ATTRIBUTES.get(channel)
    if attribute is None:
        return False
    value = ((meta or {}).get("attributes") or {}).get(attribute)
    return bool(value and value.strip())


def _local(day: date, hour: int, tz: zoneinfo.ZoneInfo) -> float:
    """The instant of `hour`:00 local time on `day` in `tz`."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=tz).timestamp()


def channels_of(campaign: Contactable) -> tuple[str, ...]:
    """The channels a campaign may contact on, in its order of preference (`channels`, or its
    one `channel`)."""
    return campaign.channels or (campaign.channel,)
