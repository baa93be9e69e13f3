"""Addresses as the suppression list knows them: normalized, then hashed with a server key.

Normalization decides which strings are the same address:

- email: trimmed, out of one pair of angle brackets and a `mailto:` prefix (as reports and
  links quote it), lower-cased, its domain's xn-- labels decoded (an internationalized domain
  is one address in the Unicode form a profile holds and the ASCII form mail servers and bounce
  reports give), and in Unicode NFC (an accented letter is one address whether it came as one
  code point or as a letter and a combining accent), nothing else. The local
  part is case-sensitive in theory only; no mail provider treats it so. Dots and `+tags` are
  kept: Gmail ignores them, most other providers do not, so folding them would suppress other
  people's mailboxes; and an address is suppressed as it was given (a bounce names the exact
  address that bounced).
- phone: E.164, `+` then 2 to 15 digits, the first not 0. Spaces, dashes, dots, slashes and
  parentheses are dropped first ("+1 (555) 010-0000" is "+15550100000"; any Unicode space or
  dash too: a number pasted from a page with no-break spaces is the number), and a leading
  "00" (the ITU international prefix; no national number starts with it) is read as "+"
  ("0044 7700 900123" is "+447700900123"), and a "(0)" right after the country code (the
  trunk 0 dialled only at home, as in "+44 (0)7700 900123") is dropped: "+44 (0)7700
  900123" is "+447700900123", the number the carrier reports, unless the country's plan
  keeps the 0 (no trunk prefix, and the number with it is valid, without it not: "+39 (0)6
  1234 5678" is Rome's +390612345678, "+39 (0)345 678 9012" the mobile +393456789012;
  `trunks.zero_is_the_numbers`); so is a trunk prefix written
  bare after the country code where the country's numbering plan has one ("+44 07700 900123",
  "+49 030 1234567", "+33 06 12 34 56 78", "+61 0412 345 678", Hungary's "06", Russia's "8"),
  by libphonenumber's plans (`contact.trunks`): Italy's "+39 06 1234 5678" keeps its 0 (it
  is the number's), and a number the library does not read so stays as it was. Anything else
  (a national number without its country code) is refused: guessing the country would
  suppress the wrong number.
- push_token: trimmed, nothing else. A token is opaque and case-sensitive (an APNs device
  token is hex, an FCM registration token base64url-like): no case folding, no Unicode
  normalization. One with whitespace or a control character inside is refused (no provider
  issues one; it would be another token to the list than the one pushed to).

Before spelling 5, the "(0)" was dropped in every country, Italy's own 0 too ("+39 (0)6 1234
5678" was +39612345678, a number nobody has, and the SMS went there); it follows the plans
now, and a list stamped 4 or before, and the index of SMS replies, look such a number up in
that form too (`legacy_forms`, `merged`). Spelling 5 kept the 0 also where the number
without it is valid too ("+39 (0)345 678 9012", a mobile, was the fixed line +3903456789012);
a list stamped 5 or before (a list keeps its stamp: that Tailor added to lists stamped
before too) looks such a mobile up in that form too.

Entries listed before the "(0)", bracket, NFC and xn-- rules were hashed in the form they were
given, which cannot be recovered from a hash; so were numbers listed with a bare trunk prefix
before that rule (spelling 3 and before: "+44 07700 900123" was +4407700900123). `legacy_forms`
names the forms an address may have been listed under then; a list that may hold such
entries looks them up too (`contact.suppression`), as the index of SMS replies does for a
number indexed with its trunk prefix (`server.messages.phones`). Nothing is rewritten: a list
stamped 3 keeps its stamp and pays one more key per number of a country with a trunk prefix
(one stamped 4, one per number whose 0 after the country code is its own; one stamped 5 or
before, one per number of a plan without a trunk prefix that is valid with a 0 after the
country code too); a new list is stamped 6 and pays nothing.

The same normalizer matches SMS replies to the numbers texted (`server.messages.phones`).

Only `AddressHasher.digests` of a normalized address is ever stored: HMAC-SHA256 under the
`suppression` keyring (`server.security.secrets`), so the store holds no plaintext address,
and a dictionary of likely addresses cannot be hashed without the key.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
import unicodedata

from ..security.secrets import Keyring
from ..validation import control_problem, has_c0_control
from .errors import NotAnAddress
from .trunks import (
    with_shared_zero,
    with_trunk_prefix,
    without_own_zero,
    without_trunk_prefix,
    zero_is_the_numbers,
)

__all__ = ["EMAIL", "PHONE", "PUSH_TOKEN", "KINDS", "CHANNEL_KIND", "SPELLING", "normalize", "legacy_forms",
           "labelled_domain", "check_domain_labels",
           "AddressHasher"]

EMAIL, PHONE, PUSH_TOKEN = "email", "phone", "push_token"
KINDS = (EMAIL, PHONE, PUSH_TOKEN)
"""Address kinds; each is also the profile attribute that holds a user's address, and the
`SuppressionAddress` field that names one."""
CHANNEL_KIND = {"email": EMAIL, "sms": PHONE, "push": PUSH_TOKEN}
"""Message channel -> the kind of address it is sent to (placements, web and app, have none)."""

_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_PHONE = re.compile(r"\+[1-9][0-9]{1,14}")
_PHONE_PUNCTUATION = str.maketrans("", "", " -.()/\t")
_QUOTED = re.compile(r"^(?:mailto:)?<?([^<>]*?)>?$")
"""An address out of one pair of angle brackets and a mailto: prefix ("<a@b.org>")."""
_NOT_IN_A_LABEL = re.compile(r"[\s.@\x00-\x20\x7f]")  # the C0 controls and space
"""A character a decoded domain label may not hold (it would change the address's parts)."""
SPELLING = 6
"""The rules' version (`keys.SUPPRESSION_SPELLING`): 1 before the "(0)", bracket and NFC rules,
2 before the xn-- rule, 3 before the bare trunk prefix rule, 4 before the "(0)" followed the
plans (it dropped Italy's own 0), 5 before a "(0)" was dropped where both forms are numbers
(it kept it: "+39 (0)345 678 9012", a mobile, was +3903456789012), 6 now."""
_TRUNK_ZERO = re.compile(r"^((?:\+|00)\s*[1-9][0-9]{0,2})\s*\(0\)")
"""A country code (1 to 3 digits after "+" or "00") followed by "(0)", the trunk prefix."""


def normalize(kind: str, value: str, max_chars: int, field: str = "") -> str:
    """`value` as the list stores it; `NotAnAddress` naming `field` (default: `kind`) when it
    is not an address of `kind`."""
    field = field or kind
    if len(value) > max_chars:
        raise NotAnAddress(field, f"{len(value)} characters, at most {max_chars}")
    if kind == EMAIL:
        out = value.strip().lower()
        if out.startswith(("<", "mailto:")):
            out = _QUOTED.sub(r"\1", out).strip()
        if "xn--" in out:
            out = _unicode_domain(out)
        out = out if out.isascii() else unicodedata.normalize("NFC", out)
        return _email(out, field)
    if kind == PUSH_TOKEN:
        return _push_token(value.strip(), field)
    return without_trunk_prefix(_e164(_home_zero_dropped(value.strip()), field))


def _home_zero_dropped(text: str) -> str:
    """`text` without a "(0)" right after its country code, unless that 0 is the number's own
    by the country's plan (`trunks.zero_is_the_numbers`: "+39 (0)6 1234 5678" is Rome's
    +390612345678; before, +39612345678, a number nobody has)."""
    match = _TRUNK_ZERO.match(text)
    if match is None:
        return text
    head, rest = match.group(1), text[match.end():]
    code = head.removeprefix("+").removeprefix("00").strip()
    national = "".join(c for c in rest if c.isdigit() and c.isascii())
    return head + ("0" if zero_is_the_numbers(code, national) else "") + rest


def legacy_forms(kind: str, address: str, spelling: int = 1, merged: bool = False) -> tuple[str, ...]:
    """The forms the normalized `address` may have been hashed under in a list stamped
    `spelling` (`contact.suppression`; the current rules' lists: none).

    Spelling 1 (before any stamp), when given so: an email address (then only trimmed and
    lower-cased) in angle brackets, after `mailto:`, when not ASCII decomposed (NFD), or with
    its domain in the ASCII form of `_unicode_domain` (xn--); a phone number with its trunk 0
    kept after the country code ("+44 (0)7700 900123" was +4407700900123). A country code
    has 1 to 3 digits, so the 0 is tried after each; ITU codes are prefix-free, so only one
    split is the number's own, and the others could match only an entry listed with a 0 in
    that place, which no written number other than this one's would give.
    Spelling 2 (before the xn-- rule): an email address with its domain in the xn-- form.
    Spellings 1 to 3 (before the bare trunk prefix rule): a phone number with its country's
    trunk prefix after the country code (`trunks.with_trunk_prefix`), when that form is one
    the rules fold to it today (so no other number has it).
    `merged`, spellings 1 to 4 (before the "(0)" rule followed the plans): a phone number
    whose 0 after the country code is its own without it (`trunks.without_own_zero`: "+39 (0)6
    1234 5678" was +39612345678), a form that is no valid number (one that is, a mobile's,
    is no other number's old form). That rule gave it to "+39 6 1234 5678" too, so an entry
    under it may be that string's: it is taken for this one's all the same (never contacting
    is the safe side), and only when asked for.
    `merged`, spellings 1 to 5 (a list keeps its stamp, and the Tailor of spelling 5, which
    kept a "(0)" wherever the number with the 0 was valid, added to lists stamped before): a phone
    number with a 0 after the country code where both are numbers (`trunks.with_shared_zero`:
    "+39 (0)345 678 9012", the mobile +393456789012, was +3903456789012), the fixed line's
    own form too: its entry is taken for the mobile's (the safe side), only when asked for."""
    if spelling >= SPELLING or kind == PUSH_TOKEN:  # push tokens: listed under the rule alone
        return ()
    if kind == PHONE:
        own = without_own_zero(address) if merged and spelling <= 4 else None
        shared = with_shared_zero(address) if merged else None  # spellings 1-5: see above
        return _legacy_numbers(address, spelling) + tuple(f for f in (own, shared) if f)
    ace = _ace_domain(address) if not address.isascii() else None
    if spelling >= 2:
        return (ace,) if ace and spelling == 2 else ()
    bases = (address,) if address.isascii() else (address, unicodedata.normalize("NFD", address))
    bases += (ace,) if ace else ()
    forms = [f for base in bases for f in (base, f"<{base}>", f"mailto:{base}", f"mailto:<{base}>")]
    return tuple(f for f in forms if f != address)


def _legacy_numbers(address: str, spelling: int) -> tuple[str, ...]:
    """`legacy_forms` of the phone number `address`."""
    trunk = with_trunk_prefix(address) if spelling <= 3 else None
    forms = [trunk] if trunk and _PHONE.fullmatch(trunk) and without_trunk_prefix(trunk) == address \
        else []
    if spelling == 1:
        forms += [f"{address[:n]}0{address[n:]}" for n in (2, 3, 4)]
    return tuple(dict.fromkeys(f for f in forms if f != address and _PHONE.fullmatch(f)))


def _unicode_domain(address: str) -> str:
    """`address` with each xn-- label of its domain decoded (RFC 3492 punycode, lower-cased):
    "ann@xn--bcher-kva.de" is "ann@b\u00fccher.de", the same mailbox. A label that decodes to
    nothing a domain label holds (ASCII alone, a dot, an @, a space or control character) is
    kept as written."""
    local, at, domain = address.rpartition("@")
    if not at or "xn--" not in domain:
        return address
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode").lower()
            except (UnicodeError, ValueError):
                decoded = ""
            if decoded and not decoded.isascii() and not _NOT_IN_A_LABEL.search(decoded) \
                    and not has_c0_control(decoded):
                label = decoded
        labels.append(label)
    return f"{local}@{'.'.join(labels)}"


def _ace_domain(address: str) -> str | None:
    """The xn-- form of `address`'s domain (each non-ASCII label punycoded), None when it has
    none (an ASCII domain, or a label punycode cannot take)."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return None
    try:
        labels = [label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
                  for label in domain.split(".")]
    except UnicodeError:
        return None
    return f"{local}@{'.'.join(labels)}"


def _email(out: str, field: str) -> str:
    if not _EMAIL.fullmatch(out) or has_c0_control(out):
        raise NotAnAddress(field, "is not an email address (name@domain)")
    return out


_DOMAIN_LABELS = re.compile(r"[^.]+(?:\.[^.]+)*")
"""A domain of labels joined by single dots (RFC 5321 Domain: sub-domain *("." sub-domain))."""


def labelled_domain(address: str) -> bool:
    """Whether `address`'s domain (after its last @) is labels joined by single dots."""
    return _DOMAIN_LABELS.fullmatch(address.rpartition("@")[2]) is not None


def check_domain_labels(address: str, field: str = EMAIL) -> str:
    """`address` when its domain (after the last @) is labels joined by single dots;
    `NotAnAddress` naming `field` otherwise. No SMTP envelope carries a leading, trailing or
    doubled dot (`ann@example.org.`), and a lenient relay that strips one delivers to a mailbox
    (ann@example.org) the suppression list holds apart, as `normalize` does not fold it. The
    one rule for what an address may be to be sent to: UpsertAttributes takes an `email`
    (`validation.check_address`) and the email adapter sends (`messages.delivery.address_of`)
    by it."""
    if not labelled_domain(address):
        raise NotAnAddress(field, "is not an email address: its domain has an empty label "
                                  "(a leading, trailing or doubled dot)")
    return address


def _push_token(token: str, field: str) -> str:
    """`token` (trimmed) when it is one word of printable characters; `NotAnAddress` naming
    the character's class and position otherwise (never the token)."""
    if not token:
        raise NotAnAddress(field, "is not a push token: it is empty")
    problem = control_problem(token, at=True)
    space = None if problem else next((i for i, c in enumerate(token) if c.isspace()), None)
    if space is not None:
        problem = f"contains whitespace, U+{ord(token[space]):04X}, at character {space + 1}"
    if problem is not None:
        raise NotAnAddress(field, f"is not a push token: it {problem} (a token is one word, "
                                  "as the push provider issued it)")
    return token


def _e164(text: str, field: str) -> str:
    out = text.translate(_PHONE_PUNCTUATION)
    if not out.isascii():  # no-break and thin spaces, non-breaking hyphens, en dashes
        out = "".join(c for c in out if not (c.isspace() or unicodedata.category(c) == "Pd"))
    if out.startswith("00"):
        out = "+" + out[2:]
    if not _PHONE.fullmatch(out):
        raise NotAnAddress(field, "is not an E.164 phone number (+ country code and number, "
                              "at most 15 digits)")
    return out


class AddressHasher:
    """Keyed hashes of normalized addresses under every key of a keyring; the latest
    `CACHED` addresses' hashes are kept (the decision path meets the same users again)."""

    CACHED = 1 << 14
    """~5 MB of hashes and addresses at most for email addresses and phone numbers; push
    tokens at their bound (`limits.push_token_chars`, 1024) take up to ~35 MB with the
    suppression list's cache by attribute value."""

    def __init__(self, ring: Keyring):
        self.ring = ring
        self.digests = functools.lru_cache(maxsize=self.CACHED)(self._digests)

    def _digests(self, kind: str, address: str) -> tuple[tuple[str, str], ...]:
        """((kid, hex HMAC-SHA256 of "kind:address")) under each key, signing key first: an
        address listed before a key rotation is still found while its key is kept."""
        message = f"{kind}:{address}".encode()
        return tuple((kid, hmac.digest(key, message, hashlib.sha256).hex())
                     for kid, key in self.ring.keys)
