"""Contact-policy errors: each names the field; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import FailedPrecondition, InvalidArgument, ResourceExhausted

__all__ = ["UnknownTimeZone", "BadClockTime", "NotAnAddress", "AddressShared", "PlansMissing",
           "ContactHistoryDamaged"]


class UnknownTimeZone(InvalidArgument):
    def __init__(self, field: str, name: str):
        super().__init__(field, f"{name!r} is not a known IANA time zone (e.g. Europe/Paris)")


class BadClockTime(InvalidArgument):
    def __init__(self, field: str, text: str):
        super().__init__(field, f"{text!r} is not a local time HH:MM (00:00 to 23:59)")


class NotAnAddress(InvalidArgument):
    """An email address or phone number the suppression list cannot take; the message never
    echoes the value (it is personal data)."""

    def __init__(self, field: str, problem: str):
        super().__init__(field, problem)


class AddressShared(ResourceExhausted):
    """An address held by as many profiles as `limits.address_profiles` allows, set on one
    more (UpsertAttributes): a STOP or unsubscribe from it changes every one of them. The
    message never echoes the address (it is personal data)."""

    def __init__(self, attribute: str, most: int):
        super().__init__(f"attributes[{attribute!r}]: the address is held by {most} profiles "
                         f"already, at most {most} (limits.address_profiles); a STOP or "
                         "unsubscribe from it opts out every one of them")


class PlansMissing(FailedPrecondition):
    """The phone numbering plans (`contact.trunks`) cannot be loaded: their library,
    `phonenumbers` (installed by the `phonenumberslite` package, a dependency of tailor's), is
    not importable. Raised at a worker's start (`trunks.load`), where it was a traceback
    ending in ModuleNotFoundError that named neither the step nor the package to install."""

    def __init__(self, problem: str):
        super().__init__(f"could not load the phone numbering plans (server/contact/trunks.py): "
                         f"{problem}; install the phonenumberslite package, a dependency of "
                         "tailor (pip install 'phonenumberslite>=9.0', or install tailor again: "
                         "pip install -e ., make build)")


class ContactHistoryDamaged(FailedPrecondition):
    """A user's contact history (the frequency caps' record, `caps.ContactLog`) does not open
    or decode, read alone (an access export); the message names no user (the caller's
    request does)."""

    def __init__(self):
        super().__init__("the user's contact history (the frequency caps' record) is damaged: "
                         "it does not open or decode; restore the store from a backup, or "
                         "erase the user (docs/operations.md, \"Damaged contact histories\")")
