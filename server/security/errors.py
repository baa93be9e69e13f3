"""Errors of the security package."""
from __future__ import annotations

from ..errors import FailedPrecondition

__all__ = ["AuthConfigInvalid", "ServeRefused", "TlsFileInvalid"]


class AuthConfigInvalid(FailedPrecondition):
    """The auth config file cannot be used; the server refuses to start (or keeps the old one
    on a reload)."""

    def __init__(self, path, problem: str):
        super().__init__(f"auth config {path}: {problem}")


class ServeRefused(FailedPrecondition):
    """The server will not start as configured: TLS files that do not load, flags that go
    together given alone, or an exposed bind without TLS and authentication. `python -m server`
    prints it as one `error:` line and exits 2."""


class TlsFileInvalid(ServeRefused):
    """One TLS file cannot be used, named by its flag and path (at start: the server refuses;
    on SIGHUP: the current certificate stays and this is logged)."""

    def __init__(self, flag: str, path, problem: str):
        super().__init__(f"{flag} {path}: {problem}")
