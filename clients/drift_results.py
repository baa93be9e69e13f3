"""Typed result of `TailorClient.drift_report`: tailor.v1.DriftReport as frozen dataclasses."""
from __future__ import annotations

from dataclasses import dataclass

from .results import from_message

__all__ = ["DriftReport", "FeatureDrift"]


@dataclass(frozen=True)
class FeatureDrift:
    """PSI of one feature's live values against the bundle's training reference."""

    name: str
    psi: float
    """NaN without live values."""
    status: str
    """ok, drift, few values, no traffic, or "not computed: <why>"."""
    live_count: int
    reference_count: int
    categorical: bool
    edges: list[float]
    reference_share: list[float]
    live_share: list[float]


@dataclass(frozen=True)
class DriftReport:
    version: str
    status: str
    """ok, drift, or "no reference" (a bundle trained without one)."""
    threshold: float
    min_count: int
    window_seconds: float
    windows: int
    since: float
    features: list[FeatureDrift]

    @classmethod
    def from_pb(cls, msg) -> DriftReport:
        return from_message(cls, msg)
