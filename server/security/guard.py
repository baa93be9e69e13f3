"""The security room as the server sees it: the interceptor built from `Settings`, and
`reload_auth()` for SIGHUP."""
from __future__ import annotations

from ..config import Settings
from .audit_writer import AuditWriter
from .authn import Authenticator
from .errors import AuthConfigInvalid, AuthConfigUnreadable
from .hosts import is_loopback
from .interceptor import AuthInterceptor
from .jwt_verify import FailureBudget
from .logging import logger
from .principals import load_auth_config
from .roles import RoleTable

__all__ = ["AuthGuard"]


def _interceptor_bounds(settings: Settings) -> dict:
    """How failed authentication is collapsed in the audit log (`failures.FailedAuthDigest`;
    denied calls are collapsed over the same interval and number of pairs, `AuditWriter`),
    how long a request the methods open to anyone take (`rpc.bounded_requests`), and how
    many of their streams may be open at once (`rpc.CallCap`)."""
    return {"failure_seconds": settings.audit_failure_seconds,
            "failure_pairs": settings.limits.audit_failure_pairs,
            "open_request_bytes": settings.limits.open_request_bytes,
            "open_streams": settings.limits.open_streams}


def _load_at_start(path):
    """`load_auth_config`; a file it cannot read at all names the setting that gave its path
    (the flag, the variable, the config file's key) and what to do: `[Errno 2] No such file
    or directory` alone did not say which setting to fix, nor how to make the file."""
    try:
        return load_auth_config(path)
    except AuthConfigUnreadable as err:
        todo = ("give the path of the auth config, or make one with `python -m server token "
                f"--auth-config {path} --name NAME --roles ROLES`" if err.missing else
                "give the path of the auth config file")
        raise AuthConfigInvalid(path, (
            f"{err.reason} (auth_config: --auth-config, TAILOR_AUTH_CONFIG or auth_config in the "
            f"--config file): {todo}")) from None


class AuthGuard:
    """Reads `settings.auth_config` (raises `AuthConfigInvalid` if unusable) and holds the
    interceptor; `audit` is the optional audit log the interceptor reports to, through an
    `AuditWriter` (off the event loop, denied calls collapsed)."""

    def __init__(self, settings: Settings, audit=None):
        self.path = settings.auth_config
        self.client_ca = settings.tls_client_ca
        self.audit = (AuditWriter(audit, settings.audit_failure_seconds,
                                  settings.limits.audit_failure_pairs)
                      if audit is not None else None)
        if self.path is None:
            self.interceptor = AuthInterceptor(Authenticator(None), RoleTable(), self.audit,
                                               **_interceptor_bounds(settings))
            where = "loopback only" if is_loopback(settings.host) else f"NOT loopback: {settings.host}"
            logger.warning("UNAUTHENTICATED server (no --auth-config, %s): every call is allowed, "
                           "PII stays masked", where)
            return
        config = _load_at_start(self.path)
        lim = settings.limits
        self.jwt_budget = FailureBudget(lim.jwt_failures, lim.jwt_failure_seconds)
        self.interceptor = AuthInterceptor(Authenticator(config, self.jwt_budget), config.roles,
                                           self.audit,
                                           **_interceptor_bounds(settings))
        self._log_loaded(config, "loaded")

    async def close(self) -> None:
        """Write the refused calls counted but not yet audited (server stop)."""
        await self.interceptor.close()
        if self.audit is not None:
            await self.audit.close()

    def reload_auth(self) -> bool:
        """Re-read the auth config; on any problem keep the current one and say why."""
        if self.path is None:
            return False
        try:
            config = load_auth_config(self.path)
            authenticator = Authenticator(config, self.jwt_budget)
        except AuthConfigInvalid as err:
            logger.error("auth config not reloaded, the previous one stays: %s", err)
            return False
        self.interceptor.replace(authenticator, config.roles)
        self._log_loaded(config, "reloaded")
        return True

    def _log_loaded(self, config, what: str) -> None:
        logger.info("auth config %s from %s: %d token and %d certificate principals%s", what,
                    config.path, len(config.by_token), len(config.by_cert),
                    ", JWTs" if config.jwt else "")
        if config.by_cert and self.client_ca is None:  # no client sends a certificate then
            logger.warning("auth config %s names %d certificate principals (cert_subject) but the "
                           "server asks no client for a certificate (no --tls-client-ca): they "
                           "can never authenticate", config.path, len(config.by_cert))
