"""What no id may hold, on either side: the characters the server's API refuses in an id or a
key (user, item, campaign, event and request ids, attribute keys: `server.validation`) and
training's readers refuse in a catalog's item ids (a bundle holding one is refused).

- C0 controls and DEL (0x00-0x1F, 0x7F): 0x1F is the store's key separator; the others end or
  break a log line.
- C1 controls (U+0080-U+009F): a terminal acts on some (U+009B starts an escape sequence, U+0085
  is a new line).
- Bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069): they reorder
  what follows them where a log, a CSV export or an admin page shows the id ("Trojan Source").
- The line and paragraph separators (U+2028, U+2029): a new line to JavaScript and to many log
  and JSON readers.
- U+FEFF (a zero-width no-break space, the byte order mark): an id that shows as another.
- Every other format character (Unicode category Cf: U+00AD soft hyphen, U+200B-U+200D zero-width
  space, non-joiner and joiner, U+2060-U+2064 word joiner and invisible operators, U+180E, the
  deprecated U+206A-U+206F, U+FFF9-U+FFFB, the Arabic and other prepended marks, tag characters
  U+E0001 and U+E0020-U+E007F, ...): shown as nothing (or as little), so "ann\u200b" shows as
  "ann", another key. `_RANGES` holds Unicode 15's Cf whole (test_validation_rules checks it
  against `unicodedata`), listed rather than read from `unicodedata`, so what an id may hold,
  and which ids stored before are dated "refused since" (`server.validation.refused_since`),
  does not move with the Python running it.

Free text (message bodies, templates, titles, display names) is not an id: it may hold the
format characters and the implicit directional marks (`MARKS`), not the others
(`TEXT_CONTROL`; tab, LF, CR and the two separators where it has lines: `TEXT_LINES_CONTROL`).
"""
from __future__ import annotations

import re

__all__ = ["ID_CONTROL", "ID_CONTROL_RE2", "MARKS", "TEXT_CONTROL", "TEXT_LINES_CONTROL",
           "control_class", "id_control_problem"]

_C0 = "a control character (0x00-0x1F or 0x7F)"
_BIDI = "a bidirectional control character"
_CF = "a format character"  # Unicode category Cf: the others, invisible or nearly
_RANGES = (
    (0x00, 0x1F, _C0), (0x7F, 0x7F, _C0), (0x80, 0x9F, "a C1 control character"),
    (0x61C, 0x61C, _BIDI), (0x200E, 0x200F, _BIDI), (0x202A, 0x202E, _BIDI), (0x2066, 0x2069, _BIDI),
    (0x2028, 0x2029, "a line or paragraph separator"),
    (0xFEFF, 0xFEFF, "a zero-width no-break space"),
    (0xAD, 0xAD, _CF), (0x600, 0x605, _CF), (0x6DD, 0x6DD, _CF), (0x70F, 0x70F, _CF),
    (0x890, 0x891, _CF), (0x8E2, 0x8E2, _CF), (0x180E, 0x180E, _CF), (0x200B, 0x200D, _CF),
    (0x2060, 0x2064, _CF), (0x206A, 0x206F, _CF), (0xFFF9, 0xFFFB, _CF), (0x110BD, 0x110BD, _CF),
    (0x110CD, 0x110CD, _CF), (0x13430, 0x1343F, _CF), (0x1BCA0, 0x1BCA3, _CF),
    (0x1D173, 0x1D17A, _CF), (0xE0001, 0xE0001, _CF), (0xE0020, 0xE007F, _CF),
)
"""(first, last code point, what they are) of each range of characters no id may hold."""


def _body(ranges) -> str:
    """The body of a Python `re` character class matching the (first, last) code point ranges."""
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


def _less(ranges, chars: str) -> list[tuple[int, int]]:
    """`ranges` without the code points of `chars`."""
    out, dropped = [], set(map(ord, chars))
    for lo, hi in ranges:
        start = lo
        for point in range(lo, hi + 1):
            if point in dropped:
                out += [(start, point - 1)] if start < point else []
                start = point + 1
        out += [(start, hi)] if start <= hi else []
    return out


ID_CONTROL = _body((lo, hi) for lo, hi, _ in _RANGES)
"""The body of a Python `re` character class matching any of them (`[...]`)."""
ID_CONTROL_RE2 = "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi, _ in _RANGES)
"""The same for RE2 (pyarrow's `match_substring_regex`), which has no `\\u` escape."""
MARKS = ((0x61C, 0x61C), (0x200E, 0x200F))
"""The implicit directional marks (ALM, LRM, RLM): bidirectional controls no id may hold, but
text may. Arabic, Hebrew and Persian text carries them (a number, a Latin word or a closing
mark kept in place on a right-to-left line), and each acts as one invisible letter of its
direction, where the embeddings, overrides and isolates ("Trojan Source") reorder whole runs
of what follows them."""
_TEXT_RANGES = [(lo, hi) for lo, hi, what in _RANGES
                if what not in (_CF, "a zero-width no-break space") and (lo, hi) not in MARKS]
TEXT_CONTROL = _body(_TEXT_RANGES)
"""The part of `ID_CONTROL` free text may not hold either (`server.validation.text_problem`):
the C0 and C1 controls, DEL, the bidirectional controls but the marks (`MARKS`), the line and
paragraph separators; not the other format characters (an emoji's or a Persian word's
zero-width joiner and non-joiner, a soft hyphen, a byte order mark are text)."""
TEXT_LINES_CONTROL = _body(_less(_TEXT_RANGES, "\t\n\r\u2028\u2029"))
"""`TEXT_CONTROL` less tab, LF, CR and the two separators: what text with lines (a template, an
attribute's value) may not hold. One class: `TEXT_CONTROL` behind a lookahead skipping those
five took 4 times as long to search a 17-character line with a break (0.82 us against 0.20)."""

_SEARCH = re.compile(f"[{ID_CONTROL}]").search


def control_class(char: str) -> str:
    """What `char`, one of them, is, for a message: the C0 range as before, others by their
    class and code point ("a bidirectional control character (U+202E)")."""
    point = ord(char)
    for lo, hi, what in _RANGES:
        if lo <= point <= hi:
            return what if what == _C0 else f"{what} (U+{point:04X})"
    raise ValueError(f"U+{point:04X} is not a character ids are refused for")


def id_control_problem(value: str) -> str | None:
    """None when `value` holds none of them, else "contains <the first one's class>". A
    printable `value` holds none (every one is Cc, Cf, Zl or Zp): one C loop clears it, where
    the class tests each character against its ranges outside the Basic Multilingual Plane
    one by one (`server.validation.has_control` does the same)."""
    found = None if value.isprintable() else _SEARCH(value)
    return None if found is None else f"contains {control_class(found.group())}"
