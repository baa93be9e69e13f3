"""Typed results of the campaign and messaging calls (`create/update/archive_campaign`,
`campaign_stats`, `sample_size`, `compose/preview_message`, `send_campaign`, `send_progress`)."""
from __future__ import annotations

from dataclasses import dataclass

from protos.tailor.v1 import campaign_pb2 as camp_pb
from protos.tailor.v1 import messaging_pb2 as msg_pb

from .results import from_message

__all__ = ["Campaign", "VariantStats", "AbRow", "CampaignStats", "SampleSize", "SmsLength",
           "Message", "SendProgress", "DeadLetter"]


@dataclass(frozen=True)
class Campaign:
    spec: dict
    """The tailor.v1.CampaignSpec as the dict `create_campaign` takes."""
    archived: bool
    created_at: float
    updated_at: float
    revision: int

    @classmethod
    def from_pb(cls, msg: camp_pb.Campaign) -> Campaign:
        return from_message(cls, msg)


@dataclass(frozen=True)
class VariantStats:
    variant_id: str
    decisions: int
    pulls: float
    rewards: float
    mean: float
    ci_low: float
    ci_high: float
    prob_best: float
    expected_loss: float


@dataclass(frozen=True)
class AbRow:
    """One variant against the control (see campaign.proto for each figure)."""

    variant_id: str
    control_id: str
    diff: float
    ci_low: float
    ci_high: float
    statistic: float
    pvalue: float
    prob_beat_control: float
    msprt_pvalue: float
    srm_pvalue: float
    srm_mismatch: bool
    seconds_to_significance: float


@dataclass(frozen=True)
class CampaignStats:
    campaign_id: str
    policy: str
    variants: list[VariantStats]
    ab: list[AbRow]
    holdout_decisions: int
    holdout_rewarded: int
    holdout_rewards: float
    pending: int
    decisions_per_second: float

    @classmethod
    def from_pb(cls, msg: camp_pb.CampaignStats) -> CampaignStats:
        return from_message(cls, msg)


@dataclass(frozen=True)
class SampleSize:
    """Observations per arm of an A/B/n test."""

    per_arm: list[int]
    total: int
    alpha_per_comparison: float
    test: str

    @classmethod
    def from_pb(cls, msg: camp_pb.GetSampleSizeResponse) -> SampleSize:
        return from_message(cls, msg)


@dataclass(frozen=True)
class SmsLength:
    encoding: str
    units: int
    segments: int


@dataclass(frozen=True)
class Message:
    """A composed (a logged decision, rendered) or previewed message; a suppressed decision or
    the holdout has no parts."""

    campaign_id: str
    decision_id: str
    variant_id: str
    channel: str
    send_at: float
    suppressed: bool
    reason: str
    holdout: bool
    parts: dict[str, str]
    headers: dict[str, str]
    unsubscribe_url: str
    sms: SmsLength | None
    delivered: bool
    scheduled: bool = False
    """`deliver` stored it to go at `send_at` (quiet hours or a send window deferred it)."""
    send_id: str = ""
    """A scheduled message's send job (`send_progress`, `cancel_send` follow it)."""

    @classmethod
    def from_pb(cls, msg: msg_pb.Message) -> Message:
        return from_message(cls, msg)


@dataclass(frozen=True)
class SendProgress:
    """Counts of a send job."""

    send_id: str
    campaign_id: str
    total: int
    sent: int
    suppressed: int
    suppressed_by_reason: dict[str, int]
    failed: int
    failed_by_reason: dict[str, int]
    pending: int
    done: bool
    started_at: float
    finished_at: float
    cancelled_at: float = 0.0
    """When CancelSend or its bounce breaker stopped it (0: not stopped)."""
    stopped_by: str = ""
    """What stopped it: `cancelled` (CancelSend), `bounce_breaker` (its hard-bounce breaker);
    "" while not stopped, and from a server before the field."""

    @classmethod
    def from_pb(cls, msg: msg_pb.SendProgress) -> SendProgress:
        return from_message(cls, msg)


@dataclass(frozen=True)
class DeadLetter:
    """A message no adapter could deliver (the user as a keyed reference only)."""

    id: str
    channel: str
    campaign_id: str
    decision_id: str
    user_ref: str
    reason: str
    attempts: int
    at: float

    @classmethod
    def from_pb(cls, msg: msg_pb.DeadLetter) -> DeadLetter:
        return from_message(cls, msg)
