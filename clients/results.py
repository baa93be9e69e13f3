"""Typed results of `TailorClient` calls: frozen dataclasses built from the replies, so callers
read attributes a type checker knows instead of dict keys (`dataclasses.asdict` gives the dict)."""
from __future__ import annotations

from dataclasses import dataclass, field

from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import model_admin_pb2 as admin_pb
from protos.tailor.v1 import profile_pb2 as prof_pb

__all__ = ["Choice", "LoadedBundle", "ModelStatus", "RejectedEvent", "Reward", "TrackResult"]


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


@dataclass(frozen=True)
class LoadedBundle:
    """The bundle a server serves."""

    version: str
    index_type: str
    n_items: int
    dim: int
    has_ranker: bool
    metrics: dict[str, float]
    """Evaluation figures from the manifest, e.g. `model.ndcg@10`."""
    loaded_at: float

    @classmethod
    def from_pb(cls, msg: admin_pb.LoadedBundle) -> LoadedBundle:
        return cls(msg.version, msg.index_type, msg.n_items, msg.dim, msg.has_ranker,
                   dict(msg.metrics), msg.loaded_at)


@dataclass(frozen=True)
class ModelStatus:
    """What a server serves (`active`: None before any bundle), and what it could roll back to."""

    active: LoadedBundle | None
    previous_version: str
    available_versions: list[str]

    @classmethod
    def from_pb(cls, msg: admin_pb.ModelStatus) -> ModelStatus:
        active = LoadedBundle.from_pb(msg.active) if msg.HasField("active") else None
        return cls(active, msg.previous_version, list(msg.available_versions))
