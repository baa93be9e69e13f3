"""server.validation alone: the shared checks and what their messages show."""
import math
import sys
import unicodedata

import pytest

from contract.ids import _RANGES, MARKS
from server.errors import InvalidArgument
from server.models import UnknownCategory
from server.validation import (
    check_context,
    check_count,
    check_finite,
    check_id,
    check_key,
    check_known,
    check_range,
    check_stored_id,
    check_text,
    has_control,
    id_problem,
    link_problem,
    refused_since,
    text_problem,
)


@pytest.mark.parametrize("value, problem", [
    ("u", None), ("a" * 128, None), ("€" * 42, None), ("😀" * 32, None), (" ", None),
    ("", "is empty"), ("a" * 129, "is 129 bytes, at most 128"), ("€" * 43, "is 129 bytes, at most 128"),
    ("😀" * 33, "is 132 bytes, at most 128"), ("a\x1fb", "contains the control character 0x1F"),
])
def test_one_id_rule_counts_utf8_bytes_and_refuses_the_key_separator(value, problem):
    assert id_problem(value, 128) == problem


@pytest.mark.parametrize("char, named", [
    ("\x85", "a C1 control character (U+0085)"), ("\x9b", "a C1 control character (U+009B)"),
    ("\u061c", "a bidirectional control character (U+061C)"),
    ("\u200f", "a bidirectional control character (U+200F)"),
    ("\u202e", "a bidirectional control character (U+202E)"),
    ("\u2067", "a bidirectional control character (U+2067)"),
    ("\u2028", "a line or paragraph separator (U+2028)"),
    ("\ufeff", "a zero-width no-break space (U+FEFF)"),
    ("\u00ad", "a format character (U+00AD)"), ("\u200b", "a format character (U+200B)"),
    ("\u200c", "a format character (U+200C)"), ("\u200d", "a format character (U+200D)"),
    ("\u2060", "a format character (U+2060)"), ("\u2064", "a format character (U+2064)"),
    ("\U000e0041", "a format character (U+E0041)"),
])
def test_ids_and_keys_refuse_c1_bidirectional_and_invisible_controls_naming_the_class(char, named):
    """They make a log line, a CSV export or an admin page show another id ("gpj.exe" shown
    for "exe.jpg" reversed): refused in ids and keys as C0 controls are, the message naming
    the class and code point; a link or free text is not an id and keeps them."""
    assert id_problem(f"ann{char}", 128) == f"contains {named}"
    with pytest.raises(InvalidArgument) as err:
        check_id("user_id", f"ann{char}", 128)
    assert str(err.value) == f"user_id: contains {named}" and "ann" not in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        check_key("attributes key", f"k{char}", 64)
    assert str(err.value) == f"attributes key: {'k' + char!r} contains {named}"  # escaped
    assert link_problem(f"/p/{char}") is None and check_text("title", f"t{char}", 64)
    assert check_stored_id("user_id", f"ann{char}", 128)  # may name a profile stored before


def test_every_format_character_is_refused_and_none_of_the_refused_is_printable():
    """Unicode's Cf whole (soft hyphen, zero-width space and joiners, word joiner, tag
    characters, ...: an id holding one shows as another) is refused, as `unicodedata` of the
    running Python has it; and `has_control`'s fast path (`str.isprintable`) clears no
    character the rule refuses."""
    cf = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert [f"U+{ord(c):04X}" for c in cf if id_problem(f"a{c}", 128) is None] == []
    refused = [chr(c) for lo, hi, _ in _RANGES for c in range(lo, hi + 1)]
    assert len(refused) > len(cf) and not any(c.isprintable() for c in refused)
    assert has_control("ann\xa0\u00e9 \U0001f600") is None  # not printable, searched: none


def test_free_text_refuses_controls_and_bidi_but_not_format_characters():
    """Every C0 and C1 control, DEL, bidirectional control and line separator of the id rule
    is refused in single-line text, named with its position; multi-line text takes tab, LF,
    CR, U+2028 and U+2029 back; the other format characters (an emoji's zero-width joiner, a
    soft hyphen) and the directional marks (ALM, LRM, RLM: right-to-left text's) are text."""
    lines = set("\t\n\r\u2028\u2029")
    marks = {chr(c) for lo, hi in MARKS for c in range(lo, hi + 1)}
    assert marks == {"\u061c", "\u200e", "\u200f"}
    assert all(id_problem(f"a{m}", 128) for m in marks)  # an id still may not hold one
    for lo, hi, what in _RANGES:
        for char in map(chr, range(lo, hi + 1)):
            text = f"ab{char}c"
            if what == "a format character" or char == "\ufeff" or char in marks:
                assert text_problem(text) is None, hex(ord(char))
                continue
            problem = text_problem(text)
            assert problem.startswith(f"contains {what}") and f"U+{ord(char):04X}" in problem
            assert problem.endswith(", at character 3"), problem
            assert (text_problem(text, multiline=True) is None) == (char in lines), hex(ord(char))
    assert text_problem("a\ud800", multiline=True).startswith("contains a lone surrogate")
    assert text_problem("Ünïcødé 😀 \u00a0") is None
    check_context([("ref", "two\nlines")], 1024)  # a Recommend context's value: lines taken
    with pytest.raises(InvalidArgument, match=r"^context\['ref'\]: contains a C1 control "
                       r"character \(U\+009B\), at character 1$"):
        check_context([("ref", "\x9b2J")], 1024)


def test_a_stored_id_is_still_checked_for_everything_else():
    for bad, problem in (("", "is empty"), ("a\x1fb", "contains the control character 0x1F"),
                         ("a\x00", "contains a control character (0x00-0x1F or 0x7F)"),
                         ("u" * 129, "is 129 bytes, at most 128")):
        with pytest.raises(InvalidArgument) as err:
            check_stored_id("user_id", bad, 128)
        assert str(err.value) == f"user_id: {problem}"


def test_refused_since_names_only_what_a_stored_id_may_hold():
    """What UpsertAttributes and an unsubscribe event take for a stored profile alone: an id
    refused for a character refused since (its problem); None for a usable id and for one
    every call refuses (C0, empty, too long, a lone surrogate)."""
    assert refused_since("ann\u202e", 128) == "contains a bidirectional control character (U+202E)"
    assert refused_since("a\x9b[2J", 128) == "contains a C1 control character (U+009B)"
    assert refused_since("ann\u200b", 128) == "contains a format character (U+200B)"
    for value in ("ann", "é" * 64, "", "a\x1fb", "a\x00\u202e", "u" * 129, "a\ud800"):
        assert refused_since(value, 128) is None, repr(value)


def test_a_bad_id_names_the_field_with_its_prefix_and_never_echoes_the_value():
    with pytest.raises(InvalidArgument) as err:
        check_id("user_id", "alice\x1f@example.com", 128, "requests[2].")
    assert err.value.field == "requests[2].user_id"
    assert "alice" not in str(err.value)


def test_strings_are_echoed_as_a_short_prefix_only():
    with pytest.raises(InvalidArgument) as err:
        check_text("name", "n" * 300, 256)
    assert str(err.value) == "name: 300 characters, at most 256 ('nnnnnnnnnnnnnnnn'...)"
    with pytest.raises(InvalidArgument) as err:
        check_known("channel", "carrier-pigeon-and-more", ("web", "email"))
    assert str(err.value) == "channel: 'carrier-pigeon-a'... is unknown (known: web, email)"
    assert check_text("name", "n" * 256, 256) and check_known("channel", "web", ("web",))


def test_an_unknown_category_is_named_escaped_among_the_bundles_and_left_out_of_the_log():
    """A bundle's category names come from a catalog file as they are: one holding an escape
    sequence was printed raw in every unknown-category message (three copies of the message,
    one escaping the caller's name only)."""
    err = UnknownCategory("requests[1].categories", "shoes\x1b[2J", ["\x1b[31mred", "books"])
    assert str(err) == ("requests[1].categories: unknown category 'shoes\\x1b[2J' (the served "
                        "bundle knows: '\\x1b[31mred', 'books')")
    assert "shoes" not in err.log_message() and "books" not in err.log_message()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_numbers_must_be_finite(value):
    with pytest.raises(InvalidArgument, match="^context.x: must be a finite number"):
        check_finite("x", value, "context.")
    assert check_finite("x", 1) == 1.0


def test_counts_and_ranges_hold_at_their_bounds_and_fail_past_them():
    check_count("events", 10, 10)
    with pytest.raises(InvalidArgument, match="^events: 11 entries, at most 10$"):
        check_count("events", 11, 10)
    assert check_range("k", 1000, 1, 1000) == 1000
    for k in (0, 1001):
        with pytest.raises(InvalidArgument, match=f"^k: {k} is outside 1..1000$"):
            check_range("k", k, 1, 1000)


def test_every_limit_is_a_documented_setting_read_from_the_environment(monkeypatch):
    import ast
    import inspect
    from itertools import pairwise

    from server.config import Settings
    from server.limits import Limits
    monkeypatch.setenv("TAILOR_LIMITS__RECOMMEND_K", "5")
    assert Settings().limits.recommend_k == 5 and Limits().recommend_k == 1000
    body = ast.parse(inspect.getsource(Limits)).body[0].body
    documented = {node.target.id for node, doc in pairwise(body)
                  if isinstance(node, ast.AnnAssign) and isinstance(doc, ast.Expr)}
    assert documented == set(Limits.model_fields)


LOOKALIKE_KEYS = {
    "\u0435mail": "mixes Cyrillic and Latin letters (U+0435 CYRILLIC SMALL LETTER IE, ",
    "ph\u03bfne": "mixes Latin and Greek letters (U+0070 LATIN SMALL LETTER P, "
                  "U+03BF GREEK SMALL LETTER OMICRON)",
    "\u0570hone": "mixes Armenian and Latin letters (U+0570 ARMENIAN SMALL LETTER HO, ",
    "\u0438\u043c\u044f\u03bf": "mixes Cyrillic and Greek letters",
    "name_\u0627\u0633\u0645": "mixes Latin and Arabic letters",
    "\uff45\uff4d\uff41\uff49\uff4c": "is not in NFKC form (U+FF45 FULLWIDTH LATIN SMALL LETTER E, "
                                      "shown as 'e')",
    "\U0001d41e\U0001d426\U0001d41a\U0001d422\U0001d425": "is not in NFKC form (U+1D41E "
                                                          "MATHEMATICAL BOLD SMALL E",
    "cafe\u0301": "is not in NFKC form (a letter and its accent written apart)",
    "em\u034fail": "holds U+034F COMBINING GRAPHEME JOINER, which shows as nothing",
    "e\u115fmail": "holds U+115F HANGUL CHOSEONG FILLER, which shows as nothing",
    "ph\ufe0fone": "holds U+FE0F VARIATION SELECTOR-16, which shows as nothing",
    "addr\U000e0100ess": "holds U+E0100 VARIATION SELECTOR-17, which shows as nothing",
    "na\u2065me": "holds U+2065 (unnamed), which shows as nothing",
}
"""Keys that show as another (`email`, `phone`, `имя`...) with no format character: a letter
of another script among Latin ones (Cyrillic `е`, Greek omicron, Armenian `հ`), other
mixtures TS #39 refuses, forms NFKC folds (fullwidth, mathematical, a decomposed accent), and
characters shown as nothing that are not format characters (a mark, a Hangul filler letter);
each with the start of what its refusal says."""
SINGLE_SCRIPT_KEYS = ["email", "first-name", "имя", "電話", "メール", "名前_kana", "user_名前",
                      "전화_번호", "Hawai\u02bbi", "caf\u00e9", "όνομα", "الاسم"]
"""Keys of one script (Cyrillic, Han, Katakana, Greek, Arabic, Latin with a precomposed é or the
ʻokina, a Common modifier letter), or of the mixtures Japanese, Chinese and Korean write (Latin
with Han, Katakana, Hangul): taken as before."""


@pytest.mark.parametrize("key", list(LOOKALIKE_KEYS))
def test_keys_that_show_as_another_are_refused_naming_the_character(key):
    with pytest.raises(InvalidArgument) as err:
        check_key("attributes key", key, 64)
    problem = LOOKALIKE_KEYS[key]
    assert str(err.value).startswith(f"attributes key: {key!r} {problem}"), str(err.value)
    assert err.value.log_message().startswith(f"attributes key: {problem}")  # not the key
    assert key not in err.value.log_message()


@pytest.mark.parametrize("key", SINGLE_SCRIPT_KEYS)
def test_keys_of_one_script_or_a_cjk_mixture_are_taken(key):
    assert check_key("attributes key", key, 64) == key


def _letters(first: int, last: int) -> list[str]:
    return [chr(c) for c in range(first, last + 1) if unicodedata.category(chr(c))[0] == "L"
            and unicodedata.normalize("NFKC", chr(c)) == chr(c)]


def test_scripts_read_from_letter_names_match_their_blocks_and_ascii_keys_are_not_read():
    """A letter's script is the first word of its name (`lookalikes`): every letter of the
    Cyrillic, Greek, Armenian and Cherokee blocks after a Latin `a` is refused as a mixture;
    every letter of the Hiragana, Katakana, CJK, Hangul and Bopomofo blocks is taken beside
    it; an ASCII key is never looked into (nothing enters `lookalike_problem`'s cache)."""
    from server import lookalikes
    for block in ((0x400, 0x4FF), (0x370, 0x3FF), (0x531, 0x58F), (0x13A0, 0x13FF)):
        taken = [f"U+{ord(c):04X}" for c in _letters(*block) if check_key_ok("a" + c)]
        assert taken == [] and _letters(*block), block
    for block in ((0x3041, 0x309F), (0x30A1, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
                  (0x3105, 0x312F)):
        refused = [f"U+{ord(c):04X}" for c in _letters(*block) if not check_key_ok("a" + c)]
        assert refused == [] and _letters(*block), block
    lookalikes.lookalike_problem.cache_clear()
    assert all(check_key("k", chr(c) + "x", 64) for c in range(0x20, 0x7F))
    assert lookalikes.lookalike_problem.cache_info().currsize == 0


def check_key_ok(key: str) -> bool:
    try:
        check_key("k", key, 64)
    except InvalidArgument:
        return False
    return True


def test_latin_lookalikes_are_letters_of_other_scripts_read_one_for_one():
    """The table the PII masking reads keys with (`lookalikes.latin_readings`) holds only
    letters NFKC keeps, none Latin or Common, each under one Latin letter."""
    from server.lookalikes import _LATIN_LOOKALIKES, _script, latin_readings
    chars = "".join(_LATIN_LOOKALIKES.values())
    assert len(chars) == len(set(chars)) > 200
    assert [c for c in chars if unicodedata.normalize("NFKC", c) != c
            or _script(c) in (None, "LATIN")] == []
    assert latin_readings("\u0456\u0440") == ("ip",) and latin_readings("ip") == ()
    assert latin_readings("\u0406\u0420") == ("lp", "ip")  # a capital I reads as l too
