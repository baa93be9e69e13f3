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

Free text (message bodies, templates, titles, display names) is not an id: it may hold them.
"""
from __future__ import annotations

import re

__all__ = ["ID_CONTROL", "ID_CONTROL_RE2", "control_class", "id_control_problem"]

_C0 = "a control character (0x00-0x1F or 0x7F)"
_BIDI = "a bidirectional control character"
_RANGES = (
    (0x00, 0x1F, _C0), (0x7F, 0x7F, _C0), (0x80, 0x9F, "a C1 control character"),
    (0x61C, 0x61C, _BIDI), (0x200E, 0x200F, _BIDI), (0x202A, 0x202E, _BIDI), (0x2066, 0x2069, _BIDI),
    (0x2028, 0x2029, "a line or paragraph separator"),
    (0xFEFF, 0xFEFF, "a zero-width no-break space"),
)
"""(first, last code point, what they are) of each range of characters no id may hold."""

ID_CONTROL = "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi, _ in _RANGES)
"""The body of a Python `re` character class matching any of them (`[...]`)."""
ID_CONTROL_RE2 = "".join(f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi, _ in _RANGES)
"""The same for RE2 (pyarrow's `match_substring_regex`), which has no `\\u` escape."""

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
    """None when `value` holds none of them, else "contains <the first one's class>"."""
    found = _SEARCH(value)
    return None if found is None else f"contains {control_class(found.group())}"
