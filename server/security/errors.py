"""Errors of the security package."""
from __future__ import annotations

import contextlib
import errno
from pathlib import Path

from ..errors import FailedPrecondition

__all__ = ["AuthConfigInvalid", "AuthConfigUnreadable", "PrincipalExists", "ServeRefused",
           "TlsFileInvalid"]


class AuthConfigInvalid(FailedPrecondition):
    """The auth config file cannot be used; the server refuses to start (or keeps the old one
    on a reload)."""

    def __init__(self, path, problem: str):
        super().__init__(f"auth config {path}: {problem}")


class AuthConfigUnreadable(AuthConfigInvalid):
    """The auth config cannot be read at all (missing, a directory, another account's): one
    line saying which, not the OSError's `[Errno 2] ...`. At start the server says which setting
    named the file (`guard.AuthGuard`)."""

    def __init__(self, path, err: OSError):
        self.path = path
        self.missing = err.errno == errno.ENOENT
        self.reason = {errno.ENOENT: "no such file", errno.EISDIR: "a directory, not a file",
                       errno.EACCES: "this account may not read it"}.get(
            err.errno, (err.strerror or str(err)).lower())
        if self.missing and not Path(path).is_absolute():
            with contextlib.suppress(OSError):  # a working directory removed since
                self.reason += f" in {Path.cwd()}"
        super().__init__(path, self.reason)


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
