"""Typed results of the online model metrics (`model_stats`)."""
from __future__ import annotations

from dataclasses import dataclass

from protos.tailor.v1 import model_admin_pb2 as admin_pb

from .results import from_message

__all__ = ["Rate", "ModelChannelStats", "ModelStats"]


@dataclass(frozen=True)
class Rate:
    value: float
    low: float
    high: float
    """Interval at the requested confidence (Wilson for proportions, normal for revenue; a
    revenue `high` is inf while there is no purchase, or no spread, to estimate it from)."""
    k: int
    """The cut-off of a CTR@k (0 for other rates)."""


@dataclass(frozen=True)
class ModelChannelStats:
    model_version: str
    channel: str
    """web, app, email, sms, push, "unspecified", or "all" (the version's channels summed)."""
    impressions: int
    cold_start: int
    clicked: int
    clicks: int
    carted: int
    conversions: int
    revenue: float
    ctr: list[Rate]
    conversion_rate: Rate | None
    revenue_per_mille: Rate | None
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class ModelStats:
    rows: list[ModelChannelStats]
    """Newest version first; per version its "all" row, then one per channel."""

    @classmethod
    def from_pb(cls, msg: admin_pb.ModelStats) -> ModelStats:
        return from_message(cls, msg)
