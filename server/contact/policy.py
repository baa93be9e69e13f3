"""The contact policy: may this user be contacted for this campaign, on which channel, when?

`ContactPolicy.verdicts` is pure (no I/O) and batch-first: ChooseVariant calls it with one
`Contact`, PlanCampaign with a batch, each read by the caller in one read transaction. Checks,
in order: consent (`consent.consent_reason`, the first of the campaign's channels the user may
be contacted on), quiet hours (defer: `send_at` = when they end; or suppress), and, when the
caller read the user's `ContactHistory`, the frequency caps. The caps are checked again, and
counted, atomically where the decision is logged (`caps`), which alone is authoritative.
"""
from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..config import DEFAULT_CONSENT
from .caps import FREQUENCY_CAP, Cap, ContactHistory, FrequencyCap, effective_caps
from .consent import NO_CONSENT, TRANSACTIONAL, consent_reason
from .quiet_hours import QUIET_HOURS, QuietHours, quiet_until, zone, zone_of

if TYPE_CHECKING:
    import numpy as np

    from ..config import Settings

__all__ = ["Verdict", "Contact", "ContactPolicy", "Contactable"]


@dataclass(frozen=True)
class Verdict:
    suppressed: bool
    reason: str
    """"" when allowed; else no_consent, suppressed_address, frequency_cap or quiet_hours."""
    channel: str
    """The channel to contact on."""
    send_at: float
    """Unix seconds; 0 = now."""


@dataclass(frozen=True)
class Contact:
    """What the caller read about one user (one read transaction for a batch)."""

    user_id: str
    meta: Mapping | None = None
    """The profile meta record (attributes, consent), None without a profile."""
    state: np.ndarray | None = None
    """The feature state (send-time and channel choice read it), None without one."""
    history: ContactHistory | None = None
    """Recent contacts, when the caller read them (None: caps are left to the writer)."""


class Contactable(Protocol):
    """The campaign fields the policy reads (`campaigns.spec.CampaignSpec` has them)."""

    purpose: str
    channel: str
    channels: tuple[str, ...]
    frequency_caps: tuple[FrequencyCap, ...]
    quiet_hours: QuietHours


class ContactPolicy:
    """Settings-level rules (consent defaults, default time zone, global caps) applied to a
    campaign's own (channels, purpose, caps, quiet hours)."""

    def __init__(self, consent_defaults: Mapping[str, str] = DEFAULT_CONSENT,
                 default_timezone: str = "UTC",
                 global_caps: Sequence[Cap] = ()):
        self.consent_defaults = dict(consent_defaults)
        self.default_zone: zoneinfo.ZoneInfo = zone("contact_default_timezone", default_timezone)
        self.global_caps = tuple(tuple(c) for c in global_caps)

    @classmethod
    def from_settings(cls, s: Settings) -> ContactPolicy:
        return cls(s.consent_defaults, s.contact_default_timezone, s.contact_frequency_caps)

    def needs_profile(self, campaign: Contactable) -> bool:
        """Whether verdicts on `campaign` read the profile (consent or quiet hours to check)."""
        needs_consent = campaign.purpose != TRANSACTIONAL and any(
            self.consent_defaults.get(c, "none") != "none" for c in _channels(campaign))
        return needs_consent or campaign.quiet_hours.active

    def caps(self, campaign: Contactable, channel: str) -> tuple[Cap, ...]:
        """The caps a decision of `campaign` on `channel` must pass (transactional campaigns
        skip the global ones)."""
        glob = () if campaign.purpose == TRANSACTIONAL else self.global_caps
        return effective_caps(channel, campaign.frequency_caps, glob)

    def verdicts(self, campaign: Contactable, contacts: Sequence[Contact],
                 now: float) -> list[Verdict]:
        """One verdict per contact, in order."""
        return [self._verdict(campaign, c, now) for c in contacts]

    def _verdict(self, campaign: Contactable, contact: Contact, now: float) -> Verdict:
        channels, channel = _channels(campaign), None
        for c in channels:
            if consent_reason(contact.meta, c, campaign.purpose, self.consent_defaults) is None:
                channel = c
                break
        if channel is None:
            return Verdict(True, NO_CONSENT, channels[0], 0.0)
        send_at = 0.0
        if campaign.quiet_hours.active:
            send_at = quiet_until(campaign.quiet_hours, zone_of(contact.meta, self.default_zone), now)
            if send_at and campaign.quiet_hours.action == "suppress":
                return Verdict(True, QUIET_HOURS, channel, 0.0)
        if contact.history is not None and contact.history.blocked_by(
                self.caps(campaign, channel), send_at or now):
            return Verdict(True, FREQUENCY_CAP, channel, send_at)
        return Verdict(False, "", channel, send_at)


def _channels(campaign: Contactable) -> tuple[str, ...]:
    return campaign.channels or (campaign.channel,)
