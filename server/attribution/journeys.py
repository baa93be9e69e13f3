"""Journeys from stored raw events: touchpoints before each purchase, per user, aggregated.

Rules (per user, events in time order):

- a touchpoint is an event whose type is in `JourneyQuery.touch_types`, labelled by its channel
  or (grouped by campaign) by its campaign id, ``(<channel>)`` when it has none;
- a conversion is a purchase; its journey is the touches at or before it and at most
  `lookback` seconds older that no earlier conversion of the user has claimed (older ones in
  between are dropped, never reused);
- conversions from `start` to `end` (exclusive) are attributed; earlier ones, read from
  ``start - lookback``, only claim their touches;
- a conversion with no touch in its window is counted as unattributed;
- the touches from `start` to `end` after the user's last conversion, at most `lookback` apart
  from the last of them, make one null (non-converting) journey;
- events of a user at the same time are taken in event id order (touches and conversions:
  which conversion claims the touches, the touches' order in the journey);
- identical journeys are aggregated, unless `timestamps` are kept (time decay); journeys are
  ordered by their labels, then times (`_Collector.result`).
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kernels.attribution import DAY, BudgetExceeded, Paths
from protos.tailor.v1 import profile_pb2 as pb

from ..errors import InvalidArgument
from ..limits import DEFAULT_LIMITS
from ..validation import check_all_known, check_time

_DEADLINE_EVERY = 4096  # events read between two deadline checks

__all__ = ["JourneyQuery", "Journeys", "TOUCH_TYPES", "CONVERSION_TYPE", "build_journeys",
           "journeys_from_store"]

TOUCH_TYPES = ("email_sent", "email_open", "email_click", "sms_sent", "sms_click", "push_sent",
               "push_open", "push_click", "view", "click")
CONVERSION_TYPE = "purchase"
GROUPINGS = ("channel", "campaign")


@dataclass(frozen=True)
class JourneyQuery:
    """Which journeys to build. Times in seconds since the epoch; `end` 0 = no upper bound."""

    start: float = 0.0
    end: float = 0.0
    lookback: float = 30 * DAY
    by: str = "channel"
    touch_types: frozenset = frozenset(TOUCH_TYPES)
    nulls: bool = True
    timestamps: bool = False

    def check(self, known_types: Iterable[str],
              latest: float = DEFAULT_LIMITS.latest_timestamp) -> None:
        """`latest`: the latest time a request may name (`Limits.latest_timestamp`)."""
        if self.start < 0 or self.end < 0:
            raise InvalidArgument("start_time/end_time", "must be >= 0 seconds since the epoch")
        check_time("start_time", self.start, latest)
        check_time("end_time", self.end, latest)
        if self.end and self.end <= self.start:
            raise InvalidArgument("end_time", f"must be after start_time ({self.end:.0f} <= "
                                  f"{self.start:.0f}); 0 means no upper bound")
        if not self.lookback > 0:
            raise InvalidArgument("lookback_seconds", f"must be > 0, got {self.lookback:g}")
        if self.by not in GROUPINGS:
            raise InvalidArgument("group_by", f"expected one of {', '.join(GROUPINGS)}")
        check_all_known("touch_types", self.touch_types, set(known_types) - {CONVERSION_TYPE},
                        "unknown or not a touchpoint")


@dataclass
class Journeys:
    """Aggregated journeys (`paths` is None when there are none) and what could not be used."""

    paths: Paths | None
    users: int = 0
    unattributed_conversions: float = 0.0
    unattributed_value: float = 0.0


class _Collector:
    def __init__(self, query: JourneyQuery):
        self.q = query
        self.agg: dict[tuple, list[float]] = {}
        self.timed: list[tuple[tuple, tuple, float, float, float]] = []
        self.users = 0
        self.lost = [0.0, 0.0]

    def emit(self, touches: list[tuple[float, str, str]], conversions: float, value: float,
             nulls: float) -> None:
        labels = tuple(label for _, _, label in touches)
        if self.q.timestamps:
            self.timed.append((labels, tuple(t for t, _, _ in touches), conversions, value, nulls))
            return
        row = self.agg.setdefault(labels, [0.0, 0.0, 0.0])
        row[0] += conversions
        row[1] += value
        row[2] += nulls

    def user(self, touches: list[tuple[float, str, str]],
             purchases: list[tuple[float, str, float]]) -> None:
        """One user's touches (time, event id, label) and purchases (time, event id, value):
        in time order, ties in event id order (ids are unique: the store dedupes them)."""
        q = self.q
        self.users += 1
        touches.sort()
        purchases.sort()
        if q.end:
            purchases = [p for p in purchases if p[0] < q.end]
        free = 0
        for ts, _, value in purchases:
            j = free
            while j < len(touches) and touches[j][0] <= ts:
                j += 1
            window = [t for t in touches[free:j] if t[0] >= ts - q.lookback]
            free = j
            if ts < q.start:
                continue
            if window:
                self.emit(window, 1.0, value, 0.0)
            else:
                self.lost[0] += 1.0
                self.lost[1] += value
        rest = [t for t in touches[free:] if t[0] >= q.start and not (q.end and t[0] >= q.end)]
        if q.nulls and rest:
            self.emit([t for t in rest if t[0] >= rest[-1][0] - q.lookback], 0.0, 0.0, 1.0)

    def result(self) -> Journeys:
        """The journeys in a canonical order (by channels, then times), not the store's, which
        follows keyed hashes of the user ids: the answer (paths, channel order, a seeded
        sampled Shapley) is the same on every server holding the same events."""
        if self.q.timestamps:
            rows = sorted(self.timed)
            paths = Paths.from_sequences([r[0] for r in rows], [r[2] for r in rows],
                                         [r[3] for r in rows], [r[4] for r in rows],
                                         timestamps=[r[1] for r in rows]) if rows else None
        else:
            keys = sorted(self.agg)
            counts = list(zip(*(self.agg[k] for k in keys))) if keys else None
            paths = Paths.from_sequences(keys, *counts) if keys else None
        return Journeys(paths, self.users, *self.lost)


def build_journeys(events: Iterable[pb.Event], query: JourneyQuery,
                   deadline: float | None = None) -> Journeys:
    """Journeys of `events`, which must come user by user (any order within a user). Past
    `deadline` (time.monotonic() seconds, checked every few thousand events) it raises
    BudgetExceeded, as the kernels do."""
    out = _Collector(query)
    by_campaign = query.by == "campaign"
    user, touches, purchases = None, [], []
    for n, ev in enumerate(events):
        if deadline is not None and n % _DEADLINE_EVERY == 0 and time.monotonic() > deadline:
            raise BudgetExceeded("reading the stored events passed the deadline")
        if ev.user_id != user:
            if user is not None:
                out.user(touches, purchases)
            user, touches, purchases = ev.user_id, [], []
        if ev.type == CONVERSION_TYPE:
            purchases.append((ev.timestamp, ev.event_id, ev.value))
        elif ev.type in query.touch_types:
            label = (ev.campaign_id or f"({ev.channel})") if by_campaign else ev.channel
            touches.append((ev.timestamp, ev.event_id, label))
    if user is not None:
        out.user(touches, purchases)
    return out.result()


def journeys_from_store(export: Callable[..., Iterable[bytes]],
                        query: JourneyQuery, deadline: float | None = None) -> Journeys:
    """`build_journeys` over ``export(start, end, check)``'s lists of raw events
    (ProfileRepository.export, which scans every stored event: ``check`` raises BudgetExceeded
    past `deadline` while it skips those out of the range, too)."""
    start = max(query.start - query.lookback, 0.0)

    def check() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded("reading the stored events passed the deadline")
    events = itertools.chain.from_iterable(export(start, query.end, check))
    return build_journeys(map(pb.Event.FromString, events), query, deadline)
