"""What a profile is made of: event vocabularies, the feature layout, stable item codes.

Event types and their default weights are the bundle contract's (`contract.events`).
"""
from __future__ import annotations

from dataclasses import dataclass

from contract.events import DEFAULT_EVENT_WEIGHTS, EVENT_TYPES, VALUED_TYPES
from kernels.feature_layout import DAY, FeatureLayout

__all__ = ["EVENT_TYPES", "EVENT_TYPES_V1", "CHANNELS", "DEFAULT_CHANNEL", "ProfileSchema"]

EVENT_TYPES_V1 = EVENT_TYPES[:14]
"""The vocabulary of layout 1 of stored feature states (before the delivery outcomes)."""

CHANNELS = ("web", "app", "email", "sms", "push")
DEFAULT_CHANNEL = {"email_sent": "email", "email_open": "email", "email_click": "email",
                   "sms_sent": "sms", "sms_click": "sms", "push_sent": "push", "push_open": "push",
                   "push_click": "push", "email_bounce": "email", "email_complaint": "email",
                   "sms_bounce": "sms"}

@dataclass(frozen=True)
class ProfileSchema:
    """The feature layout and limits every stored profile of this server follows."""

    max_categories: int = 64
    recent_capacity: int = 50
    half_lives_days: tuple[float, ...] = (1.0, 7.0, 30.0)

    def layout(self, event_types: tuple[str, ...] = EVENT_TYPES) -> FeatureLayout:
        """Category affinities use the default weights; live histories take their weights from
        the bundle when they are read (`Profiles.history_of`). `event_types`: an older
        vocabulary (`EVENT_TYPES_V1`), to read states stored with it."""
        return FeatureLayout(event_types=event_types, channels=CHANNELS,
                             n_categories=self.max_categories,
                             event_weights={t: DEFAULT_EVENT_WEIGHTS[t] for t in event_types},
                             half_lives_s=tuple(h * DAY for h in self.half_lives_days),
                             recent_capacity=self.recent_capacity, valued_types=VALUED_TYPES)
