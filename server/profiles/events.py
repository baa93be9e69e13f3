"""Event validation: each event is accepted or rejected on its own, with the reason."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..store.keys import SEP_CHAR as _SEP
from .schema import CHANNELS, DEFAULT_CHANNEL, EVENT_TYPES

__all__ = ["TrackedEvent", "EventRules", "check_event"]


@dataclass(slots=True)
class TrackedEvent:
    event_id: str
    user_id: str
    type: str
    channel: str
    campaign_id: str
    item_id: str
    value: float
    timestamp: float
    attributes: dict[str, str] = field(default_factory=dict)
    source: object = None
    """The wire message it came from, if any (re-serialised as the stored raw event)."""


@dataclass(frozen=True)
class EventRules:
    future_tolerance_s: float = 300.0
    retention_s: float = 365 * 86400.0
    max_id_bytes: int = 128
    max_attributes: int = 32
    max_attribute_bytes: int = 1024


_TYPES, _CHANNELS = frozenset(EVENT_TYPES), frozenset(CHANNELS)


def _bad_id(value: str, rules: EventRules) -> str | None:
    if not value:
        return "is empty"
    if len(value.encode()) > rules.max_id_bytes:
        return f"is longer than {rules.max_id_bytes} bytes"
    if _SEP in value:
        return "contains the control character 0x1F"
    return None


def check_event(ev: TrackedEvent, rules: EventRules, now: float | None = None) -> str | None:
    """None when `ev` is acceptable, else why not (naming the field). Fills a default channel."""
    now = time.time() if now is None else now
    # Ids of at most max_id_bytes // 4 characters fit in max_id_bytes (UTF-8: <= 4 bytes a
    # character), so only longer ones are encoded to be measured.
    short = rules.max_id_bytes // 4
    for name, value in (("event_id", ev.event_id), ("user_id", ev.user_id)):
        problem = _bad_id(value, rules) if not value or len(value) > short or _SEP in value else None
        if problem:
            return f"{name} {problem}"
    if ev.type not in _TYPES:
        return f"type {ev.type!r} is unknown (known: {', '.join(EVENT_TYPES)})"
    if not ev.channel:
        ev.channel = DEFAULT_CHANNEL.get(ev.type, "web")
    if ev.channel not in _CHANNELS:
        return f"channel {ev.channel!r} is unknown (known: {', '.join(CHANNELS)})"
    for name, value in (("item_id", ev.item_id), ("campaign_id", ev.campaign_id)):
        if value and ((len(value) > short and len(value.encode()) > rules.max_id_bytes) or _SEP in value):
            return f"{name} is longer than {rules.max_id_bytes} bytes or contains 0x1F"
    if not math.isfinite(ev.value):
        return "value is not a finite number"
    if not math.isfinite(ev.timestamp) or ev.timestamp <= 0:
        return "timestamp is missing or not a positive number of seconds"
    if ev.timestamp > now + rules.future_tolerance_s:
        return (f"timestamp is {ev.timestamp - now:.0f}s in the future "
                f"(tolerance {rules.future_tolerance_s:.0f}s)")
    if ev.timestamp < now - rules.retention_s:
        return f"timestamp is older than the {rules.retention_s / 86400:.0f}-day retention window"
    return _bad_attributes(ev.attributes, rules) if ev.attributes else None


def _bad_attributes(attributes: dict[str, str], rules: EventRules) -> str | None:
    if len(attributes) > rules.max_attributes:
        return f"attributes has {len(attributes)} entries, at most {rules.max_attributes}"
    size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > rules.max_attribute_bytes:
        return f"attributes take {size} bytes, at most {rules.max_attribute_bytes}"
    return None
