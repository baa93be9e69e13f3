"""Typed results of the profile calls (`get_profile`, `upsert_attributes`, `set_consent`,
`add_suppression`, `check_suppression`): the tailor.v1 profile messages as frozen dataclasses."""
from __future__ import annotations

from dataclasses import dataclass, field

from protos.tailor.v1 import profile_pb2 as prof_pb

from .results import from_message

__all__ = ["Consent", "RecentItem", "ChannelRates", "Features", "Event", "Profile", "Suppression"]


@dataclass(frozen=True)
class Consent:
    opted_in: bool
    source: str
    timestamp: float
    purpose: str
    """marketing or transactional."""
    channel: str


@dataclass(frozen=True)
class RecentItem:
    item_id: str
    weight: float
    timestamp: float


@dataclass(frozen=True)
class ChannelRates:
    open_rate: float
    click_rate: float
    sends: float


@dataclass(frozen=True)
class Features:
    """A live profile's decayed features (see profile.proto for each one's meaning)."""

    counts: dict[str, float]
    decayed_counts: dict[str, float]
    recency_seconds: float
    frequency: float
    monetary: float
    monetary_decayed: dict[str, float]
    category_affinity: dict[str, float]
    hour_of_week: list[float]
    channel_rates: dict[str, ChannelRates]
    first_seen: float
    last_seen: float
    n_events: int


@dataclass(frozen=True)
class Event:
    event_id: str
    user_id: str
    type: str
    channel: str
    campaign_id: str
    item_id: str
    value: float
    timestamp: float
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """One user's profile; PII is masked (`pii_masked`) unless the caller has the pii-reader role."""

    user_id: str
    attributes: dict[str, str]
    consent: dict[str, Consent]
    """The marketing consent per channel."""
    features: Features | None
    """None for a user without live events."""
    recent_items: list[RecentItem]
    events: list[Event]
    """Raw events, newest first."""
    pii_masked: bool
    created_at: float
    updated_at: float
    consents: list[Consent]
    """Every (channel, purpose) consent."""
    consent_history: list[Consent]

    @classmethod
    def from_pb(cls, msg: prof_pb.Profile) -> Profile:
        return from_message(cls, msg)


@dataclass(frozen=True)
class Suppression:
    """Whether an address is on the suppression list, why and since when."""

    suppressed: bool
    reason: str
    timestamp: float
    kind: str
    """email or phone."""
    marketing_only: bool = False
    """It blocks marketing only: an unsubscribe kept past the user's erasure, which the
    address's next marketing opt-in lifts (False: every message)."""

    @classmethod
    def from_pb(cls, msg: prof_pb.Suppression) -> Suppression:
        return from_message(cls, msg)
