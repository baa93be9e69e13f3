"""The PII masking policy: which attribute keys are PII (declared once, `Settings.pii_keys`) and
how their values are masked wherever they leave the server for a caller without `pii-reader`:
profile attributes, event attributes (GetProfile events, ExportEvents), the context of
exported decisions, and the stored meta entries an access export copies (`masked_entries`).
A key is matched in its NFKC form, case-folded (fullwidth `ｅｍａｉｌ` is `email`), and as it reads in
Latin letters (all-Cyrillic `\u0456\u0440` reads `ip`, a key the API takes); one that shows
as another key in a way the API refuses since (`validation.key_problem`: a control or format
character, letters of mixed scripts such as `\u0435mail` with a Cyrillic `е`), which a store
written before may hold, is PII whatever it spells."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, MutableMapping
from fnmatch import fnmatchcase

from ..lookalikes import latin_readings
from ..validation import key_problem

__all__ = ["PiiPolicy", "mask_value", "masked_entries", "spoofed"]

_MASK_CACHE_MAX = 4096
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
"""Where a camelCase word starts: `firstName` -> first|Name, `userIP` -> user|IP, `IPAddress`
-> IP|Address."""
_SEPARATORS = re.compile(r"[\s.\-]+")


def spellings(key: str) -> tuple[str, ...]:
    """The forms of `key` the patterns are matched against: case-folded as written, and in
    snake case (camelCase words, `-`, `.` and spaces split by `_`): `firstName`, `FirstName`
    and `first-name` are all `first_name`, which a pattern names once."""
    low = key.casefold()
    snake = _SEPARATORS.sub("_", _WORD_START.sub("_", key)).casefold()
    return (low,) if snake == low else (low, snake)


def _folded(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def spoofed(key: str) -> bool:
    """Whether `key` (in NFKC form) shows as another key in a way no new key may since: the
    check a key is refused by (`validation.key_problem`) finds a control or format character
    (`e\u200bmail`), another character shown as nothing (`lookalikes.invisible`:
    `e\u115fmail`), or letters of scripts TS #39 does not mix (`\u0435mail`). A store written
    before holds such keys as they were given; which key one imitates is not known (a skeleton
    needs TS #39's confusables table, which the standard library lacks), so its value is masked
    whatever it spells: a mixed-script key is what a spoof looks like, and masking one that was
    not costs a reader a value, never a leak."""
    return key_problem(key) is not None


def mask_value(value: str) -> str:
    """`carol@example.com` → `c***@example.com`; anything else keeps its first character."""
    if "@" in value:
        name, _, domain = value.partition("@")
        return f"{name[:1]}***@{domain}"
    return value[:1] + "***" if len(value) > 1 else "***"


def masked_entries(entries: Mapping[str, object]) -> dict:
    """A profile's other stored meta entries (`ProfileView.extra`, which ExportProfile copies)
    as a caller without `pii-reader` reads them: every value masked, a string by `mask_value`,
    anything else (a number, a list, an object) as "***". No field declares these entries and
    no `pii_keys` pattern was matched against them when they were stored, so each one is taken
    to be PII; the keys stay (they name what is held, as attribute keys do)."""
    return {k: mask_value(v) if isinstance(v, str) else "***" for k, v in entries.items()}


class PiiPolicy:
    """`patterns`: case-insensitive `fnmatch` patterns of PII keys (`Settings.pii_keys`), each
    matched against the key's NFKC form as written and in snake case (`spellings`), and as it
    reads in Latin letters where it holds look-alikes of them (`lookalikes.latin_readings`:
    all-Cyrillic `\u0456\u0440` reads `ip`); a key holding a control or format character, or
    letters of mixed scripts, is PII (`spoofed`).
    `is_pii(key)` costs one dict hit per distinct key (patterns resolved once)."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(_folded(p).casefold() for p in patterns)
        self._known: dict[str, bool] = {}

    def is_pii(self, key: str) -> bool:
        hit = self._known.get(key)
        if hit is None:
            form = _folded(key)
            hit = spoofed(form) or any(fnmatchcase(f, p) for read in (form, *latin_readings(form))
                                       for f in spellings(read) for p in self.patterns)
            if len(self._known) < _MASK_CACHE_MAX:
                self._known[key] = hit
        return hit

    def mask_map(self, values: MutableMapping[str, str]) -> bool:
        """Mask the PII values of `values` (a dict or a protobuf map) in place; True if any."""
        hits = [k for k in values if self.is_pii(k)]
        for k in hits:
            values[k] = mask_value(values[k])
        return bool(hits)

    def mask_message(self, msg) -> bool:
        """Mask the `attributes` map of `msg` (a Profile or an Event) and of the events it
        carries, in place; True if anything was masked."""
        masked = self.mask_map(msg.attributes)
        for event in getattr(msg, "events", ()):
            if event.attributes:
                masked = self.mask_map(event.attributes) or masked
        return masked
