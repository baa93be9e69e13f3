"""Profile feature record: its layout (`FeatureLayout`), byte codec and migration.

The state is a 1-d float64 array of `FeatureLayout.size` slots (`layout.nbytes` bytes) that goes
to and from LMDB as raw bytes (`to_bytes` / `from_bytes`, `np.frombuffer` underneath). It holds

- all-time counts per (event type, channel);
- counts per (half-life, event type, channel), exponentially decayed;
- RFM: latest event ts (recency), first event ts, latest purchase ts, all-time and decayed
  purchase value (monetary); frequency is read from the purchase-type counts;
- category affinities per (half-life, category): decayed sum of event weights;
- an hour-of-week (168 bins, Monday 00:00 local = bin 0) histogram of engagement events, decayed
  with `hour_half_life_s`;
- the user's recent items: up to `recent_capacity` distinct items as (code, latest ts, amount per
  event type), the encoder's input (see `kernels.features.recent_items`). Amounts are event
  counts (summed values for `valued_types`), so a history can be weighted when it is read, with
  the weights of the bundle that reads it rather than the ones the state was written with.

Decayed slots are valued at `REF_TS`, the latest event time seen. `kernels.features` applies
events to states (`update`, `update_many`) and reads them (`read_features`).

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
    rc_w     N      weight carried over from a version-1 state (its summed event weight; 0 for
                    items first seen since), added to the read-time weight of the amounts
    rc_amt   N*T    amount of each recent item per event type [item slot, type]

Version 1 had no `rc_amt` and summed weights into `rc_w`; `upgrade` reads its records.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DAY", "FORMAT_VERSION", "FeatureLayout", "new_state", "new_states", "to_bytes",
    "from_bytes", "states_from_buffers", "migrate", "upgrade", "check_record",
]

DAY = 86400.0
FORMAT_VERSION = 2
HOURS_PER_WEEK = 168
MAX_HALF_LIVES = 16

# Header slots (the Cython kernel has the same enum; `features` checks it before each native call).
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
FLAG_VALUED = 4

DEFAULT_PURCHASE_TYPES = ("purchase",)
DEFAULT_ENGAGEMENT_TYPES = ("click", "add_to_cart", "purchase", "email_open", "email_click",
                            "sms_click", "push_open", "push_click")
DEFAULT_SEND_TYPES = ("email_sent", "sms_sent", "push_sent")
DEFAULT_OPEN_TYPES = ("email_open", "push_open")
DEFAULT_CLICK_TYPES = ("email_click", "sms_click", "push_click")


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
    event_weights : mapping name -> float or tuple aligned with `event_types`
        Weight of an event type in the category affinities and the default weight of the recent
        items (>= 0; missing names 0). Types of weight 0 are not item interactions: they do not
        enter the recent items. No defaults here: the caller's vocabulary owns them.
    half_lives_s : tuple of float
        Half-lives in seconds of the decayed counts, monetary and category affinities.
    recent_capacity : int
        N, the number of distinct recent items kept (>= the encoder's history length L).
    valued_types : tuple of str
        Types whose recent-item amount is the event's value (a rating) rather than 1.
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
    event_weights: Mapping[str, float] | Sequence[float]
    half_lives_s: tuple[float, ...] = (DAY, 7 * DAY, 30 * DAY)
    recent_capacity: int = 50
    valued_types: tuple[str, ...] = ()
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
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(self.event_types)
            if unknown:
                raise ValueError(f"event_weights: unknown event types {sorted(unknown)}")
            weights = tuple(float(weights.get(n, 0.0)) for n in self.event_types)
        weights = tuple(float(w) for w in weights)
        if len(weights) != T or not all(np.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(f"event_weights: {T} finite values >= 0 (one per event type)")
        put(self, "event_weights", weights)

        for name, default in (("valued_types", ()),
                              ("purchase_types", DEFAULT_PURCHASE_TYPES),
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
                        ("rc_ts", N), ("rc_w", N), ("rc_amt", N * T)):
            offsets[name] = pos
            pos += n
        put(self, "offsets", offsets)
        put(self, "size", pos)
        put(self, "fingerprint", self._fingerprint(FORMAT_VERSION))
        put(self, "_fingerprint_v1", self._fingerprint(1))
        # For `read_features`: which types are (purchase, send, open, click) events, a 0/1
        # row each, and `half_lives_s` as an array.
        put(self, "read_selector", np.array([[n in getattr(self, f"{k}_types")
                                              for n in self.event_types]
                                             for k in ("purchase", "send", "open", "click")],
                                            np.float64))
        put(self, "half_lives", np.array(hls))

    def _fingerprint(self, version: int) -> int:
        """crc32 of what a record depends on; version 1 records did not depend on valued_types."""
        desc = (version, self.event_types, self.channels, self.n_categories, self.half_lives_s,
                self.recent_capacity, self.event_weights, self.purchase_types,
                self.engagement_types, self.hour_half_life_s)
        if version > 1:
            desc += (self.valued_types,)
        return zlib.crc32(repr(desc).encode())

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
            "rc_amt": state[o["rc_amt"]:o["rc_amt"] + N * T].reshape(N, T),
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
            for n in self.valued_types:
                flags[self.type_code(n)] |= FLAG_VALUED
            o = self.offsets
            cached = (np.asarray(self.event_weights, np.float64), flags,
                      1.0 / np.asarray(self.half_lives_s, np.float64),
                      1.0 / self.hour_half_life_s,
                      np.array([T, C, K, H, N], np.int64),
                      np.array([o[k] for k in ("counts", "decayed", "money", "category", "hour",
                                               "rc_item", "rc_ts", "rc_w", "rc_amt")],
                                   np.int64))
            object.__setattr__(self, "_kargs", cached)
        return cached


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


def check_record(layout: FeatureLayout, state: np.ndarray, argument: str) -> None:
    """Raise ValueError naming `argument` unless every record of `state` ([size] or [n, size])
    has `layout`'s size, format version and fingerprint."""
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
    check_record(layout, state, "buf")
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
    check_record(layout, states, "buffers")
    return states


def migrate(old: FeatureLayout, new: FeatureLayout, state: np.ndarray) -> np.ndarray:
    """A `new`-layout copy of an `old`-layout state (vocabulary or capacity changes).

    Event types and channels are matched by name, categories by code, half-lives by value;
    slots with no counterpart start at 0 (a new half-life starts empty, dropped names are lost).
    The most recent `new.recent_capacity` recent items are kept, with their amounts per type
    matched by name. Stored values keep the old event weights and type roles (purchase /
    engagement) for the events already applied.
    """
    check_record(old, state, "state")
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
    dst["rc_amt"][:keep.size, t_new] = src["rc_amt"][:n][keep][:, t_old]
    out[N_RECENT] = keep.size
    return out


def upgrade(layout: FeatureLayout, states: np.ndarray) -> np.ndarray:
    """Make the version-1 records of `layout` among `states` ([n, size]) version-2, in place.

    A version-1 record of the same layout is the first `offsets["rc_amt"]` slots of a version-2
    one, with its recent items' summed weights in `rc_w`; `rc_w` keeps them (weighted as they
    were written), the amounts start at 0 (rows must be zero past the version-1 slots, as a
    sparse record decodes). Records of any other format or fingerprint are left as they are.
    """
    old = (states[:, FORMAT] == 1) & (states[:, FINGERPRINT] == layout._fingerprint_v1)
    if old.any():
        if np.any(states[old, layout.offsets["rc_amt"]:]):
            raise ValueError("states: a version-1 record with values past its last slot")
        states[old, FORMAT] = FORMAT_VERSION
        states[old, FINGERPRINT] = layout.fingerprint
    return states
