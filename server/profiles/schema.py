"""What a profile is made of: event vocabularies, the feature layout, stable item codes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kernels.feature_layout import DAY, FeatureLayout

__all__ = ["EVENT_TYPES", "CHANNELS", "DEFAULT_CHANNEL", "EVENT_WEIGHTS", "PII_KEYS",
           "ProfileSchema", "item_code"]

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "email_sent", "email_open",
               "email_click", "sms_sent", "sms_click", "push_sent", "push_open", "push_click",
               "unsubscribe", "rating")
CHANNELS = ("web", "app", "email", "sms", "push")
DEFAULT_CHANNEL = {"email_sent": "email", "email_open": "email", "email_click": "email",
                   "sms_sent": "sms", "sms_click": "sms", "push_sent": "push", "push_open": "push",
                   "push_click": "push"}
# The same weights the training job gives events (docs/bundle.md `history.event_weights`).
EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0,
                 "email_click": 2.0, "email_open": 0.5, "sms_click": 2.0, "push_open": 0.5,
                 "push_click": 2.0, "rating": 1.0}
PII_KEYS = frozenset({"email", "phone", "first_name", "last_name", "address", "name"})

_CODE_MASK = (1 << 53) - 1


def item_code(item_id: str) -> int:
    """A stable 53-bit code for an item id (exact in float64; same in every process/bundle)."""
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=8).digest(), "big") & _CODE_MASK


@dataclass(frozen=True)
class ProfileSchema:
    """The feature layout and limits every stored profile of this server follows."""

    max_categories: int = 64
    recent_capacity: int = 50
    half_lives_days: tuple[float, ...] = (1.0, 7.0, 30.0)

    def layout(self) -> FeatureLayout:
        return FeatureLayout(event_types=EVENT_TYPES, channels=CHANNELS,
                             n_categories=self.max_categories,
                             half_lives_s=tuple(h * DAY for h in self.half_lives_days),
                             recent_capacity=self.recent_capacity, event_weights=EVENT_WEIGHTS)
