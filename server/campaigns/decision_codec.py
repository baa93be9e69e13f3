"""The stored bytes of a decision record (record kind "decision", layout 2), and the reader of
layout 1 (JSON) too.

Layout 2 is packed with `struct`, little-endian::

    head    tag (1 byte, 2) | flags (1) | status (1) | arm (i32) | position (i32)
            | context length (u16) | 6 string lengths (u16 each)
            | timestamp, propensity, reward, deadline, send_at, channel_propensity,
              send_at_propensity, rewarded_at, event_reward (9 float64)
    strings decision_id, campaign_id, user_id, variant_id, channel, reason (UTF-8)
    context float64[context length]
    extra   JSON object of any other keys (only with flag EXTRA; from a migrated record)

flags: LINEAR (the policy is linear), REWARD / REWARDED_AT / EVENT_REWARD (the field is set:
a record without them reads back without the key, or with reward None, as JSON did). A status
the code does not know is kept in `extra`.

Encoding a record costs about a tenth of `json.dumps` of its dict, and decoding likewise; the
writer process encodes every logged decision (ChooseVariant and PlanCampaign). A layout-1
record starts with "{" (0x7B), so `decode` tells the two apart by the first byte: readers of a
store stamped layout 2 never meet one, but exports and tests of old data dirs read both.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence

__all__ = ["encode", "encode_record", "decode", "LAYOUT_TAG", "from_json"]

LAYOUT_TAG = 2
_HEAD = struct.Struct("<BBBiiH6H9d")
LINEAR, REWARD, REWARDED_AT, EVENT_REWARD, EXTRA = 1, 2, 4, 8, 16
_STATUSES = ("pending", "rewarded", "default", "suppressed")
_STATUS_CODE = {s: i for i, s in enumerate(_STATUSES)}
_UNKNOWN_STATUS = 255
_KNOWN = frozenset(("decision_id", "campaign_id", "user_id", "timestamp", "arm", "propensity",
                    "reward", "context", "position", "variant_id", "status", "deadline",
                    "linear", "channel", "send_at", "reason", "channel_propensity",
                    "send_at_propensity", "rewarded_at", "event_reward"))
_NAN = math.nan


def encode_record(rec: Sequence) -> bytes:
    """Layout-2 bytes of a `DecisionRecord` (or its tuple) as logged: no reward yet."""
    (decision_id, campaign_id, user_id, timestamp, arm, propensity, reward, context, position,
     variant_id, status, deadline, linear, channel, send_at, reason, _caps, channel_propensity,
     send_at_propensity, *_) = rec
    code = _STATUS_CODE.get(status)
    text = decision_id + campaign_id + user_id + variant_id + channel + reason
    if reward is None and code is not None and text.isascii():
        # The common record, packed without `_pack`'s generality: characters are bytes.
        n = len(context)
        head = _HEAD.pack(LAYOUT_TAG, LINEAR if linear else 0, code, arm, position, n,
                          len(decision_id), len(campaign_id), len(user_id), len(variant_id),
                          len(channel), len(reason), timestamp, propensity, _NAN, deadline,
                          send_at, channel_propensity, send_at_propensity, _NAN, _NAN)
        return head + text.encode() + struct.pack(f"<{n}d", *context) if n \
            else head + text.encode()
    return _pack(decision_id, campaign_id, user_id, timestamp, arm, propensity, reward, context,
                 position, variant_id, status, deadline, linear, channel, send_at, reason,
                 channel_propensity, send_at_propensity, None, None, None)


def encode(rec: dict) -> bytes:
    """Layout-2 bytes of a decision record dict (as `decode` returns it, with the reward paths'
    changes); keys it does not know are kept in `extra`."""
    extra = {k: v for k, v in rec.items() if k not in _KNOWN} or None
    status = rec["status"]
    if status not in _STATUS_CODE:
        extra = {**(extra or {}), "status": status}
    g = rec.get
    return _pack(rec["decision_id"], rec["campaign_id"], rec["user_id"], rec["timestamp"],
                 rec["arm"], rec["propensity"], g("reward"), g("context") or (),
                 g("position", 0), g("variant_id", ""), status, g("deadline", 0.0),
                 g("linear", False), g("channel", ""), g("send_at", 0.0), g("reason", ""),
                 g("channel_propensity", 1.0), g("send_at_propensity", 1.0),
                 g("rewarded_at"), g("event_reward"), extra)


def _pack(decision_id, campaign_id, user_id, timestamp, arm, propensity, reward, context,
          position, variant_id, status, deadline, linear, channel, send_at, reason,
          channel_propensity, send_at_propensity, rewarded_at, event_reward, extra) -> bytes:
    flags = (LINEAR if linear else 0) | (REWARD if reward is not None else 0) \
        | (REWARDED_AT if rewarded_at is not None else 0) \
        | (EVENT_REWARD if event_reward is not None else 0) | (EXTRA if extra else 0)
    strings = [s.encode() for s in (decision_id, campaign_id, user_id, variant_id, channel,
                                    reason)]
    n = len(context)
    parts = [_HEAD.pack(
        LAYOUT_TAG, flags, _STATUS_CODE.get(status, _UNKNOWN_STATUS), arm, position, n,
        *map(len, strings), timestamp, propensity, _NAN if reward is None else reward, deadline,
        send_at, channel_propensity, send_at_propensity,
        _NAN if rewarded_at is None else rewarded_at,
        _NAN if event_reward is None else event_reward), *strings]
    if n:
        parts.append(struct.pack(f"<{n}d", *context))
    if extra:
        parts.append(json.dumps(extra).encode())
    return b"".join(parts)


def decode(raw: bytes) -> dict:
    """A decision record dict from layout-2 bytes, or from layout-1 JSON."""
    if raw[0] != LAYOUT_TAG:
        return json.loads(raw)
    (_, flags, code, arm, position, n, ld, lc, lu, lv, lch, lr, timestamp, propensity, reward,
     deadline, send_at, channel_propensity, send_at_propensity, rewarded_at,
     event_reward) = _HEAD.unpack_from(raw)
    at = _HEAD.size
    text = bytes(raw[at:at + ld + lc + lu + lv + lch + lr]).decode()
    at += ld + lc + lu + lv + lch + lr
    ends = (ld, ld + lc, ld + lc + lu, ld + lc + lu + lv, ld + lc + lu + lv + lch)
    if text.isascii():  # character offsets are byte offsets
        parts = [text[a:b] for a, b in zip((0, *ends), (*ends, len(text)))]
    else:
        data = text.encode()
        parts = [data[a:b].decode() for a, b in zip((0, *ends), (*ends, len(data)))]
    context = list(struct.unpack_from(f"<{n}d", raw, at)) if n else []
    rec = {"decision_id": parts[0], "campaign_id": parts[1], "user_id": parts[2],
           "timestamp": timestamp, "arm": arm, "propensity": propensity,
           "reward": reward if flags & REWARD else None, "context": context,
           "position": position, "variant_id": parts[3],
           "status": _STATUSES[code] if code < len(_STATUSES) else "",
           "deadline": deadline, "linear": bool(flags & LINEAR), "channel": parts[4],
           "send_at": send_at, "reason": parts[5], "channel_propensity": channel_propensity,
           "send_at_propensity": send_at_propensity}
    if flags & REWARDED_AT:
        rec["rewarded_at"] = rewarded_at
    if flags & EVENT_REWARD:
        rec["event_reward"] = event_reward
    if flags & EXTRA:
        rec.update(json.loads(bytes(raw[at + 8 * n:])))
    return rec


def from_json(raw: bytes) -> bytes:
    """Layout step 1 -> 2 of kind "decision": a JSON record re-encoded, every key kept."""
    return encode(json.loads(raw))
