"""Event validation: each event is accepted or rejected on its own, with the reason."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..limits import DEFAULT_LIMITS, Limits
from ..logging import valid_answer_id
from ..validation import (
    RESERVED_EVENT_ID,
    RESERVED_STOP_MARK,
    SERVER_EVENT_PREFIX,
    STOP_MARK,
    has_control,
    id_problem,
    key_problem,
    refused_since,
    shown,
    text_problem,
)
from .schema import CHANNELS, DEFAULT_CHANNEL, EVENT_TYPES
from .seen import SEEN_TYPES

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
    request_id: str = ""
    """The Recommend answer that showed the item (the impression log's join), if known."""
    position: int = 0
    """1-based position of the item in that answer; 0: unknown."""
    stored_only: bool = False
    """Its user id holds a character refused only since C1 and bidirectional controls were
    (`validation.refused_since`; an unsubscribe only: `check_event`): it is stored only if its
    user's profile is (judged in the write: `ProfileRepository`), never making one."""
    campaign_stored_only: bool = False
    """Its campaign id holds a character refused only since (an unsubscribe only:
    `check_event`): it is taken only if a campaign is stored under that id (judged by
    `Profiles.submit`), never storing a new such id."""
    by_stop: bool = False
    """Recorded by the server's own SMS STOP handling (`messages.reports.opt_out_event`): the
    only event that may carry `validation.STOP_MARK`. No wire message sets it."""
    by_server: bool = False
    """Recorded by the server itself of a decision's message (`messages.reports`,
    `messages.delivery.sent_event`): the only events whose id may start with
    `validation.SERVER_EVENT_PREFIX`. No wire message sets it."""


@dataclass(frozen=True)
class EventRules:
    future_tolerance_s: float = 300.0
    retention_s: float = 365 * 86400.0
    limits: Limits = DEFAULT_LIMITS
    """Id and attribute sizes (`id_bytes`, `event_attributes`, `event_attribute_bytes`)."""
    retention_by_type: Mapping[str, float] = field(default_factory=dict)
    """Seconds a raw event of these types is kept, instead of `retention_s`."""
    seen_types: frozenset[str] = SEEN_TYPES
    """Event types whose items enter the user's live seen-set (`profiles.seen`)."""
    seen_first: frozenset[str] = frozenset({"purchase", "rating"})
    """Event types whose items a full live seen-set keeps first (those excluded for good)."""

    def __post_init__(self):
        unknown = sorted(set(self.retention_by_type) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"event_retention_days_by_type: unknown event types {unknown} "
                             f"(known: {', '.join(EVENT_TYPES)})")
        bad = sorted(t for t, s in self.retention_by_type.items() if not s > 0)
        if bad:
            raise ValueError(f"event_retention_days_by_type: {bad} must be more than 0 days")

    def retention_of(self, event_type: str) -> float:
        return self.retention_by_type.get(event_type, self.retention_s)


_TYPES, _CHANNELS = frozenset(EVENT_TYPES), frozenset(CHANNELS)


def check_event(ev: TrackedEvent, rules: EventRules, now: float | None = None) -> str | None:
    """None when `ev` is acceptable, else why not (naming the field). Fills a default channel.
    An unsubscribe's user id may be one stored before C1 and bidirectional controls were
    refused (an opt-out is the user's right): the event is then marked `stored_only`. Other
    events of such an id stay refused: they would add behaviour (features, seen items,
    rewards, impression joins) under an id the rule keeps out of logs and exports. So may an
    unsubscribe's campaign id (the campaign its message came from, stored before: a
    provider's STOP report of it, `messages.reports.record_opt_out`, names it): it opts out
    a channel, whatever the campaign, and was refused with it; the event is then marked
    `campaign_stored_only` (a campaign must be stored under that id)."""
    now = time.time() if now is None else now
    id_bytes = rules.limits.id_bytes
    short = id_bytes >> 2  # ids this short (in characters) fit: measured only when longer
    # one scan of the four ids for a control character: each is scanned alone only if it is there
    odd = has_control(ev.event_id + ev.user_id + ev.item_id + ev.campaign_id) is not None
    for name, value in (("event_id", ev.event_id), ("user_id", ev.user_id)):
        problem = id_problem(value, id_bytes) if not value or len(value) > short \
            or (odd and has_control(value)) else None
        if problem:
            if name == "user_id" and ev.type == "unsubscribe" and refused_since(value, id_bytes):
                ev.stored_only = True  # an opt-out of a profile stored before the rule
                continue
            return f"{name} {problem}"
    if not ev.by_server and ev.event_id.startswith(SERVER_EVENT_PREFIX):  # the server's own
        return RESERVED_EVENT_ID
    if ev.type not in _TYPES:
        return f"type {shown(ev.type)} is unknown (known: {', '.join(EVENT_TYPES)})"
    implied = DEFAULT_CHANNEL.get(ev.type)
    if not ev.channel:
        if ev.type == "unsubscribe":  # an opt-out of "web" would leave the real channel open
            return "channel is required for an unsubscribe (the channel opted out of)"
        ev.channel = implied or "web"
    if ev.channel not in _CHANNELS:
        return f"channel {shown(ev.channel)} is unknown (known: {', '.join(CHANNELS)})"
    if implied and ev.channel != implied:  # its type names the channel (features, caps agree)
        return (f"channel {shown(ev.channel)} contradicts type {ev.type!r}, an event of the "
                f"{implied} channel (give {implied!r} or leave channel empty)")
    for name, value in (("item_id", ev.item_id), ("campaign_id", ev.campaign_id)):
        problem = id_problem(value, id_bytes) if len(value) > short \
            or (odd and has_control(value)) else None
        if problem:
            if name == "campaign_id" and ev.type == "unsubscribe" and refused_since(value, id_bytes):
                ev.campaign_stored_only = True  # the campaign of a message sent before the rule
                continue
            return f"{name} {problem}"
    if not -rules.limits.event_value_max <= ev.value <= rules.limits.event_value_max:
        return (f"value {ev.value:g} is not a finite number within ±"
                f"{rules.limits.event_value_max:g}")
    if ev.value < 0 and ev.type == "purchase":
        return f"value {ev.value:g} of a purchase is negative"
    if not math.isfinite(ev.timestamp) or ev.timestamp <= 0:
        return "timestamp is missing or not a positive number of seconds"
    if ev.timestamp > now + rules.future_tolerance_s:
        ahead = ev.timestamp - now
        ahead_s = f"{ahead:.0f}" if ahead < 1e12 else f"{ahead:.3g}"  # 1e+300, not 301 digits
        return f"timestamp is {ahead_s}s in the future (tolerance {rules.future_tolerance_s:.0f}s)"
    keep_s = rules.retention_by_type.get(ev.type, rules.retention_s) if rules.retention_by_type \
        else rules.retention_s
    if ev.timestamp < now - keep_s:
        return f"timestamp is older than the {keep_s / 86400:g}-day retention window"
    if ev.request_id and not valid_answer_id(ev.request_id):
        return ("request_id is not 1..64 characters of [A-Za-z0-9._:-] (with .<i> after them "
                "for answer i of a RecommendBatch)")
    if not 0 <= ev.position <= rules.limits.recommend_k:
        return f"position {ev.position} is outside 0..{rules.limits.recommend_k}"
    return _bad_attributes(ev.attributes, rules.limits, ev.by_stop) if ev.attributes else None


def _bad_attributes(attributes: dict[str, str], limits: Limits, by_stop: bool) -> str | None:
    if len(attributes) > limits.event_attributes:
        return f"attributes has {len(attributes)} entries, at most {limits.event_attributes}"
    size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
    if size > limits.event_attribute_bytes:
        return f"attributes take {size} bytes, at most {limits.event_attribute_bytes}"
    for key, value in attributes.items():  # as a profile attribute's (`validation.check_key`)
        if not key:
            return "attributes has an empty key"
        if not key.isascii() or has_control(key):
            problem = key_problem(key)
            if problem is not None:
                return f"attributes key {shown(key)} {problem}"
        if not value.isprintable() and (problem := text_problem(value, multiline=True)):
            return f"attributes[{shown(key)}] {problem}"  # free text (never echoed)
    # one lookup, not a call per key (~0.15 us of ~1.3 us here with 3 attributes)
    return RESERVED_STOP_MARK if not by_stop and STOP_MARK in attributes else None
