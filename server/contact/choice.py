"""Send-time and channel choice for a batch of contacts, in one vectorised pass each.

`ContactPolicy.verdicts` hands over what it knows per contact (feature state or None, the
send window as unix seconds, the channels allowed at the time chosen): `choose_times` returns
per contact (send_at or 0 = now, its propensity) from `kernels.send_time` `choose_slots` over
the rows with a window, and then `choose_channels` (channel, its propensity) from
`kernels.channel_choice` `thompson` over the rows with several channels allowed at that time
(their caps are judged then). The slots are cut into the user's local hours and scored by
local hour of week at their zone's offset at the window's start (`quiet_hours.zone_of`: the
zone the window itself is in; the state's offset is that of its last event, 0 before any, last
season's across a DST change). The window's slots inside the campaign's quiet hours (in each
user's zone) are no candidates, so the logged propensity is that of the send time itself (a
quiet slot deferred to the end of quiet hours would share that time with the slot there); a
window quiet throughout offers its start alone (propensity 1), which the policy then defers or
suppresses.
Rows without a choice get the first allowed channel / now, with propensity 1 (the policy's).
"""
from __future__ import annotations

import zoneinfo
from collections.abc import Sequence

import numpy as np

from kernels.channel_choice import posteriors, thompson
from kernels.contact_population import Population, user_hours
from kernels.feature_layout import HOURS_PER_WEEK, FeatureLayout, new_states
from kernels.send_time import _EPOCH_HOUR_OF_WEEK, SendTimes, choose_slots, slots

from .quiet_hours import QuietHours, quiet_mask, utc_offset_min

__all__ = ["choose_channels", "choose_times"]


def _states(layout: FeatureLayout, states: Sequence[np.ndarray | None]) -> np.ndarray:
    out = new_states(layout, len(states))  # no profile: an empty state, i.e. the prior alone
    for i, state in enumerate(states):
        if state is not None:
            out[i] = state
    return out


def choose_channels(layout: FeatureLayout, population: Population, rng: np.random.Generator,
                    states: Sequence[np.ndarray | None], allowed: Sequence[Sequence[str]],
                    now: float, *, n_mc: int) -> list[tuple[str, float, tuple]]:
    """(channel, its propensity, ((other allowed channel, its propensity), ...) in the order
    of `allowed`) per contact, each with two or more allowed channels
    (`kernels.channel_choice.thompson`)."""
    if not states:
        return []
    a, b = posteriors(layout, _states(layout, states), now, population)
    names = np.array(population.channels)
    mask = np.array([np.isin(names, channels) for channels in allowed])
    chosen, probs = thompson(a, b, mask, rng, n_mc)
    column = {name: j for j, name in enumerate(population.channels)}
    return [(population.channels[c], float(probs[k, c]),
             tuple((o, float(probs[k, column[o]])) for o in allowed[k]
                   if o != population.channels[c]))
            for k, c in enumerate(chosen.tolist())]


def choose_times(layout: FeatureLayout, population: Population, rng: np.random.Generator,
                 states: Sequence[np.ndarray | None], windows: Sequence[tuple[float, float]],
                 now: float, *, epsilon: float, quiet: QuietHours | None = None,
                 zones: Sequence[zoneinfo.ZoneInfo] = ()) -> list[tuple[float, float]]:
    """(send_at or 0 = now, its propensity) per contact, each with a send window ([start, end)
    unix s). `zones` (per contact): the zones the windows' slots are cut and scored in (none
    given: the states' offsets); `quiet` (active): the quiet hours whose slots are left out of
    the windows."""
    if not states:
        return []
    hist, tz = user_hours(layout, _states(layout, states), now)
    span = np.array(windows, np.float64)
    starts = np.maximum(span[:, 0], now)
    if zones:  # the user's zone today, not the state's offset (none yet, or last season's)
        tz = _offsets(zones, starts)
    cand = slots(starts, span[:, 1], tz)
    if zones:
        cand = _across_changes(cand, zones, starts, span[:, 1], tz)
    if quiet is not None:
        cand = _calm(cand, quiet, zones)
    at, prop, _ = choose_slots(hist, cand, population, rng, epsilon)
    return list(zip(np.where(at > now, at, 0.0).tolist(), prop.tolist()))


def _offsets(zones: Sequence[zoneinfo.ZoneInfo], starts: np.ndarray) -> np.ndarray:
    """Each row's UTC offset in minutes at its window's start in its zone (users of one zone
    and window share it: worked out once)."""
    done: dict[tuple, int] = {}
    out = np.empty(len(zones), np.int64)
    for i, (tz, start) in enumerate(zip(zones, starts.tolist())):
        off = done.get((tz, start))
        if off is None:
            off = done[tz, start] = utc_offset_min(tz, start)
        out[i] = off
    return out


def _across_changes(cand: SendTimes, zones: Sequence[zoneinfo.ZoneInfo], starts: np.ndarray,
                    ends: np.ndarray, tz: np.ndarray) -> SendTimes:
    """`cand` with each row whose zone changes its offset inside the window (a DST night) cut
    at the local hour starts that exist and scored at each slot's own offset: one offset a row
    (the start's) put the slots after the change off by the change (an hour, or :30 in Lord
    Howe). Such rows are rare; users of one zone and window share theirs."""
    redo, done = {}, {}
    for i, key in enumerate(zip(zones, starts.tolist(), ends.tolist(), tz.tolist())):
        if key not in done:  # the offset at the end differs from the start's (tz): a change
            zone, start, end, off = key
            done[key] = (None if utc_offset_min(zone, max(start, end - 1.0)) == off
                         else _hour_starts(zone, start, end))
        if done[key] is not None:
            redo[i] = done[key]
    if not redo:
        return cand
    n, m = cand.at.shape
    m = max(m, *(len(a) for a, _ in redo.values()))
    at, bins, valid = np.zeros((n, m)), np.zeros((n, m), np.int64), np.zeros((n, m), bool)
    at[:, :cand.at.shape[1]], bins[:, :cand.at.shape[1]] = cand.at, cand.bin
    valid[:, :cand.at.shape[1]] = cand.valid
    for i, (times, hours) in redo.items():
        k = len(times)
        at[i], bins[i], valid[i] = times[-1], hours[-1], False
        at[i, :k], bins[i, :k], valid[i, :k] = times, hours, True
    return SendTimes(at, bins, valid)


def _hour_starts(zone: zoneinfo.ZoneInfo, start: float, end: float) -> tuple[list, list]:
    """([start, then each local hour start in (start, end)], their local hours of week): UTC
    offsets are whole quarter hours, so every local hour starts on a UTC quarter hour."""
    times = [start]
    t = (start // 900.0 + 1.0) * 900.0
    while t < end:
        if (t + 60.0 * utc_offset_min(zone, t)) % 3600.0 == 0.0:
            times.append(t)
        t += 900.0
    hours = [(int((t + 60.0 * utc_offset_min(zone, t)) // 3600.0) + _EPOCH_HOUR_OF_WEEK)
             % HOURS_PER_WEEK for t in times]
    return times, hours


def _calm(cand: SendTimes, quiet: QuietHours, zones: Sequence[zoneinfo.ZoneInfo]) -> SendTimes:
    """`cand` without the slots inside `quiet` in each row's zone; a row quiet throughout keeps
    its first slot alone (the window's start). Users of one zone share their slots (the
    window's local hours): each distinct row is worked out once."""
    valid = cand.valid.copy()
    done: dict[tuple, np.ndarray] = {}
    for i, tz in enumerate(zones):
        row = valid[i]
        key = (tz, cand.at[i].tobytes(), row.tobytes())
        calm = done.get(key)
        if calm is None:
            calm = done[key] = ~quiet_mask(quiet, tz, cand.at[i, row])
        row[row] = calm
        if not row.any():
            row[0] = True
    return SendTimes(cand.at, cand.bin, valid)
