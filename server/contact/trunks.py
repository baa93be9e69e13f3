"""Trunk prefixes written after a country code, by each country's numbering plan.

"+44 07700 900123" is the number as dialled at home with the country code put in front: the
carrier reports +447700900123, and a STOP, bounce or suppression for it never matched the
profile's +4407700900123. Whether the digits after a country code are a trunk prefix depends
on the country, so no one rule folds them: most plans' prefix is 0 (United Kingdom, Germany,
France, the Netherlands, Australia), Hungary's is 06, Russia's 8, the NANP's 1, and Italy and
San Marino have none (+39 06 is Rome: the 0 is the number's own).

The plans are libphonenumber's (`phonenumbers`, installed as the metadata-only
`phonenumberslite`): its parser drops the trunk prefix only where the country has one and
what is left is still a possible number there. It is loaded at each worker's start, in a
thread beside the writer processes' start, before the worker serves (`load`, from
`server.app`): 60-150 ms and 1.5-2.6 MB RSS on 2 busy cores. It was imported at the first
number read, and the call that read it, on the event loop (a ChooseVariant on sms checking the
suppression list, an SMS reply), held every other call of the worker that long once. A
country's own plan still loads at its first number (0.4-9 ms, once). Only a number whose
digits after the country code start with that country's prefix is parsed at all (~40 us; ~1
us more for the others). Without the library a worker refuses to start, naming the step and
the package to install (`PlansMissing`).
"""
from __future__ import annotations

import functools

from .errors import PlansMissing

__all__ = ["without_trunk_prefix", "with_trunk_prefix", "zero_is_the_numbers", "without_own_zero",
           "with_shared_zero", "load"]


@functools.cache
def _library():
    """The `phonenumbers` module; `PlansMissing` (naming the package to install) when it
    cannot be imported."""
    try:
        import phonenumbers
    except ImportError as err:
        raise PlansMissing(f"{type(err).__name__}: {err}") from None
    return phonenumbers


@functools.cache
def _trunk_prefix(code: int) -> str | None:
    """The trunk prefix of the plan of country code `code` (its main region's); None when it
    has none."""
    pn = _library()
    meta = pn.PhoneMetadata.metadata_for_region_or_calling_code(
        code, pn.region_code_for_country_code(code))
    return (meta.national_prefix or None) if meta is not None else None


def _plan(number: str) -> tuple[str, str] | None:
    """(country code, trunk prefix) of the E.164 `number`; None when its country code is none
    the library knows or its country has no trunk prefix."""
    code = _code(number)
    prefix = _trunk_prefix(int(code)) if code is not None else None
    return (code, prefix) if prefix else None


def _fold_once(number: str) -> str:
    """`number` without the trunk prefix after its country code when the library drops it
    there; otherwise (no prefix, or the library reads it otherwise: a carrier code after it,
    a mobile prefix it rewrites) `number` as it is."""
    plan = _plan(number)
    if plan is None:
        return number
    code, prefix = plan
    national = number[1 + len(code):]
    if not national.startswith(prefix):
        return number
    folded = f"+{code}{national[len(prefix):]}"
    pn = _library()
    try:
        parsed = pn.parse(number, None)
    except pn.NumberParseException:
        return number
    return folded if pn.format_number(parsed, pn.PhoneNumberFormat.E164) == folded else number


def without_trunk_prefix(number: str) -> str:
    """The E.164 `number` ("+" and 2 to 15 digits) as its carrier reports it: a trunk prefix
    written after the country code dropped (+4407700900123 is +447700900123), where the
    country's plan has one and what is left is a possible number there; anything else as it
    is. Only a result that has no prefix left to drop is taken ("+44 00 7700..." stays as it
    was), so that a normalized number normalizes to itself."""
    folded = _fold_once(number)
    return folded if folded == number or _fold_once(folded) == folded else number


def with_trunk_prefix(number: str) -> str | None:
    """The E.164 `number` with its country's trunk prefix put back after the country code
    (+447700900123: +4407700900123), the form a Tailor before this rule kept; None when the
    country has no trunk prefix."""
    plan = _plan(number)
    if plan is None:
        return None
    code, prefix = plan
    return f"+{code}{prefix}{number[1 + len(code):]}"


def zero_is_the_numbers(code: str, national: str) -> bool:
    """Whether a 0 written "(0)" after country code `code`, before the digits `national`, is
    the number's own, not a trunk prefix dialled at home: the plan of `code` has no trunk
    prefix, and the library takes +`code`0`national` for a valid number there but not
    +`code``national` (Italy's "+39 (0)6 ..." is Rome's 06, San Marino's 0549, Cote
    d'Ivoire's 07). Anywhere else the "(0)" is dropped, as before ("+44 (0)20 ...", "+49
    (0)30 ...", a stray one in Spain's "+34 (0)91 ...", whose numbers never start with 0), and
    so it is where both are numbers: "+39 (0)345 678 9012" stays the mobile +393456789012 it
    was, not the fixed line +3903456789012 (Bergamo's 0345), and no entry under one is taken
    for the other (`without_own_zero`)."""
    if not (code.isdigit() and national.isdigit()) or \
            int(code) not in _library().COUNTRY_CODE_TO_REGION_CODE or _trunk_prefix(int(code)):
        return False
    return _valid(f"+{code}0{national}") and not _valid(f"+{code}{national}")


def _valid(number: str) -> bool:
    """Whether the library takes `number` (+ and digits) for a valid number."""
    pn = _library()
    try:
        return pn.is_valid_number(pn.parse(number, None))
    except pn.NumberParseException:
        return False


def without_own_zero(number: str) -> str | None:
    """The E.164 `number` without the 0 after its country code where that 0 is the number's
    own (`zero_is_the_numbers`): the form the "(0)" rule before the plans gave "+39 (0)6 1234
    5678" (+39612345678), which a list or index of that Tailor may hold it under, and no
    number of anyone else's; None for any other number."""
    plan = _code(number)
    if plan is None or number[1 + len(plan):2 + len(plan)] != "0":
        return None
    national = number[2 + len(plan):]
    return f"+{plan}{national}" if national and zero_is_the_numbers(plan, national) else None


def with_shared_zero(number: str) -> str | None:
    """The E.164 `number` with a 0 after its country code where its plan has no trunk prefix
    and both are valid numbers (+393456789012, a mobile: +3903456789012, Bergamo's 0345): the
    form the Tailor of spelling 5 gave "+39 (0)345 678 9012" (it kept the 0 wherever the
    number with it was valid), which a list of that Tailor may hold it under; that is the
    fixed line's own form too. None for any other number."""
    code = _code(number)
    if code is None or _trunk_prefix(int(code)):
        return None
    zero = f"+{code}0{number[1 + len(code):]}"
    return zero if _valid(zero) and _valid(number) else None


def _code(number: str) -> str | None:
    """The country code of the E.164 `number` (None: none the library knows). ITU country
    codes are prefix-free: the first of 1 to 3 digits that is one is the number's."""
    codes = _library().COUNTRY_CODE_TO_REGION_CODE
    return next((number[1:1 + n] for n in (1, 2, 3) if int(number[1:1 + n]) in codes), None)


def load() -> None:
    """Import the library and one plan now (the bulk of a first number's cost), off the event
    loop: a worker's start-up calls it in a thread before it serves (`server.app`)."""
    without_trunk_prefix("+4407700900123")
