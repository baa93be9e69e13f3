"""Typed results of `TailorClient` calls: frozen dataclasses built from the replies, so callers
read attributes a type checker knows instead of dict keys (`dataclasses.asdict` gives the dict).

Most are built by `from_message`, which reads each dataclass field from the reply's field of the
same name, following the field's annotation: a nested result, `X | None` (None when the reply
lacks the message), lists and maps of either, an enum as its name, a plain `dict` annotation
as the message's JSON mapping (names as in the .proto)."""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass

from google.protobuf import json_format
from google.protobuf.message import Message

from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import model_admin_pb2 as admin_pb
from protos.tailor.v1 import profile_pb2 as prof_pb

__all__ = ["BundleFallback", "CatalogChange", "Choice", "LoadedBundle", "ModelStatus", "RejectedEvent",
           "Reward", "TrackResult", "VersionShare", "from_message"]

T = typing.TypeVar("T")


def from_message(cls: type[T], msg: Message) -> T:
    """An instance of the dataclass `cls` from the protobuf `msg` (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], msg, f.name) for f in fields(cls)})


def _value(hint, msg: Message, name: str):
    value = getattr(msg, name)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `Result | None`
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return from_message(inner, value) if msg.HasField(name) else None
    enum = msg.DESCRIPTOR.fields_by_name[name].enum_type
    if enum is not None:
        return enum.values_by_number[value].name
    return _convert(hint, value)


def _convert(hint, value):
    if is_dataclass(hint):
        return from_message(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return [_convert(args[0], v) for v in value]
    if origin is dict:
        return {k: _convert(args[1], v) for k, v in value.items()}
    if hint is dict and isinstance(value, Message):
        return json_format.MessageToDict(value, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
    return value


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
    """A logged ChooseVariant decision (the holdout: `holdout`, arm -1, no variant; refused by
    the contact policy: `suppressed`, arm -2, no variant, `reason` why). Send it on `channel`
    at `send_at` (0: now; later when the user's quiet hours or the send window defer it)."""

    decision_id: str
    variant_id: str
    arm: int
    propensity: float
    holdout: bool
    content: dict[str, str] = field(default_factory=dict)
    suppressed: bool = False
    reason: str = ""
    """no_consent, suppressed_address, frequency_cap, quiet_hours ("" when allowed); or
    channel_unavailable, a ComposeMessage or SendCampaign decision's whose request id this
    choice repeats (the user may be contacted only on channels that server cannot send on)."""
    channel: str = ""
    """The channel to send on; "" from a server before the contact policy: the campaign's
    channel (as the server's own `verdict_of` reads a decision without one)."""
    send_at: float = 0.0
    """When to send (epoch s); 0: now, and from a server before the contact policy."""

    @classmethod
    def from_pb(cls, msg: camp_pb.ChooseVariantResponse) -> Choice:
        return cls(msg.decision_id, msg.variant_id, msg.arm, msg.propensity, msg.holdout,
                   dict(msg.content), msg.suppressed, msg.reason, msg.channel, msg.send_at)


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
class CatalogChange:
    """What UpsertItems / RemoveItems did: items taken, the catalog's sequence after the change,
    the model version it applies to, and how many upserted ids were new."""

    accepted: int
    sequence: int
    model_version: str
    new_items: int

    @classmethod
    def from_pb(cls, msg) -> CatalogChange:
        return from_message(cls, msg)


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
    ranker_candidates: int = 0
    """Candidates Recommend retrieves per request for the ranker to re-score with this bundle
    (the server's `ranker_candidates`, else the bundle's trained count; 0 from a server that
    does not say)."""

    @classmethod
    def from_pb(cls, msg: admin_pb.LoadedBundle) -> LoadedBundle:
        # in name order: a protobuf map has none, and `status` printed them shuffled
        return cls(msg.version, msg.index_type, msg.n_items, msg.dim, msg.has_ranker,
                   dict(sorted(msg.metrics.items())), msg.loaded_at, msg.ranker_candidates)


@dataclass(frozen=True)
class VersionShare:
    """A serving version's share of users and the guardrails' figures since the canary began."""

    version: str
    share: float
    requests: int
    errors: int
    p99_ms: float
    impressions: int
    clicks: int

    @classmethod
    def from_pb(cls, msg: admin_pb.VersionShare) -> VersionShare:
        return cls(msg.version, msg.share, msg.requests, msg.errors, msg.p99_ms, msg.impressions,
                   msg.clicks)


@dataclass(frozen=True)
class BundleFallback:
    """A start could not load the active version `from_version` and serves `to_version`
    instead, since `at` (unix seconds), until a version is chosen again."""

    from_version: str
    to_version: str
    at: float


@dataclass(frozen=True)
class ModelStatus:
    """What a server serves (`active`: None before any bundle; `canary` while one runs, with
    each version's share in `shares`), and what it could roll back to."""

    active: LoadedBundle | None
    previous_version: str
    available_versions: list[str]
    canary: LoadedBundle | None = None
    shares: list[VersionShare] = field(default_factory=list)
    guardrail: str = ""
    """The guardrails' latest verdict on the canary ("" when none runs)."""
    fallback: BundleFallback | None = None
    """Set while an older version is served because a start could not load the active one."""

    @classmethod
    def from_pb(cls, msg: admin_pb.ModelStatus) -> ModelStatus:
        active = LoadedBundle.from_pb(msg.active) if msg.HasField("active") else None
        canary = LoadedBundle.from_pb(msg.canary) if msg.HasField("canary") else None
        fallback = (BundleFallback(msg.fallback.from_version, msg.fallback.to_version,
                                   msg.fallback.at) if msg.HasField("fallback") else None)
        return cls(active, msg.previous_version, list(msg.available_versions), canary,
                   [VersionShare.from_pb(s) for s in msg.shares], msg.guardrail, fallback)
