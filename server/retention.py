"""Every retention cutoff of one sweep (`TailorServer.sweep_retention`), computed in one place.

A cutoff is `now` minus the kept time: whatever is older goes. A retention kept for good
(`inf` days, allowed for events, decisions, impressions, dead letters and audit files) gives `-inf`, which
the stores' time keys cannot encode (`keys.ms_part`, `keys.millis`: OverflowError): every
cutoff is clamped at 0 here, before nothing is older, so no sweep needs a clamp of its own.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .config import Settings

__all__ = ["Cutoffs", "retention_cutoffs"]

DAY = 86400.0


@dataclass(frozen=True)
class Cutoffs:
    """Unix seconds, each >= 0: what is older goes."""

    events: float
    """Raw events of a type without a retention of its own."""
    events_by_type: Mapping[str, float]
    """Raw events of the types `event_retention_days_by_type` names."""
    decisions: float
    """Closed decision records."""
    impressions: float
    """The impression log."""
    dead_letters: float
    """Dead letters, by the time they first failed."""
    audit: float | None
    """Closed audit files; None: no retention by age (`audit_retention_days` 0)."""


def _cutoff(now: float, days: float) -> float:
    return max(now - days * DAY, 0.0)


def retention_cutoffs(settings: Settings, now: float) -> Cutoffs:
    """The cutoffs of a sweep as of `now` under `settings`."""
    s = settings
    return Cutoffs(
        events=_cutoff(now, s.event_retention_days),
        events_by_type={t: _cutoff(now, d) for t, d in s.event_retention_days_by_type.items()},
        decisions=_cutoff(now, s.decision_retention_days),
        impressions=_cutoff(now, s.impression_retention_days),
        dead_letters=_cutoff(now, s.dead_letter_retention_days),
        audit=_cutoff(now, s.audit_retention_days) if s.audit_retention_days > 0 else None)
