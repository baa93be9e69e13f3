"""What the decision path knows about a campaign without an LMDB call of its own.

Two per-process caches, keyed by campaign id: the stored bytes (definition and posterior, read
in one snapshot at most every `state_refresh_s`: each LMDB call hands the GIL over), and the
parsed definition with what its decisions need (context builder, whether the contact policy
reads the profile, the frequency caps per channel), rebuilt only when the stored definition's
bytes change. Changes made through this worker `clear` the bytes at once; other workers'
changes show within `state_refresh_s`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..contact import ContactPolicy, channels_of
from ..contact.consent import TRANSACTIONAL, need_of
from ..interfaces import ProfileStates, SuppressedAddresses
from ..limits import DEFAULT_LIMITS
from .context import ContextBuilder
from .repository import CampaignRepository
from .spec import Campaign

__all__ = ["CampaignCache", "Entry"]


@dataclass(frozen=True)
class _Snapshot:
    """A campaign's stored bytes (definition, posterior) as read at `at` (monotonic)."""

    at: float
    raw: bytes
    blob: bytes


@dataclass
class Entry:
    """A parsed campaign definition with its context builder and what its contact checks need,
    keyed by the stored bytes."""

    raw: bytes
    campaign: Campaign
    context: ContextBuilder
    reads_profile: bool
    """Whether the contact policy reads the user's profile (consent, quiet hours)."""
    caps: dict[str, tuple]
    """The frequency caps per channel (`ContactPolicy.caps`)."""
    channels: tuple[str, ...]
    """The channels the campaign may contact on (`contact.channels_of`)."""
    with_states: bool
    """Whether a decision reads the user's feature state (context features, or a channel or
    send time to choose)."""
    transactional: bool = False
    """Whether the campaign is transactional (its contacts stay out of the global caps)."""
    reads_contacts: bool = False
    """Whether a decision reads the user's contact history: a channel to choose, some capped
    (the choice is among the channels the caps leave free)."""
    reads_erasures: bool = False
    """Whether a decision asks if a user without a profile was erased
    (`ContactPolicy.needs_erasures`)."""
    needs: dict[str, str] = field(default_factory=dict)
    """What consent each channel needs ("opt_in", "opt_out", "none": `consent.need_of`;
    "transactional" for a transactional campaign's), for the writer's check again at the
    commit (`recheck`)."""

    def choices(self, verdict) -> tuple:
        """(channel, caps, propensity) of every channel a verdict allowed (its own and
        `Verdict.others`), in the campaign's order, for the writer to fall back on
        (`DecisionRecord.choices`) when it finds the channel over its caps or refused by the
        contact policy (`recheck`: an opt-out or a listed address committed since the read,
        on a campaign with or without caps); none when the verdict allowed only one."""
        if not verdict.others:
            return ()
        probs = {verdict.channel: verdict.channel_propensity, **dict(verdict.others)}
        return tuple((c, self.caps[c], probs[c]) for c in self.channels if c in probs)


class CampaignCache:
    def __init__(self, repo: CampaignRepository, profiles: ProfileStates, contact: ContactPolicy,
                 suppressions: SuppressedAddresses | None, state_refresh_s: float,
                 context_value_max: float = DEFAULT_LIMITS.context_value_max):
        self.repo, self._profiles, self.contact = repo, profiles, contact
        self.context_value_max = context_value_max
        self._suppressions = suppressions
        self.state_refresh_s = state_refresh_s
        self._snapshots: dict[str, _Snapshot] = {}
        self._entries: dict[str, Entry] = {}

    def snapshot(self, campaign_id: str) -> tuple[bytes | None, bytes | None]:
        """(campaign bytes, posterior bytes), read from the store at most every
        `state_refresh_s` per campaign; (None, None) for an unknown campaign."""
        snap, now = self._snapshots.get(campaign_id), time.monotonic()
        if snap is None or now - snap.at >= self.state_refresh_s:
            raw, blob = self.repo.snapshot(campaign_id)
            if raw is None:
                return None, None
            snap = self._snapshots[campaign_id] = _Snapshot(now, raw, blob)
        return snap.raw, snap.blob

    def clear(self) -> None:
        """Drop the stored bytes (after a write through this worker)."""
        self._snapshots.clear()

    def entry(self, campaign_id: str, raw: bytes) -> Entry:
        """The parsed definition of the stored bytes `raw`."""
        entry = self._entries.get(campaign_id)
        if entry is None or entry.raw != raw:
            campaign = self.repo.parse(raw)
            spec, channels = campaign.spec, channels_of(campaign.spec)
            context = ContextBuilder(spec.context_features, self._profiles.states,
                                     self._profiles.layout, self.context_value_max)
            caps = {c: self.contact.caps(spec, c) for c in channels}
            reads_contacts = len(channels) > 1 and any(caps.values())
            entry = Entry(raw, campaign, context,
                          self.contact.needs_profile(spec) or self._checks_addresses(channels)
                          or reads_contacts, caps, channels,
                          context.needs_profile or self.contact.needs_state(spec),
                          spec.purpose == TRANSACTIONAL, reads_contacts,
                          self.contact.needs_erasures(spec), self._needs(spec, channels))
            self._entries[campaign_id] = entry
        return entry

    def _needs(self, spec, channels: tuple[str, ...]) -> dict[str, str]:
        """`Entry.needs`."""
        if spec.purpose == TRANSACTIONAL:
            return dict.fromkeys(channels, TRANSACTIONAL)
        return {c: need_of(self.contact.consent_defaults, c) for c in channels}

    def _checks_addresses(self, channels: tuple[str, ...]) -> bool:
        """Whether a decision on `channels` reads the profile for its address (suppression)."""
        sup = self._suppressions
        return sup is not None and any(sup.covers(c) for c in channels)
