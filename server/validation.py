"""The request checks every handler shares: ids, bounded strings, finite numbers, list sizes, and
the names reserved for what the server writes itself (event ids, the STOP mark, consent sources).

Each `check_*` returns quietly or raises `InvalidArgument` naming the field (`where` prefixes
it, e.g. "requests[3]."; it is joined only on failure, so the checks cost a few comparisons on
the hot path). Messages echo at most a short prefix of a bad string, and only to the caller:
the log line leaves it out (`InvalidArgument`'s `logged_problem`); ids are never echoed. The
bounds themselves live in `server.limits.Limits`; the characters no id or key may hold in
`contract.ids` (training's readers share them).
"""
from __future__ import annotations

import math
import re
from collections.abc import Collection

from contract.ids import ID_CONTROL, TEXT_CONTROL, TEXT_LINES_CONTROL, control_class
from contract.items import SCRIPT_LINK, script_scheme_problem

from .contact.consent import reserved_source
from .errors import InvalidArgument
from .lookalikes import lookalike_problem
from .store.keys import SEP_CHAR

__all__ = ["SEP", "check_all_known", "check_context", "check_count", "check_finite", "check_id",
           "check_key", "check_known",
           "check_address",
           "check_not_negative", "check_range", "check_text", "check_time", "check_version",
           "check_free_text", "text_problem",
           "check_link", "check_source", "check_window", "link_problem", "script_link_problem",
           "check_stored_id", "refused_since",
           "STORED_ONLY", "STORED_CAMPAIGN_ONLY", "STOP_MARK", "STOP_SENT", "stop_sent",
           "RESERVED_STOP_MARK", "SERVER_EVENT_PREFIX", "server_event_id", "RESERVED_EVENT_ID",
           "has_control", "has_c0_control", "control_problem", "id_problem", "key_problem",
           "shown"]

SEP = SEP_CHAR
"""The store's key separator (`server.store.keys`): no id may contain it."""

PREFIX_CHARS = 16
_CONTROL = re.compile(f"[{ID_CONTROL}\\ud800-\\udfff]").search


def has_control(value: str) -> re.Match | None:
    """A match (truthy) when `value` holds a character no id or key may (`contract.ids`: C0 and
    C1 controls, DEL, the bidirectional controls, the line and paragraph separators, every other
    format character (Unicode Cf: U+200B, U+00AD, U+2060, U+FEFF, ...); SEP among them), or a
    lone surrogate (a str only JSON's `\\ud800` escapes make: it has no UTF-8 form, so it cannot
    become a key). `check_id` runs it on every hot call: `str.isprintable` (false for every one
    of them, all Cc, Cf, Zl, Zp or Cs: test_validation_rules) clears a usable id in one C loop,
    and only an id it does not clear (one holding any of them, or a space other than ' ', an
    unassigned or private-use character) is searched. The class alone cost 0.98 us on 32
    characters where its C1-and-bidi form cost 0.36: `re` tests a character outside the Basic
    Multilingual Plane's bitmap range by range (Cf has eight such ranges), for every character."""
    return None if value.isprintable() else _CONTROL(value)


has_c0_control = re.compile(f"[\\x00-\\x1e{SEP}\\x7f\\ud800-\\udfff]").search
"""`has_control` for the C0 controls, DEL and lone surrogates alone: the rule of links and
addresses (not ids: an address's spelling is hashed as the suppression list stored it), and of
ids stored before the other characters were refused (`check_stored_id`)."""
_SURROGATE = re.compile("[\ud800-\udfff]").search
_IN_LINE = re.compile(f"[{TEXT_CONTROL}\\ud800-\\udfff]").search
_IN_LINES = re.compile(f"[{TEXT_LINES_CONTROL}\\ud800-\\udfff]").search
_VERSION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def shown(value: str) -> str:
    """A short prefix of `value`, quoted, for an error message."""
    return repr(value) if len(value) <= PREFIX_CHARS else repr(value[:PREFIX_CHARS]) + "..."


def id_problem(value: str, max_bytes: int, control=has_control) -> str | None:
    """None when `value` is a usable id (1..max_bytes UTF-8 bytes, none of the characters
    `control` finds: `has_control`), else why not, naming the first such character's class."""
    if not value:
        return "is empty"
    if _SURROGATE(value):
        return "contains a lone surrogate (not a character: no UTF-8 form)"
    # An id of at most max_bytes // 4 characters fits (UTF-8: <= 4 bytes a character), so only
    # longer ones are encoded to be measured.
    if len(value) > max_bytes >> 2 and len(value.encode()) > max_bytes:
        return f"is {len(value.encode())} bytes, at most {max_bytes}"
    if SEP in value:
        return "contains the control character 0x1F"
    return control_problem(value, control)


def control_problem(value: str, control=has_control, at: bool = False) -> str | None:
    """None when `control` finds nothing in `value`, else "contains <its class>" (`contract.ids`;
    a lone surrogate, which `id_problem` names first, as such); `at`: with its code point and
    position ("..., U+001B, at character 7": free text is not echoed whole)."""
    found = control(value)
    if found is None:
        return None
    char = found.group()
    what = ("a lone surrogate (not a character: no UTF-8 form)" if "\ud800" <= char <= "\udfff"
            else control_class(char))
    if not at:
        return f"contains {what}"
    code = f"U+{ord(char):04X}"
    return f"contains {what}{'' if code in what else ', ' + code}, at character {found.start() + 1}"


def check_id(field: str, value: str, max_bytes: int, where: str = "") -> str:
    # The common case (short, non-empty, no control character) costs two comparisons and one
    # regex scan.
    if not value or len(value) > max_bytes >> 2 or has_control(value):
        problem = id_problem(value, max_bytes)
        if problem is not None:
            raise InvalidArgument(where + field, problem)
    return value


def check_stored_id(field: str, value: str, max_bytes: int, where: str = "") -> str:
    """`check_id` for a call that names stored records to erase, export, read or retire them
    (DeleteProfile, ExportProfile, an opt-out naming a stored profile; GetCampaign,
    ArchiveCampaign, GetCampaignStats, ExportDecisions, ListCampaigns' page token; RemoveItems
    of a served item): an id holding a character refused only since C1, bidirectional and
    format controls were (`has_c0_control` finds none in it) may name a profile, campaign or
    item stored before, which must stay erasable, exportable, readable and removable. Every
    other rule holds. (A call that may only change such a profile, never make one, checks its
    id with `refused_since` instead.)"""
    if not value or len(value) > max_bytes >> 2 or has_c0_control(value):
        problem = id_problem(value, max_bytes, has_c0_control)
        if problem is not None:
            raise InvalidArgument(where + field, problem)
    return value


def refused_since(value: str, max_bytes: int) -> str | None:
    """What `check_id` refuses in `value` when `check_stored_id` takes it (a character refused
    only since C1, bidirectional and format controls were: it may name a record stored
    before), else None (a usable id, or one every call refuses). For a call that may change
    such a record but must never make one under such an id (UpsertAttributes, an unsubscribe
    event): it takes the id only if the record is there, checked in its write."""
    if value and len(value) <= max_bytes >> 2 and not has_control(value):
        return None
    problem = id_problem(value, max_bytes)
    if problem is None or id_problem(value, max_bytes, has_c0_control) is not None:
        return None
    return problem


STORED_ONLY = " (taken only for a profile stored before such ids were refused: none is)"
"""What a refusal of `refused_since` adds when no profile is stored under the id."""
STORED_CAMPAIGN_ONLY = " (taken only for a campaign stored before such ids were refused: none is)"
"""What a refusal of `refused_since` adds when no campaign is stored under the id."""


STOP_MARK = "tailor.stop"
"""The event attribute of the `unsubscribe` event the server's own SMS STOP handling records
(a carrier's 21610: `messages.reports.opt_out_event`). It is kept in the stored event's bytes,
so the ingestion and an outbox replay (which rebuilds the event from them:
`profiles.records.tracked_event`) both tell that event from a client's, which looks the same
otherwise: its opt-out is a STOP's, which a START reopens; a client's is the user's withdrawal
(`contact.consent.event_source`). No client's event may carry it (`RESERVED_STOP_MARK`)."""


STOP_SENT = "tailor.sent"
"""The attribute of that event (`STOP_MARK`) giving when the text the 21610 reported went (its
`<channel>_sent` event's time, `repr` of the float; absent: not known, or refused at the send):
an opt-in later than it (a START since) is newer than what the carrier tells, and its opt-out
leaves it open (`messages.reports`). Read only with the mark, which no client may send."""


def stop_sent(attributes) -> float | None:
    """The time `STOP_SENT` gives in a marked event's `attributes` (None: none, or not a
    number: read as not known, so its opt-out closes as before)."""
    if STOP_MARK not in attributes or STOP_SENT not in attributes:
        return None
    try:
        sent = float(attributes[STOP_SENT])
    except ValueError:
        return None
    return sent if math.isfinite(sent) else None


RESERVED_STOP_MARK = (f"attributes key {STOP_MARK!r} is reserved for the server's own SMS STOP "
                      "handling (its unsubscribe event, which a START reopens)")
"""Why a client's event may not hold `STOP_MARK` (`profiles.events.check_event`): its
unsubscribe would read as the server's STOP handling's, reopened by a START."""


SERVER_EVENT_PREFIX = "tailor:"
"""The start of the ids of the events the server records itself of a decision's message (its
`<channel>_sent`, bounce, complaint and 21610 `unsubscribe`: `server_event_id`), which no
client's event may have (`RESERVED_EVENT_ID`). Event dedupe is by id alone, and those ids are
built from decision ids clients see: a client's event tracked first under one made the
server's a duplicate, dropped (the 21610's opt-out lost, a dead letter's `went` and a 21610's
send time read from the client's event). Ids the server stored before, without it
(`sent-<decision>`, ...), stay as they are; a report of a message sent before the upgrade
records its event under the new id, once more (docs/messages.md)."""


def server_event_id(kind: str, decision_id: str) -> str:
    """The id of the server's own event `kind` (`sent`, `email_bounce`, `unsubscribe-sms`...)
    of decision `decision_id`: one per decision and kind, so each counts once."""
    return f"{SERVER_EVENT_PREFIX}{kind}-{decision_id}"


RESERVED_EVENT_ID = (f"event_id starts with {SERVER_EVENT_PREFIX!r}, reserved for the events the "
                     "server records itself (a message's sent, bounce, complaint and carrier STOP)")
"""Why a client's event may not have an id starting with `SERVER_EVENT_PREFIX`
(`profiles.events.check_event`)."""


def check_source(field: str, value: str, where: str = "") -> str:
    """InvalidArgument when a client's consent change names a source only the server writes
    (`contact.consent.RESERVED_SOURCES`): its SMS STOP handling's, whose opt-out so named was
    reopened by the next START from the number, as if a STOP had closed it, or a tracked
    unsubscribe event's; and when it holds a character no id or key may (`has_control`): the
    consent history keeps the source as given, and `\\u200bsms reply STOP` (a zero-width space
    first) showed there, and in ExportProfile, as the STOP handling's own."""
    if has_control(value):
        problem = control_problem(value)
        raise InvalidArgument(where + field, f"{shown(value)} {problem}", problem)
    reserved = reserved_source(value)
    if reserved is not None:
        problem = (f"starts with {reserved!r}, reserved for the server's own SMS STOP handling "
                   "and unsubscribe events (a START reopens what a STOP closed): name where "
                   "the change came from")
        raise InvalidArgument(where + field, f"{shown(value)} {problem}", problem)
    return value


def check_text(field: str, value: str, max_chars: int, where: str = "") -> str:
    """At most `max_chars` characters, whatever they are (a key's or a path's length, checked
    beside its own rule); text a caller stores to be shown is `check_free_text`'s."""
    if len(value) > max_chars:
        raise InvalidArgument(where + field, f"{len(value)} characters, at most {max_chars} "
                              f"({shown(value)})", f"{len(value)} characters, at most {max_chars}")
    return value


def text_problem(value: str, multiline: bool = False) -> str | None:
    """None when `value` may be stored and shown as free text, else what it holds that may not
    be, with its position (`control_problem`), never the text itself (it may be personal data):
    a C0 or C1 control, DEL, a bidirectional control ("Trojan Source": it reorders what follows
    where a terminal, a log, a CSV export or an admin page shows it), a line or paragraph
    separator or a lone surrogate (`contract.ids.TEXT_CONTROL`). `multiline` text (a template,
    a description, a map's value) may hold tab, LF, CR and the two separators. Other format
    characters are text (a zero-width joiner in an emoji), and so are the directional marks
    of right-to-left text (`contract.ids.MARKS`). A printable `value` costs one C
    loop (`str.isprintable`)."""
    if value.isprintable():
        return None
    return control_problem(value, _IN_LINES if multiline else _IN_LINE, at=True)


def check_free_text(field: str, value: str, max_chars: int, where: str = "",
                    multiline: bool = False) -> str:
    """Free text stored to be shown: at most `max_chars` characters (`check_text`), none
    `text_problem` refuses; single-line (an item's title, a campaign's name) takes no tab or
    line break, `multiline` (a template, a variant's content) takes tab, LF and CR."""
    check_text(field, value, max_chars, where)
    if (problem := text_problem(value, multiline)) is not None:
        raise InvalidArgument(where + field, problem)
    return value


def check_key(field: str, value: str, max_chars: int, where: str = "") -> str:
    """A map key (a profile attribute's, an event attribute's, a Recommend context's, a
    campaign variant's content or feature): 1..max_chars characters, none a key may not hold
    (`key_problem`)."""
    if not value:
        raise InvalidArgument(where + field, "is empty")
    check_text(field, value, max_chars, where)
    if has_control(value) or not value.isascii():  # an ASCII key: two C loops, no call
        problem = key_problem(value)
        if problem is not None:
            raise InvalidArgument(where + field, f"{shown(value)} {problem}", problem)
    return value


def key_problem(key: str) -> str | None:
    """None when non-empty `key` may be a map key, else why not (without the key: it is logged):
    a control or format character (`has_control`), or, for a key that is not ASCII, a spelling
    that shows as another key (`lookalikes.lookalike_problem`: a character shown as nothing,
    not in NFKC form, or letters of scripts TS #39 does not mix: `\u0435mail`, a Cyrillic `е`,
    showed as `email` and escaped the `pii_keys` masking, its address stored, shown and
    exported unmasked). An ASCII key without
    a control character costs two C loops (`str.isprintable`, `str.isascii`)."""
    if has_control(key):
        return control_problem(key)
    return None if key.isascii() else lookalike_problem(key)


def check_address(field: str, kind: str, value: str, max_chars: int, where: str = "") -> str:
    """An email address or phone number (`kind`: `contact.addresses.EMAIL` or `PHONE`) as the
    suppression list, the index of SMS replies and the SMS send path read it: the one parser,
    `contact.addresses.normalize` (a phone number in E.164 once its punctuation is dropped, an
    email address name@domain whose domain is labels joined by single dots, the send path's
    rule too: `contact.addresses.check_domain_labels`); returns that normalized form.
    `NotAnAddress` (INVALID_ARGUMENT) naming the field and the form expected otherwise; the
    value is never echoed (it is personal data). The email send path's own rule is narrower
    (SMTP without SMTPUTF8: ASCII, no specials: `messages.delivery.address_of`); an address
    only it refuses is one a client that sends itself (with SMTPUTF8) may use, and fails this
    server's send alone."""
    # contact.addresses imports this module (`has_c0_control`)
    from .contact.addresses import EMAIL, check_domain_labels, normalize
    out = normalize(kind, value, max_chars, where + field)
    return check_domain_labels(out, where + field) if kind == EMAIL else out


def check_known(field: str, value: str, known: Collection[str], where: str = "") -> str:
    if value not in known:
        raise InvalidArgument(where + field, f"{shown(value)} is unknown (known: {', '.join(known)})",
                              f"is unknown (known: {', '.join(known)})")
    return value


def check_all_known(field: str, values: Collection[str], known: Collection[str],
                    problem: str = "unknown", where: str = "") -> None:
    """Every one of `values` is in `known`; else InvalidArgument naming the first few others as
    `shown` does (a short prefix, escaped: the raw strings put a caller's NUL and newlines
    into the status and, with a newline, a line of their own into the server log), each only
    to the caller: the log line counts them."""
    bad = sorted(set(values).difference(known))
    if bad:
        listed = ", ".join(shown(v) for v in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        allowed = f"(allowed: {', '.join(sorted(known))})"
        raise InvalidArgument(where + field, f"{problem}: {listed} {allowed}",
                              f"{len(bad)} {problem} {allowed}")


def check_finite(field: str, value: float, where: str = "") -> float:
    if not math.isfinite(value):
        raise InvalidArgument(where + field, f"must be a finite number, got {value}")
    return float(value)


def check_count(field: str, n: int, most: int, where: str = "") -> None:
    """A list or map of `n` entries holds at most `most`."""
    if n > most:
        raise InvalidArgument(where + field, f"{n} entries, at most {most}")


def check_not_negative(field: str, n: int, where: str = "") -> int:
    """A count the caller asks for (0 often meaning "all") is not negative."""
    if n < 0:
        raise InvalidArgument(where + field, f"{n} is negative")
    return n


def check_context(context, max_bytes: int, where: str = "") -> None:
    """A Recommend context: (key, value) pairs of at most `max_bytes` UTF-8 bytes together, each
    key one a map key may be (`check_key`: not empty, no control or format character, no
    look-alike spelling). Keys were unchecked, and the impression log keeps them: `email` with
    a zero-width space (U+200B) in it, or with a Cyrillic `е`, shows as `email` but matched no
    `pii_keys` pattern, so its address was stored and exported unmasked; empty keys, NUL and
    bidirectional controls went into the log and its exports. Each value is free text
    (`text_problem`, with lines: an ESC or a bidirectional control in it reached the log and
    its exports too)."""
    chars = 0
    for key, value in context:
        if not key or has_control(key) or not key.isascii():
            check_key("context key", key, max_bytes, where)
        if not value.isprintable() and (problem := text_problem(value, multiline=True)):
            raise InvalidArgument(f"{where}context[{shown(key)}]", problem)
        chars += len(key) + len(value)
    if chars > max_bytes >> 2:  # at most 4 UTF-8 bytes a character: only then measured
        size = sum(len(k.encode()) + len(v.encode()) for k, v in context)
        if size > max_bytes:
            raise InvalidArgument(where + "context",
                                  f"{size} bytes of keys and values, at most {max_bytes}")


def check_range(field: str, value: float, low: float, high: float, where: str = ""):
    """low <= value <= high."""
    if not low <= value <= high:
        raise InvalidArgument(where + field, f"{value:g} is outside {low:g}..{high:g}")
    return value


def check_version(field: str, value: str, max_chars: int, where: str = "") -> str:
    """A bundle version (also its directory name): 1..max_chars of letters, digits, '.', '_'
    and '-', not starting with '.', so it never names a path outside the bundles directory."""
    if not value:
        raise InvalidArgument(where + field, "is empty")
    check_text(field, value, max_chars, where)
    if not _VERSION.fullmatch(value):
        raise InvalidArgument(where + field, f"{shown(value)} is not a bundle version (letters, "
                              "digits, '.', '_', '-'; not starting with '.')")
    return value


def check_time(field: str, value: float, latest: float, where: str = "") -> float:
    """A time in Unix seconds: finite, 0 <= value <= latest (`Limits.latest_timestamp`)."""
    if not 0.0 <= value <= latest:  # False for NaN too
        raise InvalidArgument(where + field, f"{value:g} is not a time in 0..{latest:.0f} "
                              "(Unix seconds)")
    return float(value)


def check_window(start: float, end: float, latest: float, where: str = "") -> None:
    """An export window in Unix seconds: both bounds times (`check_time`; 0 = unbounded) and an
    end, when given, not before the start (an empty window is a mistake, not a query)."""
    check_time("start", start, latest, where)
    check_time("end", end, latest, where)
    if end and end < start:
        raise InvalidArgument(where + "end", f"{end:.0f} is before start {start:.0f} (0 = unbounded)")


_SCRIPT_LINK = re.compile(SCRIPT_LINK)


def check_link(field: str, value: str, max_chars: int, where: str = "") -> str:
    """A link a client renders (an item's page or image): empty, a path ("/p/1", "p/1",
    "//cdn.example/p.jpg"), or a URL (http(s), an app's deep link, tel:, mailto:), at most
    `max_chars` characters, with no whitespace or control character; a scheme that can run
    script (`contract.items.SCRIPT_SCHEMES`: ``javascript:``, ``vbscript:``, ``data:``) is refused, since web
    pages and emails put the link in an href or src as is."""
    check_text(field, value, max_chars, where)
    if has_c0_control(value) or any(c.isspace() for c in value):
        raise InvalidArgument(where + field, f"{shown(value)} contains whitespace or a control "
                              "character", "contains whitespace or a control character")
    problem = link_problem(value)
    if problem is not None:
        raise InvalidArgument(where + field, problem, problem)
    return value


def link_problem(value: str) -> str | None:
    """None when `value` may go in an href or src as is (the rule `check_link`, a bundle's item
    links and training's catalog reader share): no control character, and no scheme that can
    run script (`contract.items.SCRIPT_LINK`, after leading spaces); else why not."""
    if has_c0_control(value):
        return "contains a control character (0x00-0x1F or 0x7F)"
    return script_link_problem(value)


def script_link_problem(value: str) -> str | None:
    """Why `value` starts with a scheme that can run script (`contract.items.SCRIPT_LINK`, after
    leading spaces), else None: a template's literal start is checked with it before rendering."""
    scheme = _SCRIPT_LINK.match(value)
    return script_scheme_problem(scheme.group(1)) if scheme else None
