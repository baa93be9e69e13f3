"""Quiet hours and send windows in the user's local time.

A user's time zone is the profile attribute `timezone` (an IANA name, read with `zoneinfo`);
users without one, or with a name `zoneinfo` does not know, get Settings
`contact_default_timezone`. Local wall times are turned into instants by `zoneinfo`, so a
deferred send lands on the wall-clock time asked for on both sides of a DST change (21:00 to
08:00 over the spring-forward night is 10 local hours but 9 real ones). An end time that falls
in a DST gap (02:30 on a spring-forward night) resolves with the offset before the change, i.e.
as long after the gap as it would have been after 02:00. One in the hour a fall-back night
repeats is its first pass, or its second when the first is already past.
"""
from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from ..errors import InvalidArgument
from ..validation import check_known
from .errors import BadClockTime, UnknownTimeZone

__all__ = ["QuietHours", "SendWindow", "zone", "zone_of", "local_zone_of", "utc_offset_min",
           "quiet_until", "quiet_mask", "QUIET_HOURS", "ACTIONS", "TIMEZONE"]

QUIET_HOURS = "quiet_hours"
TIMEZONE = "timezone"
"""The profile attribute holding the user's IANA time zone (UpsertAttributes checks it)."""
ACTIONS = ("defer", "suppress")
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _minutes(field: str, text: str) -> int:
    m = _CLOCK.fullmatch(text)
    if m is None:
        raise BadClockTime(field, text)
    return int(m[1]) * 60 + int(m[2])


@functools.lru_cache(maxsize=1024)
def _zone_or_none(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a region of the
        return None  # database ("Europe", "America/Argentina") is a directory, no zone


def zone(field: str, name: str) -> zoneinfo.ZoneInfo:
    """The named IANA zone; `UnknownTimeZone` naming `field` otherwise."""
    found = _zone_or_none(name) if name else None
    if found is None:
        raise UnknownTimeZone(field, name)
    return found


def zone_of(meta: Mapping | None, default: zoneinfo.ZoneInfo) -> zoneinfo.ZoneInfo:
    """The user's zone from their `timezone` attribute, else `default`."""
    name = ((meta or {}).get("attributes") or {}).get(TIMEZONE)
    return (_zone_or_none(name) or default) if name else default


def utc_offset_min(zone: zoneinfo.ZoneInfo, ts: float) -> int:
    """The zone's UTC offset at unix time `ts`, in whole minutes (DST included)."""
    return int(datetime.fromtimestamp(ts, zone).utcoffset().total_seconds()) // 60


def local_zone_of(default: zoneinfo.ZoneInfo):
    """`zone_of` with `default`, giving None for a user in the default zone when that is UTC
    (their hours need no conversion)."""
    utc = default.key in ("UTC", "Etc/UTC")

    def of(meta: Mapping | None) -> zoneinfo.ZoneInfo | None:
        found = zone_of(meta, default)
        return None if utc and found is default else found
    return of


@dataclass(frozen=True)
class QuietHours:
    """Local [start, end) in which nobody is contacted; start > end spans midnight."""

    start: str = ""
    end: str = ""
    action: str = ""
    """One of `ACTIONS`; "" = defer."""

    @property
    def active(self) -> bool:
        return bool(self.start or self.end)

    def checked(self, field: str = "quiet_hours") -> QuietHours:
        if not self.active:
            if self.action:  # an action on no quiet hours: times left out by mistake
                check_known(f"{field}.action", self.action, ACTIONS)
                raise InvalidArgument(f"{field}.start", "is required when action is set (quiet "
                                      "hours need a start and an end)")
            return QuietHours()
        if _minutes(f"{field}.start", self.start) == _minutes(f"{field}.end", self.end):
            raise InvalidArgument(f"{field}.end", "must differ from start")
        check_known(f"{field}.action", self.action or "defer", ACTIONS)
        return QuietHours(self.start, self.end, self.action or "defer")

    @functools.cached_property
    def span(self) -> tuple[int, int]:
        """(start, end) in minutes after local midnight."""
        return _minutes("quiet_hours.start", self.start), _minutes("quiet_hours.end", self.end)


_RECENT: dict[tuple[tuple[int, int], zoneinfo.ZoneInfo], tuple[float, float]] = {}
"""(quiet span, zone) -> (UTC minute, `quiet_until` answer) of the latest call: the decision
path asks the same question for every user of a zone within a minute."""
_RECENT_MAX = 4096


def quiet_until(quiet: QuietHours, tz: zoneinfo.ZoneInfo, now: float) -> float:
    """0.0 when `now` is outside the quiet hours in `tz`, else the instant they end (unix s).

    The answer depends on the local wall minute alone, which is the same all through a UTC
    minute where the zone's offset is whole minutes: then it is kept for the rest of that
    minute (`_RECENT`; an offset with seconds, as some zones had before 1972, is never kept).
    """
    key, minute = (quiet.span, tz), now // 60
    recent = _RECENT.get(key)
    if recent is not None and recent[0] == minute:
        return recent[1]
    local = datetime.fromtimestamp(now, tz)
    wake = _wake(quiet.span, tz, local)
    if local.second == int(now - minute * 60):  # local minutes start with UTC ones
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        _RECENT[key] = (minute, wake)
    return wake


def quiet_mask(quiet: QuietHours, tz: zoneinfo.ZoneInfo, at: np.ndarray) -> np.ndarray:
    """Whether a send at each instant of `at` (unix s, at most a day apart) is inside the quiet
    hours in `tz`, i.e. `quiet_until` is not 0 there: vectorised with one UTC offset when the
    zone has the same whole-minute offset at the first and the last (else each alone)."""
    at = np.asarray(at, np.float64)
    if not at.size:
        return np.zeros(at.shape, bool)
    off = datetime.fromtimestamp(float(at.min()), tz).utcoffset().total_seconds()
    if off != datetime.fromtimestamp(float(at.max()), tz).utcoffset().total_seconds() or off % 60:
        return np.array([quiet_until(quiet, tz, float(t)) != 0.0 for t in at.ravel()],
                        bool).reshape(at.shape)
    minute = np.floor((at + off) / 60.0) % 1440.0
    start, end = quiet.span
    if start < end:
        return (start <= minute) & (minute < end)
    return (minute >= start) | (minute < end)


def _wake(span: tuple[int, int], tz: zoneinfo.ZoneInfo, local: datetime) -> float:
    """`quiet_until` at the local time `local` in `tz`."""
    start, end = span
    minute = local.hour * 60 + local.minute
    if start < end:
        if not start <= minute < end:
            return 0.0
        day = local.date()
    elif end <= minute < start:
        return 0.0
    else:
        day = local.date() + timedelta(days=1) if minute >= start else local.date()
    wake = datetime(day.year, day.month, day.day, end // 60, end % 60, tzinfo=tz)
    at = wake.timestamp()
    if at <= local.timestamp():  # in the repeated hour of a fall-back night, after its first
        at = wake.replace(fold=1).timestamp()  # pass: the end's second pass
    return at


@dataclass(frozen=True)
class SendWindow:
    """Local hours [start_hour, end_hour) a send may be scheduled in (send-time choice, which
    `kernels.send_time` makes); start_hour == end_hour: any hour."""

    start_hour: int = 0
    end_hour: int = 0

    def checked(self, field: str = "send_window") -> SendWindow:
        for name in ("start_hour", "end_hour"):
            if not 0 <= getattr(self, name) <= 24:
                raise InvalidArgument(f"{field}.{name}", "must be in 0..24")
        return self

    @property
    def active(self) -> bool:
        return self.start_hour % 24 != self.end_hour % 24
