"""Incremental profile features: one flat float64 record per user, updated on every event batch.

The state is a 1-d float64 array of `FeatureLayout.size` slots (`layout.nbytes` bytes) that goes
to and from LMDB as raw bytes (`to_bytes` / `from_bytes`, `np.frombuffer` underneath). It holds

- all-time counts per (event type, channel);
- counts per (half-life, event type, channel), exponentially decayed;
- RFM: latest event ts (recency), first event ts, latest purchase ts, all-time and decayed
  purchase value (monetary); frequency is read from the purchase-type counts;
- category affinities per (half-life, category): decayed sum of event weights;
- an hour-of-week (168 bins, Monday 00:00 local = bin 0) histogram of engagement events, decayed
  with `hour_half_life_s`;
- the user's recent items: up to `recent_capacity` distinct items as (code, latest ts, summed
  event weight), the encoder's input (see `recent_items`).

Decay is lazy. `REF_TS` is the latest event time seen and every decayed slot is valued at that
time. A batch first moves each touched state to the latest of its old `REF_TS` and the batch's
timestamps (multiplying decayed slots by 2^(-dt/h)), then adds each event weighted by
2^(-(REF_TS - t)/h): an event older than the state (out of order) is added already decayed, time
never moves backwards. This equals decaying to each event in turn, up to float rounding, and makes
decayed sums independent of arrival order. `read_features(..., now)` decays to `now` without
mutating. Features never need the raw events, so dropping old raw events (retention) keeps them.

`update` / `update_many` run the Cython kernel (`kernels._features`) unless `use_native=False`,
which runs `reference_update_many`, the plain-numpy version of the same computation.

State layout (slot offsets from `FeatureLayout.offsets`)::

    header   16     FORMAT, FINGERPRINT, REF_TS, FIRST_TS, LAST_PURCHASE_TS, N_EVENTS,
                    N_RECENT, TZ_OFFSET_MIN, MONETARY_ALL, 7 reserved (0)
    counts   T*C    all-time counts [type, channel]
    decayed  H*T*C  decayed counts [half-life, type, channel]
    money    H      decayed purchase value [half-life]
    category H*K    decayed category affinity [half-life, category]
    hour     168    decayed engagement count per hour of week (local time)
    rc_item  N      recent item codes (float64, exact below 2**53; unused slots 0)
    rc_ts    N      latest ts of each recent item
    rc_w     N      summed (undecayed) event weight of each recent item
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DAY", "FORMAT_VERSION", "FeatureLayout", "Events", "new_state", "new_states", "update",
    "update_many", "reference_update_many", "read_features", "recent_items", "to_bytes",
    "from_bytes", "states_from_buffers", "migrate",
]

DAY = 86400.0
FORMAT_VERSION = 1
HOURS_PER_WEEK = 168
MAX_HALF_LIVES = 16
MAX_ITEM_CODE = 2 ** 53
MAX_TZ_OFFSET_MIN = 24 * 60
# 1970-01-01 00:00 UTC was a Thursday: hour 0 of the epoch is hour 72 of a Monday-based week.
_EPOCH_HOUR_OF_WEEK = 72

# Header slots (the Cython kernel has the same enum; checked at import).
FORMAT, FINGERPRINT, REF_TS, FIRST_TS, LAST_PURCHASE_TS = 0, 1, 2, 3, 4
N_EVENTS, N_RECENT, TZ_OFFSET_MIN, MONETARY_ALL = 5, 6, 7, 8
HEADER_SIZE = 16
HEADER_SLOTS = {
    "FORMAT": FORMAT, "FINGERPRINT": FINGERPRINT, "REF_TS": REF_TS, "FIRST_TS": FIRST_TS,
    "LAST_PURCHASE_TS": LAST_PURCHASE_TS, "N_EVENTS": N_EVENTS, "N_RECENT": N_RECENT,
    "TZ_OFFSET_MIN": TZ_OFFSET_MIN, "MONETARY_ALL": MONETARY_ALL, "HEADER_SIZE": HEADER_SIZE,
}
# Per event type flags (bit mask handed to the kernel).
FLAG_PURCHASE = 1
FLAG_ENGAGEMENT = 2

DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0,
                         "email_click": 2.0, "sms_click": 2.0, "push_open": 1.0}
DEFAULT_PURCHASE_TYPES = ("purchase",)
DEFAULT_ENGAGEMENT_TYPES = ("click", "add_to_cart", "purchase", "email_open", "email_click",
                            "sms_click", "push_open", "push_click")
DEFAULT_SEND_TYPES = ("email_sent", "sms_sent", "push_sent")
DEFAULT_OPEN_TYPES = ("email_open", "push_open")
DEFAULT_CLICK_TYPES = ("email_click", "sms_click", "push_click")

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


def _names(value, argument: str) -> tuple[str, ...]:
    names = tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{argument}: must be a non-empty tuple of non-empty strings")
    if len(set(names)) != len(names):
        raise ValueError(f"{argument}: names must be unique, got {names}")
    return names


@dataclass(frozen=True)
class FeatureLayout:
    """Shape and semantics of a profile state; everything a stored record depends on.

    Parameters
    ----------
    event_types, channels : tuple of str
        Vocabularies; an event's `type` / `channel` code indexes them.
    n_categories : int
        K; category codes are in [0, K) (-1 = unknown, not counted).
    half_lives_s : tuple of float
        Half-lives in seconds of the decayed counts, monetary and category affinities.
    recent_capacity : int
        N, the number of distinct recent items kept (>= the encoder's history length L).
    event_weights : mapping name -> float or tuple aligned with `event_types`
        Weight of an event type in the recent items and category affinities (>= 0; 0 = not an
        item interaction). Defaults: view 1, click 2, add_to_cart 3, purchase 5, ... others 0.
    purchase_types, engagement_types : tuple of str
        Types counted as purchases (RFM frequency / monetary) and as engagement (hour of week).
        Default: the standard names present in `event_types`.
    hour_half_life_s : float
        Half-life of the hour-of-week histogram.
    send_types, open_types, click_types : tuple of str
        Read-time only: the per-channel rates are (opens + a) / (sends + a + b) and
        (clicks + a) / (sends + a + b) with (a, b) = `rate_prior`.
    rate_prior : (float, float)
        Beta prior (a, b) of the engagement rates, both > 0.
    """

    event_types: tuple[str, ...]
    channels: tuple[str, ...]
    n_categories: int
    half_lives_s: tuple[float, ...] = (DAY, 7 * DAY, 30 * DAY)
    recent_capacity: int = 50
    event_weights: Mapping[str, float] | Sequence[float] | None = None
    purchase_types: tuple[str, ...] | None = None
    engagement_types: tuple[str, ...] | None = None
    hour_half_life_s: float = 30 * DAY
    send_types: tuple[str, ...] | None = None
    open_types: tuple[str, ...] | None = None
    click_types: tuple[str, ...] | None = None
    rate_prior: tuple[float, float] = (1.0, 9.0)
    offsets: dict = field(init=False, repr=False, compare=False, hash=False)
    size: int = field(init=False, repr=False, compare=False)
    fingerprint: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        put = object.__setattr__
        put(self, "event_types", _names(self.event_types, "event_types"))
        put(self, "channels", _names(self.channels, "channels"))
        T, C = len(self.event_types), len(self.channels)
        if not isinstance(self.n_categories, (int, np.integer)) or self.n_categories < 0:
            raise ValueError(f"n_categories: must be an int >= 0, got {self.n_categories!r}")
        put(self, "n_categories", int(self.n_categories))
        hls = tuple(float(h) for h in self.half_lives_s)
        if not 1 <= len(hls) <= MAX_HALF_LIVES or not all(np.isfinite(h) and h > 0 for h in hls):
            raise ValueError(f"half_lives_s: 1..{MAX_HALF_LIVES} finite values > 0, got {hls}")
        put(self, "half_lives_s", hls)
        if not float(self.hour_half_life_s) > 0 or not np.isfinite(self.hour_half_life_s):
            raise ValueError(f"hour_half_life_s: must be finite > 0, got {self.hour_half_life_s}")
        put(self, "hour_half_life_s", float(self.hour_half_life_s))
        if not isinstance(self.recent_capacity, (int, np.integer)) or self.recent_capacity < 1:
            raise ValueError(f"recent_capacity: must be an int >= 1, got {self.recent_capacity!r}")
        put(self, "recent_capacity", int(self.recent_capacity))

        weights = self.event_weights
        if weights is None:
            weights = {n: w for n, w in DEFAULT_EVENT_WEIGHTS.items() if n in self.event_types}
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(self.event_types)
            if unknown:
                raise ValueError(f"event_weights: unknown event types {sorted(unknown)}")
            weights = tuple(float(weights.get(n, 0.0)) for n in self.event_types)
        weights = tuple(float(w) for w in weights)
        if len(weights) != T or not all(np.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"event_weights: {T} finite values >= 0 (one per event type)")
        put(self, "event_weights", weights)

        for name, default in (("purchase_types", DEFAULT_PURCHASE_TYPES),
                              ("engagement_types", DEFAULT_ENGAGEMENT_TYPES),
                              ("send_types", DEFAULT_SEND_TYPES),
                              ("open_types", DEFAULT_OPEN_TYPES),
                              ("click_types", DEFAULT_CLICK_TYPES)):
            value = getattr(self, name)
            if value is None:
                value = tuple(n for n in default if n in self.event_types)
            value = tuple(value)
            unknown = [n for n in value if n not in self.event_types]
            if unknown:
                raise ValueError(f"{name}: unknown event types {unknown}")
            put(self, name, value)
        a, b = (float(x) for x in self.rate_prior)
        if not (a > 0 and b > 0 and np.isfinite(a + b)):
            raise ValueError(f"rate_prior: (a, b) with a, b > 0, got {self.rate_prior}")
        put(self, "rate_prior", (a, b))

        H, K, N = len(hls), self.n_categories, self.recent_capacity
        offsets, pos = {}, HEADER_SIZE
        for name, n in (("counts", T * C), ("decayed", H * T * C), ("money", H),
                        ("category", H * K), ("hour", HOURS_PER_WEEK), ("rc_item", N),
                        ("rc_ts", N), ("rc_w", N)):
            offsets[name] = pos
            pos += n
        put(self, "offsets", offsets)
        put(self, "size", pos)
        desc = repr((FORMAT_VERSION, self.event_types, self.channels, K, hls, N, weights,
                     self.purchase_types, self.engagement_types, self.hour_half_life_s))
        put(self, "fingerprint", zlib.crc32(desc.encode()))

    @property
    def nbytes(self) -> int:
        """Bytes of one serialized state."""
        return 8 * self.size

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """(T, C, K, H, N)."""
        return (len(self.event_types), len(self.channels), self.n_categories,
                len(self.half_lives_s), self.recent_capacity)

    def type_code(self, name: str) -> int:
        return self.event_types.index(name)

    def channel_code(self, name: str) -> int:
        return self.channels.index(name)

    def views(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Named zero-copy views of the sections of one state (writable if `state` is)."""
        T, C, K, H, N = self.shape
        o = self.offsets
        return {
            "header": state[:HEADER_SIZE],
            "counts": state[o["counts"]:o["counts"] + T * C].reshape(T, C),
            "decayed": state[o["decayed"]:o["decayed"] + H * T * C].reshape(H, T, C),
            "money": state[o["money"]:o["money"] + H],
            "category": state[o["category"]:o["category"] + H * K].reshape(H, K),
            "hour": state[o["hour"]:o["hour"] + HOURS_PER_WEEK],
            "rc_item": state[o["rc_item"]:o["rc_item"] + N],
            "rc_ts": state[o["rc_ts"]:o["rc_ts"] + N],
            "rc_w": state[o["rc_w"]:o["rc_w"] + N],
        }

    # Arrays handed to the kernel, cached per layout.
    def _kernel_args(self):
        cached = self.__dict__.get("_kargs")
        if cached is None:
            T, C, K, H, N = self.shape
            flags = np.zeros(T, np.uint8)
            for n in self.purchase_types:
                flags[self.type_code(n)] |= FLAG_PURCHASE
            for n in self.engagement_types:
                flags[self.type_code(n)] |= FLAG_ENGAGEMENT
            o = self.offsets
            cached = (np.asarray(self.event_weights, np.float64), flags,
                      1.0 / np.asarray(self.half_lives_s, np.float64),
                      1.0 / self.hour_half_life_s,
                      np.array([T, C, K, H, N], np.int64),
                      np.array([o[k] for k in ("counts", "decayed", "money", "category", "hour",
                                               "rc_item", "rc_ts", "rc_w")], np.int64))
            object.__setattr__(self, "_kargs", cached)
        return cached


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
# States and (de)serialization

def new_state(layout: FeatureLayout) -> np.ndarray:
    """An empty state (no events) for `layout`."""
    return new_states(layout, 1)[0]


def new_states(layout: FeatureLayout, n: int) -> np.ndarray:
    """`n` empty states as a C-contiguous [n, layout.size] float64 array."""
    states = np.zeros((n, layout.size), np.float64)
    states[:, FORMAT] = FORMAT_VERSION
    states[:, FINGERPRINT] = layout.fingerprint
    states[:, REF_TS] = -np.inf
    states[:, FIRST_TS] = np.inf
    states[:, LAST_PURCHASE_TS] = -np.inf
    return states


def to_bytes(state: np.ndarray) -> bytes:
    """The record stored in LMDB (`memoryview(state)` also works, without the copy)."""
    return state.tobytes()


def _check_record(layout: FeatureLayout, state: np.ndarray, argument: str) -> None:
    if state.shape[-1] != layout.size:
        raise ValueError(f"{argument}: {state.shape[-1] * 8} bytes per state, layout wants "
                         f"{layout.nbytes}")
    if state.ndim == 1:  # the per-event path: scalar checks only
        ok = state[FORMAT] == FORMAT_VERSION and state[FINGERPRINT] == layout.fingerprint
    else:
        ok = bool((state[:, FORMAT] == FORMAT_VERSION).all()
                  and (state[:, FINGERPRINT] == layout.fingerprint).all())
    if not ok:
        head = state.reshape(-1, layout.size)[:, :FINGERPRINT + 1]
        bad = head[np.flatnonzero((head[:, 0] != FORMAT_VERSION)
                                  | (head[:, 1] != layout.fingerprint))[0]]
        raise ValueError(f"{argument}: format/fingerprint {bad.tolist()} does not match the "
                         f"layout ({FORMAT_VERSION}, {layout.fingerprint})")


def from_bytes(layout: FeatureLayout, buf, copy: bool = False) -> np.ndarray:
    """State from a stored record: zero-copy (read-only if `buf` is) unless `copy`."""
    state = np.frombuffer(buf, np.float64)
    _check_record(layout, state, "buf")
    return state.copy() if copy else state


def states_from_buffers(layout: FeatureLayout, buffers: Sequence) -> np.ndarray:
    """A writable [len(buffers), size] batch for `update_many`; None entries start empty."""
    states = new_states(layout, len(buffers))
    nbytes = layout.nbytes
    flat = states.reshape(-1).view(np.uint8)
    for i, buf in enumerate(buffers):
        if buf is not None:
            raw = np.frombuffer(buf, np.uint8)
            if raw.shape[0] != nbytes:
                raise ValueError(f"buffers[{i}]: {raw.shape[0]} bytes, layout wants {nbytes}")
            flat[i * nbytes:(i + 1) * nbytes] = raw
    _check_record(layout, states, "buffers")
    return states


def migrate(old: FeatureLayout, new: FeatureLayout, state: np.ndarray) -> np.ndarray:
    """A `new`-layout copy of an `old`-layout state (vocabulary or capacity changes).

    Event types and channels are matched by name, categories by code, half-lives by value;
    slots with no counterpart start at 0 (a new half-life starts empty, dropped names are lost).
    The most recent `new.recent_capacity` recent items are kept. Stored values keep the old
    event weights and type roles (purchase / engagement) for the events already applied.
    """
    _check_record(old, state, "state")
    out = new_states(new, 1)[0]
    for slot in (REF_TS, FIRST_TS, LAST_PURCHASE_TS, N_EVENTS, TZ_OFFSET_MIN, MONETARY_ALL):
        out[slot] = state[slot]
    src, dst = old.views(state), new.views(out)
    t_old = [old.event_types.index(n) for n in new.event_types if n in old.event_types]
    t_new = [new.event_types.index(n) for n in new.event_types if n in old.event_types]
    c_old = [old.channels.index(n) for n in new.channels if n in old.channels]
    c_new = [new.channels.index(n) for n in new.channels if n in old.channels]
    dst["counts"][np.ix_(t_new, c_new)] = src["counts"][np.ix_(t_old, c_old)]
    k = min(old.n_categories, new.n_categories)
    for h_new, hl in enumerate(new.half_lives_s):
        if hl in old.half_lives_s:
            h_old = old.half_lives_s.index(hl)
            dst["decayed"][h_new][np.ix_(t_new, c_new)] = (
                src["decayed"][h_old][np.ix_(t_old, c_old)])
            dst["money"][h_new] = src["money"][h_old]
            dst["category"][h_new, :k] = src["category"][h_old, :k]
    if new.hour_half_life_s == old.hour_half_life_s:
        dst["hour"][:] = src["hour"]
    n = int(state[N_RECENT])
    keep = np.argsort(src["rc_ts"][:n], kind="stable")[max(0, n - new.recent_capacity):]
    for name in ("rc_item", "rc_ts", "rc_w"):
        dst[name][:keep.size] = src[name][:n][keep]
    out[N_RECENT] = keep.size
    return out


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
    _check_record(layout, state, "state")
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
    _check_record(layout, states, "states")
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
            _reference_recent_insert(v, state, N, float(ev.item[i]), t, w)
    return states


def _reference_recent_insert(v, state, N: int, item: float, t: float, w: float) -> None:
    n = int(state[N_RECENT])
    hit = np.flatnonzero(v["rc_item"][:n] == item)
    if hit.size:
        j = hit[0]
        v["rc_w"][j] += w
        v["rc_ts"][j] = max(v["rc_ts"][j], t)
        return
    if n < N:
        j = n
        state[N_RECENT] = n + 1
    else:
        j = int(np.argmin(v["rc_ts"]))  # first slot holding the oldest ts
        if t < v["rc_ts"][j]:
            return  # older than everything kept: not among the N most recent items
    v["rc_item"][j], v["rc_ts"][j], v["rc_w"][j] = item, t, w


# ---------------------------------------------------------------------------------------------
# Reads

def recent_items(layout: FeatureLayout, state: np.ndarray, half_life_s: float,
                 length: int | None = None, now: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's history: (items int64, weights float64), oldest first, at most `length`.

    Weight = summed event weight x 2^(-(t_last - t)/half_life_s), t the item's latest event and
    t_last the latest recent-item event (as users.npz in docs/bundle.md); with `now`, t_last =
    max(now, latest). A repeated item is one entry: its event weights summed, its latest ts.
    """
    if not (np.isfinite(half_life_s) and half_life_s > 0):
        raise ValueError(f"half_life_s: must be finite > 0, got {half_life_s}")
    v = layout.views(state)
    n = int(state[N_RECENT])
    if length is not None:
        if length < 0:
            raise ValueError(f"length: must be >= 0, got {length}")
        n_out = min(n, length)
    else:
        n_out = n
    ts = v["rc_ts"][:n]
    order = np.argsort(ts, kind="stable")[n - n_out:]
    if n_out == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    t_last = ts.max() if now is None else max(float(now), ts.max())
    weights = v["rc_w"][:n][order] * np.exp2(-(t_last - ts[order]) / half_life_s)
    return v["rc_item"][:n][order].astype(np.int64), weights


def read_features(layout: FeatureLayout, state: np.ndarray, now: float) -> dict:
    """Human-readable features as of `now` (decayed to `now`, state untouched).

    A `now` before the latest event reads at the latest event (no un-decaying). Keys:
    n_events, first_ts, last_ts, recency_s, last_purchase_ts, purchase_recency_s (NaN when there
    is no event / purchase), counts_all [T, C], counts_decayed [H, T, C], frequency_all,
    frequency_decayed [H], monetary_all, monetary_decayed [H], category_affinity [H, K],
    hour_of_week [168] (Monday 00:00 local first), tz_offset_min, sends/opens/clicks_all [C],
    open_rate_all / click_rate_all [C], open_rate_decayed / click_rate_decayed [H, C],
    recent_items / recent_ts / recent_weights (oldest first, raw summed weights), half_lives_s.
    """
    if not np.isfinite(now):
        raise ValueError(f"now: must be finite, got {now}")
    _check_record(layout, state, "state")
    v = layout.views(state)
    n_events = int(state[N_EVENTS])
    ref = state[REF_TS]
    dt = max(float(now) - ref, 0.0) if n_events else 0.0
    f = np.exp2(-dt / np.asarray(layout.half_lives_s))
    f_hour = np.exp2(-dt / layout.hour_half_life_s)
    counts = v["counts"].copy()
    decayed = v["decayed"] * f[:, None, None]

    def rows_of(names):
        return [layout.type_code(n) for n in names]

    purchase = rows_of(layout.purchase_types)
    a, b = layout.rate_prior
    sends_all = counts[rows_of(layout.send_types)].sum(axis=0)
    opens_all = counts[rows_of(layout.open_types)].sum(axis=0)
    clicks_all = counts[rows_of(layout.click_types)].sum(axis=0)
    sends_dec = decayed[:, rows_of(layout.send_types)].sum(axis=1)
    opens_dec = decayed[:, rows_of(layout.open_types)].sum(axis=1)
    clicks_dec = decayed[:, rows_of(layout.click_types)].sum(axis=1)
    last_p = state[LAST_PURCHASE_TS]
    n = int(state[N_RECENT])
    order = np.argsort(v["rc_ts"][:n], kind="stable")
    nan = float("nan")
    return {
        "n_events": n_events,
        "first_ts": float(state[FIRST_TS]) if n_events else nan,
        "last_ts": float(ref) if n_events else nan,
        "recency_s": max(float(now) - float(ref), 0.0) if n_events else nan,
        "last_purchase_ts": float(last_p) if np.isfinite(last_p) else nan,
        "purchase_recency_s": max(float(now) - float(last_p), 0.0) if np.isfinite(last_p) else nan,
        "half_lives_s": np.asarray(layout.half_lives_s),
        "counts_all": counts,
        "counts_decayed": decayed,
        "frequency_all": float(counts[purchase].sum()),
        "frequency_decayed": decayed[:, purchase].sum(axis=(1, 2)),
        "monetary_all": float(state[MONETARY_ALL]),
        "monetary_decayed": v["money"] * f,
        "category_affinity": v["category"] * f[:, None],
        "hour_of_week": v["hour"] * f_hour,
        "tz_offset_min": int(state[TZ_OFFSET_MIN]),
        "sends_all": sends_all, "opens_all": opens_all, "clicks_all": clicks_all,
        "open_rate_all": (opens_all + a) / (sends_all + a + b),
        "click_rate_all": (clicks_all + a) / (sends_all + a + b),
        "open_rate_decayed": (opens_dec + a) / (sends_dec + a + b),
        "click_rate_decayed": (clicks_dec + a) / (sends_dec + a + b),
        "recent_items": v["rc_item"][:n][order].astype(np.int64),
        "recent_ts": v["rc_ts"][:n][order].copy(),
        "recent_weights": v["rc_w"][:n][order].copy(),
    }
