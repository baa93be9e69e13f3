"""The event vocabulary and the default weights of a user's history, shared by training and server.

A history weighs each event by its type's weight (``rating`` events: the rating value times the
``rating`` weight, see `VALUED_TYPES`) and by ``2^(-age / half_life)``. A bundle's manifest
records the weights and half-life it was trained with (``history``); the server builds live
histories with the bundle's, and uses these defaults only where no bundle says otherwise.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "DEFAULT_HALF_LIFE_DAYS",
    "EVENT_TYPES",
    "VALUED_TYPES",
    "check_event_weights",
]

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "email_sent", "email_open",
               "email_click", "sms_sent", "sms_click", "push_sent", "push_open", "push_click",
               "unsubscribe", "rating", "email_bounce", "email_complaint", "sms_bounce")
"""Every event type, in code order: an event's type code indexes this tuple. New types are
appended (codes of stored events never change). The last three are delivery outcomes: a hard
bounce (the address does not exist) and a spam complaint put the address on the server's
suppression list; they are no interaction with an item (weight 0)."""

VALUED_TYPES = ("rating",)
"""Types whose history weight is the event's value times the type's weight."""

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "email_sent": 0.0,
    "email_open": 0.5, "email_click": 2.0, "sms_sent": 0.0, "sms_click": 2.0, "push_sent": 0.0,
    "push_open": 0.5, "push_click": 2.0, "unsubscribe": 0.0, "rating": 1.0,
    "email_bounce": 0.0, "email_complaint": 0.0, "sms_bounce": 0.0,
})
"""History weight per event type; 0 means the event is not an interaction with its item."""

DEFAULT_HALF_LIFE_DAYS = 30.0
"""Half-life of an event's weight in a history, in days."""


def check_event_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """A complete weight table: `weights` over the defaults; ValueError naming a bad entry."""
    table = dict(DEFAULT_EVENT_WEIGHTS)
    for name, value in weights.items():
        if name not in table:
            raise ValueError(f"event weight {name!r}: unknown event type "
                             f"(known: {', '.join(EVENT_TYPES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0.0 <= float(value) < float("inf")):
            raise ValueError(f"event weight {name!r}: must be a finite number >= 0, got {value!r}")
        table[name] = float(value)
    return table
