"""Incremental profile features: one flat float64 record per user, updated on every event batch.

The record's layout and byte codec live in `kernels.feature_layout`; this module applies event
batches to records (`update`, `update_many`) and reads them (`read_features`, `recent_items`).

Decay is lazy. `REF_TS` is the latest event time seen and every decayed slot is valued at that
time. A batch first moves each touched state to the latest of its old `REF_TS` and the batch's
timestamps (multiplying decayed slots by 2^(-dt/h)), then adds each event weighted by
2^(-(REF_TS - t)/h): an event older than the state (out of order) is added already decayed, time
never moves backwards. This equals decaying to each event in turn, up to float rounding, and makes
decayed sums independent of arrival order. `read_features(..., now)` decays to `now` without
mutating. Features never need the raw events, so dropping old raw events (retention) keeps them.

`update` / `update_many` run the Cython kernel (`kernels._features`) unless `use_native=False`,
which runs `reference_update_many`, the plain-numpy version of the same computation.
"""
from __future__ import annotations

import math

import numpy as np

from .feature_layout import (
    FIRST_TS,
    HEADER_SLOTS,
    HOURS_PER_WEEK,
    LAST_PURCHASE_TS,
    MONETARY_ALL,
    N_EVENTS,
    N_RECENT,
    REF_TS,
    TZ_OFFSET_MIN,
    FeatureLayout,
    check_record,
)

__all__ = [
    "Events", "update", "update_many", "reference_update_many", "read_features",
    "recent_items", "recent_entries", "recent_weights", "hour_of_week_many", "channel_counts_many",
]

MAX_ITEM_CODE = 2 ** 53
MAX_TZ_OFFSET_MIN = 24 * 60
# 1970-01-01 00:00 UTC was a Thursday: hour 0 of the epoch is hour 72 of a Monday-based week.
_EPOCH_HOUR_OF_WEEK = 72

# Error codes of the native validation pass -> (argument, problem).
_NATIVE_ERRORS = {
    1: ("events.type", "must be in [0, n_event_types)"),
    2: ("events.channel", "must be in [0, n_channels)"),
    3: ("events.category", "must be -1 (unknown) or in [0, n_categories)"),
    4: ("events.item", "must be -1 (none) or in [0, 2**53)"),
    5: ("events.ts", "must be finite"),
    6: ("events.value", "must be finite"),
    7: ("events.tz_offset_min", f"must be in [-{MAX_TZ_OFFSET_MIN}, {MAX_TZ_OFFSET_MIN}]"),
    8: ("user_index", "must be in [0, n_states)"),
}


class Events:
    """One batch of events as a struct of arrays, applied in array order.

    Parameters
    ----------
    type, channel : int array
        Codes into `layout.event_types` / `layout.channels`.
    ts : float array
        Unix seconds (UTC).
    item : int array, optional
        Item code (>= 0), or -1 for events without an item (default -1).
    category : int array, optional
        Category code of the item, -1 unknown (default -1).
    value : float array, optional
        E.g. the order amount of a purchase (default 0).
    tz_offset_min : int array, optional
        Local time minus UTC in minutes. When given, each event uses its own offset and the
        state keeps the last one; when omitted, the offset stored in the state is used.
    """

    __slots__ = ("type", "channel", "item", "category", "value", "ts", "tz_offset_min")

    def __init__(self, type, channel, ts, item=None, category=None, value=None,
                 tz_offset_min=None):
        self.type = np.ascontiguousarray(type, np.int32).reshape(-1)
        n = self.type.shape[0]
        self.channel = self._arr(channel, np.int32, n, "channel")
        self.ts = self._arr(ts, np.float64, n, "ts")
        self.item = (np.full(n, -1, np.int64) if item is None
                     else self._arr(item, np.int64, n, "item"))
        self.category = (np.full(n, -1, np.int32) if category is None
                         else self._arr(category, np.int32, n, "category"))
        self.value = (np.zeros(n, np.float64) if value is None
                      else self._arr(value, np.float64, n, "value"))
        self.tz_offset_min = (None if tz_offset_min is None
                              else self._arr(tz_offset_min, np.int32, n, "tz_offset_min"))

    @staticmethod
    def _arr(x, dtype, n, name):
        a = np.ascontiguousarray(x, dtype).reshape(-1)
        if a.shape[0] != n:
            raise ValueError(f"events.{name}: length {a.shape[0]}, expected {n} (len of type)")
        return a

    def __len__(self) -> int:
        return self.type.shape[0]

    def take(self, index) -> Events:
        """The events at `index` (any numpy index), in that order."""
        return Events(self.type[index], self.channel[index], self.ts[index], self.item[index],
                      self.category[index], self.value[index],
                      None if self.tz_offset_min is None else self.tz_offset_min[index])


# ---------------------------------------------------------------------------------------------
# Update

_ZEROS = np.zeros(4096, np.int64)
_ZEROS.flags.writeable = False
_NO_TZ = np.zeros(0, np.int32)


def update(layout: FeatureLayout, state: np.ndarray, events: Events,
           use_native: bool = True) -> np.ndarray:
    """Apply `events` (one user's, in array order) to `state` in place; returns `state`."""
    if not (isinstance(state, np.ndarray) and state.ndim == 1 and state.dtype == np.float64
            and state.flags.c_contiguous and state.flags.writeable):
        raise ValueError("state: must be a writable C-contiguous 1-d float64 array")
    check_record(layout, state, "state")
    n = len(events)
    rows = _ZEROS[:n] if n <= _ZEROS.shape[0] else np.zeros(n, np.int64)
    _dispatch(layout, state.reshape(1, -1), rows, events, use_native)
    return state


def update_many(layout: FeatureLayout, states: np.ndarray, user_index, events: Events,
                use_native: bool = True) -> np.ndarray:
    """Apply a batch of events across users: event i goes to row `user_index[i]` of `states`.

    Events are applied in array order per user. Validation happens before any state changes:
    on ValueError no state was modified. Returns `states` (updated in place).
    """
    if not (isinstance(states, np.ndarray) and states.ndim == 2 and states.dtype == np.float64
            and states.flags.c_contiguous and states.flags.writeable):
        raise ValueError("states: must be a writable C-contiguous [n, size] float64 array")
    check_record(layout, states, "states")
    rows = np.ascontiguousarray(user_index, np.int64).reshape(-1)
    if rows.shape[0] != len(events):
        raise ValueError(f"user_index: length {rows.shape[0]}, expected {len(events)} events")
    return _dispatch(layout, states, rows, events, use_native)


def _dispatch(layout, states, rows, events, use_native):
    if not use_native:
        return reference_update_many(layout, states, rows, events)
    from . import _features
    if _features.HEADER_SLOTS != HEADER_SLOTS:
        raise RuntimeError("kernels._features is stale: header slots differ; rebuild it")
    weights, flags, inv_hl, inv_hour_hl, dims, offs = layout._kernel_args()
    has_tz = events.tz_offset_min is not None
    n_states = states.shape[0]
    code, at = _features.update_many(
        states, rows, events.type, events.channel, events.item, events.category,
        events.value, events.ts, events.tz_offset_min if has_tz else _NO_TZ, has_tz, weights,
        flags, inv_hl, inv_hour_hl, dims, offs, np.empty(n_states, np.float64),
        np.zeros(n_states, np.uint8))
    if code:
        argument, problem = _NATIVE_ERRORS[code]
        raise ValueError(f"{argument}: {problem} (event {at})")
    return states


def _validate(layout: FeatureLayout, n_states: int, rows: np.ndarray, ev: Events) -> None:
    T, C, K, _, _ = layout.shape
    checks = [
        (1, (ev.type < 0) | (ev.type >= T)),
        (2, (ev.channel < 0) | (ev.channel >= C)),
        (3, (ev.category < -1) | (ev.category >= K)),
        (4, (ev.item < -1) | (ev.item >= MAX_ITEM_CODE)),
        (5, ~np.isfinite(ev.ts)),
        (6, ~np.isfinite(ev.value)),
        (7, np.zeros(len(ev), bool) if ev.tz_offset_min is None
         else np.abs(ev.tz_offset_min.astype(np.int64)) > MAX_TZ_OFFSET_MIN),
        (8, (rows < 0) | (rows >= n_states)),
    ]
    bad = [(int(np.argmax(mask)), code) for code, mask in checks if mask.any()]
    if bad:
        at, code = min(bad)
        argument, problem = _NATIVE_ERRORS[code]
        raise ValueError(f"{argument}: {problem} (event {at})")


def _hour_of_week(ts: float, tz_offset_min: float) -> int:
    hour = int(np.floor((ts + 60.0 * tz_offset_min) / 3600.0))
    return (hour + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK


def reference_update_many(layout: FeatureLayout, states: np.ndarray, rows: np.ndarray,
                          ev: Events) -> np.ndarray:
    """Plain-numpy version of the kernel (same order of operations); see `update_many`."""
    _validate(layout, states.shape[0], rows, ev)
    inv_hl = 1.0 / np.asarray(layout.half_lives_s, np.float64)
    inv_hour_hl = 1.0 / layout.hour_half_life_s
    weights = np.asarray(layout.event_weights, np.float64)
    purchase = np.isin(np.asarray(layout.event_types), layout.purchase_types)
    engagement = np.isin(np.asarray(layout.event_types), layout.engagement_types)
    valued = np.isin(np.asarray(layout.event_types), layout.valued_types)
    N = layout.recent_capacity

    # 1. move every touched state to the latest of its reference time and its new events
    for r in np.unique(rows):
        state = states[r]
        new_ref = max(state[REF_TS], ev.ts[rows == r].max())
        if state[N_EVENTS] > 0 and new_ref > state[REF_TS]:
            v = layout.views(state)
            f = np.exp2(-(new_ref - state[REF_TS]) * inv_hl)
            v["decayed"] *= f[:, None, None]
            v["money"] *= f
            v["category"] *= f[:, None]
            v["hour"] *= np.exp2(-(new_ref - state[REF_TS]) * inv_hour_hl)
        state[REF_TS] = new_ref

    # 2. add each event valued at its state's reference time
    for i in range(len(ev)):
        state = states[rows[i]]
        v = layout.views(state)
        t, et, ch = ev.ts[i], ev.type[i], ev.channel[i]
        dt = state[REF_TS] - t
        f = np.exp2(-dt * inv_hl)
        v["counts"][et, ch] += 1.0
        v["decayed"][:, et, ch] += f
        state[N_EVENTS] += 1.0
        state[FIRST_TS] = min(state[FIRST_TS], t)
        if purchase[et]:
            state[MONETARY_ALL] += ev.value[i]
            v["money"] += ev.value[i] * f
            state[LAST_PURCHASE_TS] = max(state[LAST_PURCHASE_TS], t)
        w = weights[et]
        if ev.category[i] >= 0 and w != 0.0:
            v["category"][:, ev.category[i]] += w * f
        if ev.tz_offset_min is not None:
            state[TZ_OFFSET_MIN] = ev.tz_offset_min[i]
        if engagement[et]:
            v["hour"][_hour_of_week(t, state[TZ_OFFSET_MIN])] += np.exp2(-dt * inv_hour_hl)
        if ev.item[i] >= 0 and w > 0.0:
            amount = ev.value[i] if valued[et] else 1.0
            _reference_recent_insert(v, state, N, float(ev.item[i]), t, et, amount)
    return states


def _reference_recent_insert(v, state, N: int, item: float, t: float, et: int,
                             amount: float) -> None:
    n = int(state[N_RECENT])
    hit = np.flatnonzero(v["rc_item"][:n] == item)
    if hit.size:
        j = hit[0]
        v["rc_amt"][j, et] += amount
        v["rc_ts"][j] = max(v["rc_ts"][j], t)
        return
    if n < N:
        j = n
        state[N_RECENT] = n + 1
    else:
        j = int(np.argmin(v["rc_ts"]))  # first slot holding the oldest ts
        if t < v["rc_ts"][j]:
            return  # older than everything kept: not among the N most recent items
    v["rc_item"][j], v["rc_ts"][j], v["rc_w"][j] = item, t, 0.0
    v["rc_amt"][j] = 0.0
    v["rc_amt"][j, et] = amount


# ---------------------------------------------------------------------------------------------
# Reads

def recent_weights(layout: FeatureLayout, state: np.ndarray, weights=None) -> np.ndarray:
    """Summed (undecayed) weight of each recent item, in slot order: its amount per event type
    times `weights` (aligned with `layout.event_types`; default `layout.event_weights`), plus
    the weight a version-1 state carried over (`rc_w`)."""
    return _summed(layout, layout.views(state), int(state[N_RECENT]), weights)


def _summed(layout: FeatureLayout, v: dict, n: int, weights) -> np.ndarray:
    """`recent_weights` from the state's `views` and its recent-item count `n`."""
    w = np.asarray(layout.event_weights if weights is None else weights, np.float64)
    # One Python pass over the few types: NaN, inf and negatives all fail `0 <= x < inf`.
    if w.shape != (len(layout.event_types),) or not all(0.0 <= x < math.inf for x in w.tolist()):
        raise ValueError(f"weights: {len(layout.event_types)} finite values >= 0, one per type")
    return v["rc_w"][:n] + v["rc_amt"][:n] @ w


def recent_items(layout: FeatureLayout, state: np.ndarray, half_life_s: float,
                 length: int | None = None, now: float | None = None, weights=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's history: (items int64, weights float64), oldest first, at most `length`.

    Weight = `recent_weights(layout, state, weights)` x 2^(-(t_last - t)/half_life_s), t the
    item's latest event and t_last the latest recent-item event (as users.npz in
    docs/bundle.md); with `now`, t_last = max(now, latest). A repeated item is one entry: its
    event weights summed, its latest ts. Items of weight 0 under `weights` are left out before
    the `length` most recent are taken (as training drops events of weight 0).
    """
    items, out, _ = recent_entries(layout, state, half_life_s, length, now, weights)
    return items, out


def recent_entries(layout: FeatureLayout, state: np.ndarray, half_life_s: float,
                   length: int | None = None, now: float | None = None, weights=None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`recent_items` and each item's time: (items, weights, ts), ts its slot's `rc_ts`, the
    latest of its events of a type the layout weighs above 0 (also when `weights` gives that
    type 0, as long as the item's weight under `weights` is above 0)."""
    if not (math.isfinite(half_life_s) and half_life_s > 0):
        raise ValueError(f"half_life_s: must be finite > 0, got {half_life_s}")
    if length is not None and length < 0:
        raise ValueError(f"length: must be >= 0, got {length}")
    v = layout.views(state)
    summed = _summed(layout, v, int(state[N_RECENT]), weights)
    ts = v["rc_ts"][:summed.shape[0]]
    kept = np.flatnonzero(summed > 0)
    order = kept[np.argsort(ts[kept], kind="stable")]
    if length is not None:
        order = order[max(order.shape[0] - length, 0):]
    if order.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
    t_last = ts.max() if now is None else max(float(now), ts.max())
    at = ts[order]
    out = summed[order] * np.exp2(-(t_last - at) / half_life_s)
    return v["rc_item"][order].astype(np.int64), out, at


def read_features(layout: FeatureLayout, state: np.ndarray, now: float,
                  recent: bool = True) -> dict:
    """Human-readable features as of `now` (decayed to `now`, state untouched).

    A `now` before the latest event reads at the latest event (no un-decaying). Keys:
    n_events, first_ts, last_ts, recency_s, last_purchase_ts, purchase_recency_s (NaN when there
    is no event / purchase), counts_all [T, C], counts_decayed [H, T, C], frequency_all,
    frequency_decayed [H], monetary_all, monetary_decayed [H], category_affinity [H, K],
    hour_of_week [168] (Monday 00:00 local first), tz_offset_min, sends/opens/clicks_all [C],
    open_rate_all / click_rate_all [C], open_rate_decayed / click_rate_decayed [H, C], and
    unless `recent` is False, recent_items / recent_ts / recent_weights (oldest first, raw
    summed weights under the layout's event weights, see `recent_weights`), half_lives_s.
    """
    if not np.isfinite(now):
        raise ValueError(f"now: must be finite, got {now}")
    check_record(layout, state, "state")
    v = layout.views(state)
    n_events = int(state[N_EVENTS])
    ref = state[REF_TS]
    dt = max(float(now) - ref, 0.0) if n_events else 0.0
    f = np.exp2(-dt / layout.half_lives)
    f_hour = np.exp2(-dt / layout.hour_half_life_s)
    counts = v["counts"].copy()
    decayed = v["decayed"] * f[:, None, None]
    a, b = layout.rate_prior
    # per channel, summed over the purchase, send, open and click types: [4, C] and [H, 4, C]
    purchases_all, sends_all, opens_all, clicks_all = layout.read_selector @ counts
    by_kind = layout.read_selector @ decayed
    sends_dec, opens_dec, clicks_dec = by_kind[:, 1], by_kind[:, 2], by_kind[:, 3]
    last_p = state[LAST_PURCHASE_TS]
    per_send, per_send_dec = sends_all + a + b, sends_dec + a + b
    nan = float("nan")
    out = {
        "n_events": n_events,
        "first_ts": float(state[FIRST_TS]) if n_events else nan,
        "last_ts": float(ref) if n_events else nan,
        "recency_s": max(float(now) - float(ref), 0.0) if n_events else nan,
        "last_purchase_ts": float(last_p) if np.isfinite(last_p) else nan,
        "purchase_recency_s": max(float(now) - float(last_p), 0.0) if np.isfinite(last_p) else nan,
        "half_lives_s": layout.half_lives.copy(),
        "counts_all": counts,
        "counts_decayed": decayed,
        "frequency_all": float(purchases_all.sum()),
        "frequency_decayed": by_kind[:, 0].sum(axis=1),
        "monetary_all": float(state[MONETARY_ALL]),
        "monetary_decayed": v["money"] * f,
        "category_affinity": v["category"] * f[:, None],
        "hour_of_week": v["hour"] * f_hour,
        "tz_offset_min": int(state[TZ_OFFSET_MIN]),
        "sends_all": sends_all, "opens_all": opens_all, "clicks_all": clicks_all,
        "open_rate_all": (opens_all + a) / per_send,
        "click_rate_all": (clicks_all + a) / per_send,
        "open_rate_decayed": (opens_dec + a) / per_send_dec,
        "click_rate_decayed": (clicks_dec + a) / per_send_dec,
    }
    if recent:
        n = int(state[N_RECENT])
        order = np.argsort(v["rc_ts"][:n], kind="stable")
        out.update(recent_items=v["rc_item"][:n][order].astype(np.int64),
                   recent_ts=v["rc_ts"][:n][order].copy(),
                   recent_weights=recent_weights(layout, state)[order])
    return out


def _decay_to(states: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """Per state, the factor that values its decayed slots at `now` (1 before its REF_TS or
    for a state without events, as `read_features`)."""
    if not np.isfinite(now):
        raise ValueError(f"now: must be finite, got {now}")
    dt = np.where(states[:, N_EVENTS] > 0, np.maximum(float(now) - states[:, REF_TS], 0.0), 0.0)
    return np.exp2(-dt / half_life_s)


def hour_of_week_many(layout: FeatureLayout, states: np.ndarray, now: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Batch read of the send-time inputs: (hour_of_week [n, 168] decayed to `now`, local
    Monday 00:00 first, as `read_features`; tz_offset_min [n] int)."""
    states = np.asarray(states, np.float64).reshape(-1, layout.size)
    check_record(layout, states, "states")
    o = layout.offsets["hour"]
    f = _decay_to(states, now, layout.hour_half_life_s)
    hist = states[:, o:o + HOURS_PER_WEEK] * f[:, None]
    return hist, states[:, TZ_OFFSET_MIN].astype(np.int64)


def channel_counts_many(layout: FeatureLayout, states: np.ndarray, now: float,
                        half_life: int | None = None) -> dict[str, np.ndarray]:
    """Batch read of the per-channel send/open/click counts: {"sends", "opens", "clicks"},
    each [n, C] (channels of `layout.channels`).

    `half_life` None: all-time counts; an int: the decayed counts of `layout.half_lives_s[i]`
    valued at `now` (as `read_features`' `counts_decayed`).
    """
    states = np.asarray(states, np.float64).reshape(-1, layout.size)
    check_record(layout, states, "states")
    T, C, _, H, _ = layout.shape
    if half_life is None:
        o = layout.offsets["counts"]
        counts = states[:, o:o + T * C].reshape(-1, T, C)
    else:
        if not 0 <= half_life < H:
            raise ValueError(f"half_life: an index in [0, {H}), got {half_life}")
        o = layout.offsets["decayed"] + half_life * T * C
        f = _decay_to(states, now, layout.half_lives_s[half_life])
        counts = states[:, o:o + T * C].reshape(-1, T, C) * f[:, None, None]

    def total(names):
        return counts[:, [layout.type_code(n) for n in names]].sum(axis=1)

    return {"sends": total(layout.send_types), "opens": total(layout.open_types),
            "clicks": total(layout.click_types)}
