"""Errors of the security package."""
from __future__ import annotations

from ..errors import FailedPrecondition

__all__ = ["AuthConfigInvalid", "PrincipalExists", "ServeRefused", "TlsFileInvalid"]


class AuthConfigInvalid(FailedPrecondition):
    """The auth config file cannot be used; the server refuses to start (or keeps the old one
    on a reload)."""

    def __init__(self, path, problem: str):
        super().__init__(f"auth config {path}: {problem}")


class PrincipalExists(AuthConfigInvalid):
    """`server token --name N` for a principal the auth config already has: minting would
    replace its token (whoever holds the old one is cut off) and its roles."""

    def __init__(self, path, principal, has_token: bool):
        roles = ", ".join(sorted(principal.roles)) or "no roles"
        what = ("a new token (its old one stops working)" if has_token else
                "a token (its certificate keeps working, with those roles)")
        super().__init__(path, f"principal {principal.name!r} exists (roles: {roles}): "
                               f"--replace gives it {what} and the roles given; nothing was "
                               "changed")


class ServeRefused(FailedPrecondition):
    """The server will not start as configured: TLS files that do not load, flags that go
    together given alone, or an exposed bind without TLS and authentication. `python -m server`
    prints it as one `error:` line and exits 2."""


class TlsFileInvalid(ServeRefused):
    """One TLS file cannot be used, named by its flag and path (at start: the server refuses;
    on SIGHUP: the current certificate stays and this is logged)."""

    def __init__(self, flag: str, path, problem: str):
        super().__init__(f"{flag} {path}: {problem}")
