"""Keys that show as other keys without holding an invisible character: compatibility forms
(fullwidth `ｅｍａｉｌ`, mathematical `𝐞𝐦𝐚𝐢𝐥`, a letter and its accent written apart) and
letters of several scripts (`\\u0435mail`, a Cyrillic `е` among Latin letters, shows as `email`).
The rule is Unicode TS #39's for identifiers: a key is in NFKC form, and its letters come from
one script, or from Latin with the scripts Japanese, Chinese and Korean write beside it
("Highly Restrictive": Latin + Han + Hiragana + Katakana, Latin + Han + Bopomofo, Latin + Han +
Hangul). So `имя`, `電話`, `メール`, `名前_kana` and `user_名前` are keys; `\\u0435mail` and
`ph\\u03bfne` (a Greek omicron) are not; nor are Cyrillic mixed with Greek, or Arabic with Latin.

A letter's script is read from the first word of its Unicode name (`CYRILLIC SMALL LETTER IE`:
Cyrillic), the standard library having no Script property: an approximation, exact for the
scripts with Latin look-alikes (Latin, Cyrillic, Greek, Armenian, Cherokee, Coptic, ...) and for
those the allowed mixtures name; historic scripts sharing a first word (`OLD ITALIC`, `OLD
PERSIAN`) count as one, which only lets such a mixture through. Letters of the Common script
(modifier letters such as U+02BB, the okina of `Hawaiʻi`) count for none, as TS #39 has it;
marks, digits and punctuation are not letters and count for none either. NFKC follows the
Unicode version of the running Python (`unicodedata.unidata_version`)."""
from __future__ import annotations

import unicodedata
from functools import lru_cache

__all__ = ["lookalike_problem", "mixed_scripts"]

_COMMON = frozenset({"MODIFIER", "VERTICAL", "CARON", "MASU", "VEDIC"})
"""First words of letters of the Common script (or shared by several scripts), which count for
none: `MODIFIER LETTER PRIME`, `VERTICAL KANA REPEAT MARK`, `CARON`, `MASU MARK`, `VEDIC SIGN`."""
_SCRIPT_OF = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "HENTAIGANA": "HIRAGANA",
              "KATAKANA-HIRAGANA": "KATAKANA", "TURNED": "LATIN", "ROMAN": "LATIN"}
"""First words that are not their letters' script's name: `CJK UNIFIED IDEOGRAPH-96FB` (Han),
`IDEOGRAPHIC ITERATION MARK`, `HENTAIGANA LETTER A-1`, `KATAKANA-HIRAGANA PROLONGED SOUND MARK`
(in Japanese words only), `TURNED CAPITAL F`, `ROMAN NUMERAL REVERSED ONE HUNDRED` (Latin)."""
_ALLOWED = (frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
            frozenset({"LATIN", "HAN", "BOPOMOFO"}), frozenset({"LATIN", "HAN", "HANGUL"}))
"""The mixtures TS #39's Highly Restrictive level allows (Japanese, Chinese, Korean)."""
_NAMES = {"HAN": "Han", "UNNAMED": "unnamed"}


def _script(char: str) -> str | None:
    """The script of letter `char` (the first word of its name, `_SCRIPT_OF` mapped), None for
    a letter of the Common script and for anything not a letter."""
    if not unicodedata.category(char).startswith("L"):
        return None
    word = unicodedata.name(char, "UNNAMED").split(" ", 1)[0]
    return None if word in _COMMON else _SCRIPT_OF.get(word, word)


def mixed_scripts(key: str) -> tuple[str, str] | None:
    """None when the letters of `key` come from one script or an allowed mixture (`_ALLOWED`),
    else the first letter of the first script and that of the first script mixed with it."""
    if key.isascii():
        return None
    seen: dict[str, str] = {}
    for char in key:
        script = _script(char)
        if script is None or script in seen:
            continue
        seen[script] = char
        if len(seen) > 1 and not any(seen.keys() <= allowed for allowed in _ALLOWED):
            return next(iter(seen.values())), char
    return None


def _named(script: str) -> str:
    return _NAMES.get(script, script.title())


def _char(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, '(unnamed)')}"


@lru_cache(maxsize=1024)
def lookalike_problem(key: str) -> str | None:
    """None when `key` is in NFKC form and its letters are of one script (or an allowed
    mixture), else why not, naming the first character at fault by code point and name (never
    the key: the problem is logged). A key that is ASCII passes at once (`str.isascii`)."""
    if key.isascii():
        return None
    if unicodedata.normalize("NFKC", key) != key:
        odd = next((c for c in key if unicodedata.normalize("NFKC", c) != c), None)
        what = (f"{_char(odd)}, shown as {unicodedata.normalize('NFKC', odd)!r}" if odd
                else "a letter and its accent written apart")
        return (f"is not in NFKC form ({what}): fullwidth, mathematical and other compatibility "
                "letters, and accents written apart, show as another key; write it in NFKC form")
    mixed = mixed_scripts(key)
    if mixed is None:
        return None
    first, other = mixed
    return (f"mixes {_named(_script(first))} and {_named(_script(other))} letters "
            f"({_char(first)}, {_char(other)}), as look-alike keys do: a key's letters come "
            "from one script (Latin may go with Han, Hiragana, Katakana, Bopomofo or Hangul)")
