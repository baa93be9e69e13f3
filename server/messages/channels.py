"""What each message channel is made of (its parts) and how long a part may be.

SMS length is counted the way carriers bill it (3GPP TS 23.038 / 23.040): a text made only of
GSM 03.38 characters is sent in GSM-7, where each character of the basic table takes one septet
and each character of the extension table two (escape + code); 160 septets fit one SMS, and a
concatenated SMS carries 153 per segment (the user-data header takes 7), an escape pair never
split between two segments. Any other character switches the whole text to UCS-2: 70 UTF-16
code units in one SMS, 67 per segment of a longer one, a surrogate pair never split.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..limits import Limits
from ..validation import link_problem
from .errors import BadLink, OverChannelLimit

__all__ = ["PARTS", "MESSAGE_CHANNELS", "HTML_PARTS", "LINK_PARTS", "SmsLength", "sms_length",
           "check_parts", "check_sms_length", "check_push_lengths", "json_bytes"]

PARTS: Mapping[str, tuple[str, ...]] = {
    "email": ("subject", "preheader", "html", "text"),
    "sms": ("text",),
    "push": ("title", "body", "url"),
}
"""The content keys of a variant that are templates, per channel (other keys are plain data,
`content.<key>` in a template)."""
MESSAGE_CHANNELS = tuple(PARTS)
HTML_PARTS = frozenset({"html"})
"""Parts rendered with HTML autoescaping."""
LINK_PARTS = frozenset({"url"})
"""Parts that are a link a client opens as is (push `url`, a deep link or web page): held to
the rule of an item's links (`validation.link_problem`: no control character, no scheme that
can run script), at CreateCampaign for their literal start and at render for what they became."""

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà") - {"\x1b"}
"""The GSM 03.38 default alphabet (127 characters; 0x1B is the escape to the extension table)."""
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
"""The extension table's characters: two septets each (escape + code)."""

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "gsm7" or "ucs2"
    units: int     # septets (gsm7) or UTF-16 code units (ucs2)
    segments: int


def _units(text: str) -> tuple[str, list[int]]:
    """(encoding, size of each character in units of that encoding)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        return "gsm7", [2 if c in GSM7_EXTENSION else 1 for c in text]
    return "ucs2", [2 if ord(c) > 0xFFFF else 1 for c in text]


def sms_length(text: str) -> SmsLength:
    """Encoding, units and segments of an SMS body (0 segments for an empty text)."""
    encoding, sizes = _units(text)
    total = sum(sizes)
    single, multi = (GSM7_SINGLE, GSM7_MULTI) if encoding == "gsm7" else (UCS2_SINGLE, UCS2_MULTI)
    if total == 0:
        return SmsLength(encoding, 0, 0)
    if total <= single:
        return SmsLength(encoding, total, 1)
    segments, used = 1, 0
    for size in sizes:  # a character (escape pair, surrogate pair) never straddles two segments
        if used + size > multi:
            segments, used = segments + 1, 0
        used += size
    return SmsLength(encoding, total, segments)


def check_parts(variant_id: str, channel: str, parts: Mapping[str, str], limits: Limits) -> dict:
    """Refuse rendered parts over the channel's limits; returns what was measured (SMS)."""
    for part, text in parts.items():
        if len(text.encode()) > limits.message_part_bytes:
            raise OverChannelLimit(variant_id, part, "message_part_bytes", limits.message_part_bytes,
                                   f"{len(text.encode())} bytes rendered, at most "
                                   f"{limits.message_part_bytes}")
    if channel == "sms":
        sms = check_sms_length(variant_id, parts, limits)
        return {"sms_encoding": sms.encoding, "sms_units": sms.units, "sms_segments": sms.segments}
    if channel == "push":
        check_push_lengths(variant_id, parts, limits)
    for part in LINK_PARTS.intersection(parts):
        if (problem := link_problem(parts[part])) is not None:
            raise BadLink(variant_id, part, problem)
    return {}


def json_bytes(doc) -> bytes:
    """``doc`` as the SMS and push webhooks send it: compact UTF-8 JSON."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def check_sms_length(variant_id: str, parts: Mapping[str, str], limits: Limits) -> SmsLength:
    """The SMS `text` in segments (what a carrier bills)."""
    sms = sms_length(parts.get("text", ""))
    if sms.segments > limits.sms_segments:
        raise OverChannelLimit(variant_id, "text", "sms_segments", limits.sms_segments,
                               f"{sms.segments} SMS segments ({sms.units} {sms.encoding} units), "
                               f"at most {limits.sms_segments}")
    return sms


def check_push_lengths(variant_id: str, parts: Mapping[str, str], limits: Limits) -> None:
    """Title and body in characters (what a screen shows), all parts in encoded bytes (what
    the provider counts); a payload over its bytes names its largest part."""
    for part in ("title", "body"):
        n, limit = len(parts.get(part, "")), f"push_{part}_chars"
        if n > (most := getattr(limits, limit)):
            raise OverChannelLimit(variant_id, part, limit, most, f"{n} characters, at most {most} ({limit})")
    payload = len(json_bytes(dict(parts)))
    if payload > limits.push_payload_bytes:
        sizes = {part: len(json_bytes(text)) - 2 for part, text in parts.items()}  # no quotes
        largest = max(sizes, key=sizes.__getitem__)
        each = ", ".join(f"{part} {n}" for part, n in sizes.items())  # escapes counted
        raise OverChannelLimit(variant_id, largest, "push_payload_bytes",
                               limits.push_payload_bytes, f"the push payload takes {payload} bytes "
                               f"encoded ({each}), at most {limits.push_payload_bytes} "
                               "(push_payload_bytes: the provider counts bytes, not characters)")
