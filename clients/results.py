"""Typed results of `TailorClient` calls: frozen dataclasses built from the replies, so callers
read attributes a type checker knows instead of dict keys (`dataclasses.asdict` gives the dict)."""
from __future__ import annotations

from dataclasses import dataclass, field

from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import profile_pb2 as prof_pb

__all__ = ["Choice", "RejectedEvent", "Reward", "TrackResult"]


@dataclass(frozen=True)
class RejectedEvent:
    index: int
    """Position in the request (in the whole stream for `track`)."""
    event_id: str
    reason: str


@dataclass(frozen=True)
class TrackResult:
    """What the server did with tracked events."""

    accepted: int
    duplicates: int
    rejected: list[RejectedEvent] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    """Ids stored by this call, in request order (`track_batch` only)."""

    @classmethod
    def from_pb(cls, msg: prof_pb.TrackEventsResponse) -> TrackResult:
        return cls(msg.accepted, msg.duplicates,
                   [RejectedEvent(r.index, r.event_id, r.reason) for r in msg.rejected],
                   list(msg.accepted_ids))


@dataclass(frozen=True)
class Choice:
    """A logged ChooseVariant decision (the holdout: `holdout`, arm -1, no variant)."""

    decision_id: str
    variant_id: str
    arm: int
    propensity: float
    holdout: bool
    content: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, msg: camp_pb.ChooseVariantResponse) -> Choice:
        return cls(msg.decision_id, msg.variant_id, msg.arm, msg.propensity, msg.holdout,
                   dict(msg.content))


@dataclass(frozen=True)
class Reward:
    """The decision a reward was recorded for; `duplicate` when it already had that reward."""

    campaign_id: str
    variant_id: str
    duplicate: bool

    @classmethod
    def from_pb(cls, msg: camp_pb.ReportRewardResponse) -> Reward:
        return cls(msg.campaign_id, msg.variant_id, msg.duplicate)
