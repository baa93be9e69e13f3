"""The stored bytes of an impression and of the per-version counters (`server.store.layouts`
kinds "impression" and "impression_counters").

An impression is one packed record, no JSON:

    head      struct `HEAD` (36 bytes, little-endian):
              time f64, flags u8 (bit 0: cold start), channel u8 (index in `CHANNEL_CODES`),
              items u16, first click position i16 (-1: none; `UNKNOWN_POSITION`: clicked, position
              unknown), clicks u16, add-to-carts u16, purchases u16, revenue f64, version bytes
              u16, context bytes u16, reserved u32
    version   UTF-8 model version
    context   (u16 length, UTF-8 key, u16 length, UTF-8 value) per entry
    items     int64[n] stable item codes (`contract.items.item_code`), in position order
    scores    float32[n]
    outcomes  uint8[n] per position, bits `ITEM_BITS` (clicked, carted, purchased)

Positions are 0-based indexes into `items`. The outcome fields (first click, counts, revenue,
the per-position bits) are the only part a join rewrites (`with_outcome`).

Counters are float64[`N_COUNTERS`]: the named slots of `C`, then the first-click position
histogram (`POSITIONS` buckets, the last one for positions at or past it and unknown ones), from
which CTR@k is read for k <= `POSITIONS` - 1.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..profiles.schema import CHANNELS

__all__ = ["HEAD", "CHANNEL_CODES", "UNKNOWN_POSITION", "POSITIONS", "C", "N_COUNTERS",
           "CLICK", "CART", "PURCHASE", "Impression", "encode", "decode", "with_outcome",
           "new_counters", "ITEM_BITS", "head_of", "encode_many", "shown_part", "intact"]

HEAD = struct.Struct("<dBBHhHHHdHHI")
CHANNEL_CODES = ("", *CHANNELS)
"""Channel of a record by code; 0 is "no channel given"."""
_CHANNEL = {c: i for i, c in enumerate(CHANNEL_CODES)}
_U16 = struct.Struct("<H")
UNKNOWN_POSITION = 32767
POSITIONS = 101
"""Histogram buckets of the first click position: 0..99, and one for 100+ and unknown."""
_MAX_COUNT = 65535

CLICK, CART, PURCHASE = "click", "add_to_cart", "purchase"
"""The outcomes a joined event adds to an impression."""
ITEM_BITS = {CLICK: 1, CART: 2, PURCHASE: 4}
"""Bit of each outcome in a position's outcome byte."""


class C:
    """Slots of a counters array (one model version on one channel)."""

    IMPRESSIONS, COLD_START, CLICKED, CLICKS, CARTED, CONVERTED, PURCHASES, REVENUE, \
        REVENUE_SQ, FIRST, LAST = range(11)
    HIST = 11
    """First of the `POSITIONS` first-click histogram slots."""


N_COUNTERS = C.HIST + POSITIONS


@dataclass(slots=True)
class Impression:
    """One decoded impression (outcomes included)."""

    timestamp: float
    model_version: str
    channel: str
    context: dict[str, str]
    items: np.ndarray
    """int64 item codes, position order."""
    scores: np.ndarray
    cold_start: bool
    outcomes: np.ndarray | None = None
    """uint8 outcome bits per position (`ITEM_BITS`)."""
    first_click: int = -1
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    revenue: float = 0.0


def _pack_context(context) -> bytes:
    out = bytearray()
    for key, value in context:
        for part in (key.encode(), value.encode()):
            out += _U16.pack(len(part)) + part
    return bytes(out)


def _unpack_context(raw: bytes) -> dict[str, str]:
    out, pos, parts = {}, 0, []
    while pos < len(raw):
        (n,) = _U16.unpack_from(raw, pos)
        parts.append(raw[pos + 2:pos + 2 + n].decode())
        pos += 2 + n
        if len(parts) == 2:
            out[parts[0]] = parts[1]
            parts = []
    return out


def encode(ts: float, version: str, channel: str, context, codes: np.ndarray, scores: np.ndarray,
           cold_start: bool) -> bytes:
    """A new impression's bytes (no outcome yet); `context`: (key, value) pairs."""
    v, ctx = version.encode(), _pack_context(context)
    head = HEAD.pack(ts, int(cold_start), _CHANNEL.get(channel, 0), len(codes), -1, 0, 0, 0, 0.0,
                     len(v), len(ctx), 0)
    return b"".join((head, v, ctx, codes.astype("<i8", copy=False).tobytes(),
                     scores.astype("<f4", copy=False).tobytes(), bytes(len(codes))))


_HEAD_DTYPE = np.dtype([("ts", "<f8"), ("flags", "u1"), ("channel", "u1"), ("n", "<u2"),
                        ("first", "<i2"), ("clicks", "<u2"), ("carts", "<u2"), ("buys", "<u2"),
                        ("revenue", "<f8"), ("nv", "<u2"), ("nc", "<u2"), ("reserved", "<u4")])
assert _HEAD_DTYPE.itemsize == HEAD.size


def encode_many(ts: np.ndarray, version: str, channels: list[str], codes: np.ndarray,
                scores: np.ndarray, cold: np.ndarray) -> list[bytes]:
    """`encode` of m answers of one version with n items each and no context, at once:
    `codes`, `scores` are [m, n]; the bytes are the same as `encode`'s, record by record."""
    m, n = codes.shape
    v = version.encode()
    head = np.zeros(m, _HEAD_DTYPE)
    head["ts"], head["flags"], head["n"], head["first"], head["nv"] = ts, cold, n, -1, len(v)
    head["channel"] = [_CHANNEL.get(c, 0) for c in channels]
    cut = np.cumsum([HEAD.size, len(v), 8 * n, 4 * n])
    buf = np.zeros((m, cut[-1] + n), np.uint8)
    buf[:, :cut[0]] = head.view(np.uint8).reshape(m, HEAD.size)
    buf[:, cut[0]:cut[1]] = np.frombuffer(v, np.uint8)
    buf[:, cut[1]:cut[2]] = codes.astype("<i8", copy=False).view(np.uint8).reshape(m, 8 * n)
    buf[:, cut[2]:cut[3]] = scores.astype("<f4", copy=False).view(np.uint8).reshape(m, 4 * n)
    return [row.tobytes() for row in buf]


def decode(raw: bytes) -> Impression:
    """The impression of a record; `ValueError` for one that is not of the layout (damaged on
    disk or by a bad restore: its head's sizes do not add up to its length, an unknown channel,
    text that is not UTF-8, a context cut short: `store.damaged.UNREADABLE`)."""
    ts, flags, ch, n, first, clicks, carts, buys, revenue, nv, nc, _ = _head(raw)
    try:
        pos = HEAD.size
        version = raw[pos:pos + nv].decode()
        pos += nv
        context = _unpack_context(raw[pos:pos + nc])
        channel = CHANNEL_CODES[ch]
    except struct.error as err:
        raise ValueError(f"not an impression record: {err}") from err
    pos += nc
    items = np.frombuffer(raw, "<i8", n, pos)
    scores = np.frombuffer(raw, "<f4", n, pos + 8 * n)
    outcomes = np.frombuffer(raw, np.uint8, n, pos + 12 * n)
    return Impression(ts, version, channel, context, items, scores, bool(flags & 1),
                      outcomes, first, clicks, carts, buys, revenue)


def _head(raw: bytes) -> tuple:
    """The head of a record whose sizes add up to its length and whose channel is known;
    `ValueError` otherwise (damaged)."""
    try:
        head = HEAD.unpack_from(raw)
    except struct.error as err:
        raise ValueError(f"not an impression record: {err}") from err
    n, nv, nc = head[3], head[9], head[10]
    if len(raw) != HEAD.size + nv + nc + 13 * n or head[2] >= len(CHANNEL_CODES):
        raise ValueError(f"not an impression record: {len(raw)} bytes, its head says "
                         f"{HEAD.size + nv + nc + 13 * n}, channel code {head[2]}")
    return head


def intact(raw: bytes) -> bool:
    """Whether a record is of the layout as far as its head tells (`_head`): a join passes a
    damaged one over rather than failing its whole batch."""
    try:
        _head(raw)
        return True
    except ValueError:
        return False


def head_of(raw: bytes) -> tuple:
    """(time, version, channel, items, first click, clicks, carts, purchases, revenue) without
    decoding the context and scores."""
    ts, _, ch, n, first, clicks, carts, buys, revenue, nv, nc, _ = HEAD.unpack_from(raw)
    pos = HEAD.size
    items = np.frombuffer(raw, "<i8", n, pos + nv + nc)
    return (ts, raw[pos:pos + nv].decode(), CHANNEL_CODES[ch], items, first, clicks, carts, buys,
            revenue)


def shown_part(raw: bytes) -> bytes:
    """Channel, context and item codes of an impression (what its answer showed, and where),
    as stored."""
    n, nv, nc = HEAD.unpack_from(raw)[3], *HEAD.unpack_from(raw)[9:11]
    pos = HEAD.size + nv
    return raw[9:10] + raw[pos:pos + nc + 8 * n]


def new_counters() -> np.ndarray:
    return np.zeros(N_COUNTERS, np.float64)


def _bucket(position: int) -> int:
    return C.HIST + min(position, POSITIONS - 1)


def with_outcome(raw: bytes, outcome: str, position: int, value: float,
                 delta: np.ndarray) -> bytes:
    """The impression `raw` with one joined outcome added; what it changes in the counters of
    its version and channel is added to `delta` (float64[`N_COUNTERS`]).

    `position`: the 0-based position the event names (`UNKNOWN_POSITION` when neither the event
    nor the impression says). A click moves the impression's first click to the smaller
    position; a purchase adds `value` to its revenue.
    """
    ts, flags, ch, n, first, clicks, carts, buys, revenue, nv, nc, res = HEAD.unpack_from(raw)
    if outcome == CLICK:
        new_first = position if first < 0 else min(first, position)
        if first < 0:
            delta[C.CLICKED] += 1
        elif new_first != first:
            delta[_bucket(first)] -= 1
        if new_first != first:
            delta[_bucket(new_first)] += 1
        first, clicks = new_first, min(clicks + 1, _MAX_COUNT)
        delta[C.CLICKS] += 1
    elif outcome == CART:
        delta[C.CARTED] += carts == 0
        carts = min(carts + 1, _MAX_COUNT)
    elif outcome == PURCHASE:
        delta[C.CONVERTED] += buys == 0
        delta[C.PURCHASES] += 1
        delta[C.REVENUE] += value
        delta[C.REVENUE_SQ] += (revenue + value) ** 2 - revenue ** 2
        buys, revenue = min(buys + 1, _MAX_COUNT), revenue + value
    head = HEAD.pack(ts, flags, ch, n, first, clicks, carts, buys, revenue, nv, nc, res)
    body = bytearray(raw[HEAD.size:])
    if position < n:
        body[nv + nc + 12 * n + position] |= ITEM_BITS[outcome]
    return head + bytes(body)
