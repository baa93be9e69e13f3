"""Keys that show as other keys without holding a control or format character: compatibility
forms (fullwidth `ｅｍａｉｌ`, mathematical `𝐞𝐦𝐚𝐢𝐥`, a letter and its accent written apart),
letters of several scripts (`\\u0435mail`, a Cyrillic `е` among Latin letters, shows as `email`)
and the other characters shown as nothing (`invisible`: `e\\u115fmail`, a Hangul filler).
The rule is Unicode TS #39's for identifiers: a key is in NFKC form, and its letters come from
one script, or from Latin with the scripts Japanese, Chinese and Korean write beside it
("Highly Restrictive": Latin + Han + Hiragana + Katakana, Latin + Han + Bopomofo, Latin + Han +
Hangul). So `имя`, `電話`, `メール`, `名前_kana` and `user_名前` are keys; `\\u0435mail` and
`ph\\u03bfne` (a Greek omicron) are not; nor are Cyrillic mixed with Greek, or Arabic with Latin.

A letter's script is read from the first word of its Unicode name (`CYRILLIC SMALL LETTER IE`:
Cyrillic), the standard library having no Script property: an approximation. Checked against
Scripts.txt (as the confusable-homoglyphs 3.3.1 package ships it) over the 128,300 letters
NFKC keeps (Unicode 14), it reads 10 otherwise: 4 Latin modifier letters (U+1D2F, ...) and
U+303B as Common, U+16FE3 as `OLD`, and 4 Common letters as a script (U+0640 ARABIC TATWEEL,
U+3006, U+30FC, U+A9CF); the 6,145 Tangut ideographs unicodedata leaves unnamed count as one
script, and historic scripts sharing a first word (`OLD ITALIC`, `OLD PERSIAN`) as one, which
only lets such a mixture through. Every Cyrillic, Greek, Armenian, Cherokee and Coptic letter
is read right. Letters of the Common script (modifier letters such as U+02BB, the okina of
`Hawaiʻi`) count for none, as TS #39 has it; marks, digits and punctuation are not letters and
count for none either. NFKC follows the Unicode version of the running Python
(`unicodedata.unidata_version`)."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["invisible", "latin_readings", "lookalike_problem", "mixed_scripts"]

invisible = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2065\u3164\ufe00-\ufe0f"
                       "\uffa0\ufff0-\ufff8\U000e0000-\U000e0fff]").search
"""A match for a character Unicode shows as nothing (Default_Ignorable_Code_Point, Unicode
14) that is not a format character (`validation.has_control` takes those): the combining
grapheme joiner U+034F, the Hangul fillers U+115F, U+1160, U+3164 and U+FFA0 (letters, of the
Hangul script as named), Khmer's inherent vowels, Mongolian and other variation selectors
(marks), and the code points kept unassigned for more of them. `em\u034fail` and
`e\u115fmail` show as `email`: TS #39 leaves them out of identifiers."""

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
    """None when `key` holds no character shown as nothing (`invisible`), is in NFKC form and
    its letters are of one script (or an allowed mixture), else why not, naming the first
    character at fault by code point and name (never the key: the problem is logged). A key
    that is ASCII passes at once (`str.isascii`)."""
    if key.isascii():
        return None
    if hidden := invisible(key):
        return (f"holds {_char(hidden.group())}, which shows as nothing, so the key shows as "
                "another without it; leave it out")
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


_LATIN_LOOKALIKES = {
    "a": "\u0391\u03b1\u0410\u0430\u13aa\u15c5\ua4ee\U000102a0\U00016f40",
    "b": "\u0392\u0412\u042c\u13cf\u13f4\u1472\u15af\u15f7\ua4d0\U00010282\U000102a1\U00010301",
    "c": ("\u0421\u0441\u13df\u2ca4\u2ca5\ua4da\uabaf\U000102a2\U00010302\U00010415\U0001043d"
          "\U0001051c"),
    "d": "\u0501\u13a0\u13e7\u146f\u15de\u15ea\ua4d2\ua4d3",
    "e": "\u0395\u0415\u0435\u04bd\u13ac\u2d39\ua4f0\U00010286\U000118a6\U000118ae",
    "f": "\u03dc\u0584\u15b4\ua4dd\U00010287\U000102a5\U00010525\U000118a2\U000118c2",
    "g": "\u050c\u0581\u13c0\u13f3\ua4d6",
    "h": "\u0397\u041d\u04bb\u0570\u13bb\u13c2\u157c\u2c8e\ua4e7\U000102cf",
    "i": "\u03b9\u0456\u04cf\u13a5\ua647\uab75\U000118c3",
    "j": "\u037f\u03f3\u0408\u0458\u13ab\u148d\ua4d9",
    "k": "\u039a\u041a\u13e6\u16d5\u2c94\ua4d7\U00010518",
    "l": ("\u0399\u0406\u04c0\u13de\u14aa\u16c1\u2c92\u2cd0\u2d4f\ua4e1\ua4f2\U0001028a\U00010309"
          "\U0001041b\U00010526\U000118a3\U000118b2\U00016f16\U00016f28"),
    "m": "\u039c\u03fa\u041c\u13b7\u15f0\u16d6\u2c98\ua4df\U000102b0\U00010311",
    "n": "\u039d\u0578\u057c\u2c9a\ua4e0\U00010513",
    "o": ("\u039f\u03bf\u03c3\u041e\u043e\u0555\u0585\u0b20\u0d20\u101d\u10ff\u12d0\u2c9e\u2c9f\u2d54"
          "\ua4f3\U00010292\U000102ab\U00010404\U0001042c\U000104c2\U000104ea\U00010516\U000118b5"
          "\U000118c8\U000118d7"),
    "p": "\u03a1\u03c1\u0420\u0440\u13e2\u146d\u2ca2\u2ca3\ua4d1\U00010295",
    "q": "\u051b\u0563\u0566\u2d55",
    "r": "\u0433\u13a1\u13d2\u1587\u1d26\u2c85\ua4e3\uab81\U000104b4\U00016f35",
    "s": ("\u0405\u0455\u054f\u13d5\u13da\ua4e2\uabaa\U00010296\U00010420\U00010448\U000118c1"
          "\U00016f3a"),
    "t": "\u03a4\u0422\u13a2\u2ca6\ua4d4\U00010297\U000102b1\U00010315\U000118bc\U00016f0a",
    "u": "\u03c5\u054d\u057d\u1200\u144c\ua4f4\U000104ce\U000104f6\U000118b8\U000118d8\U00016f42",
    "v": ("\u03bd\u0474\u0475\u13d9\u142f\u2d38\ua4e6\ua6df\uaba9\U0001051d\U00011706\U000118a0"
          "\U000118c0\U00016f08"),
    "w": "\u0461\u051c\u051d\u0561\u13b3\u13d4\ua4ea\uab83\U0001170a\U0001170e\U0001170f",
    "x": ("\u03a7\u0425\u0445\u1541\u157d\u16b7\u2cac\u2d5d\ua4eb\U00010290\U000102b4\U00010317"
          "\U00010527"),
    "y": ("\u03a5\u03b3\u0423\u0443\u04ae\u04af\u10e7\u13a9\u13bd\u2ca8\ua4ec\U000102b2\U000118a4"
          "\U000118dc\U00016f43"),
    "z": "\u0396\u13c3\ua4dc\uab93\U000118a9\U000118c4",
}
"""The letters of other scripts that Unicode's confusables.txt (TS #39 data, as the
confusable-homoglyphs 3.3.1 package ships it) makes confusable with each Latin letter: one
letter for one, NFKC-stable, not Latin and not Common. "l" holds the look-alikes of both `l`
and `I` (confusables.txt reads `I` as `l`)."""
_READ_AS_L = str.maketrans({c: latin for latin, chars in _LATIN_LOOKALIKES.items() for c in chars})
_READ_AS_I = str.maketrans(dict.fromkeys(_LATIN_LOOKALIKES["l"], "i"))


def latin_readings(key: str) -> tuple[str, ...]:
    """How `key` reads in Latin letters where its letters of other scripts look like them
    (`_LATIN_LOOKALIKES`): all-Cyrillic `\u0456\u0440` reads `ip`, all-Greek `\u03b9\u03c1`
    too. A whole-script look-alike like these is one script, which TS #39's mixed-script rule
    (and so `lookalike_problem`) takes; the PII masking matches these readings as well. Empty
    for an ASCII key or one with no such letter; two readings when it holds a letter read as
    `l` or `I` (`\u0406\u0420`, Cyrillic, reads `IP`)."""
    if key.isascii():
        return ()
    as_l = key.translate(_READ_AS_L)
    if as_l == key:
        return ()
    as_i = key.translate(_READ_AS_I).translate(_READ_AS_L)
    return (as_l,) if as_i == as_l else (as_l, as_i)
