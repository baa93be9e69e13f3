"""Contact-policy errors: each names the field; `server.errors` maps them to gRPC statuses."""
from __future__ import annotations

from ..errors import InvalidArgument

__all__ = ["UnknownTimeZone", "BadClockTime"]


class UnknownTimeZone(InvalidArgument):
    def __init__(self, field: str, name: str):
        super().__init__(field, f"{name!r} is not a known IANA time zone (e.g. Europe/Paris)")


class BadClockTime(InvalidArgument):
    def __init__(self, field: str, text: str):
        super().__init__(field, f"{text!r} is not a local time HH:MM (00:00 to 23:59)")
