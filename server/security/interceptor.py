"""The authentication + authorization interceptor: every call is authenticated, then checked
against the roles the auth config grants; the handler finds the caller in `current_principal()`.

It sits before the metrics interceptor and the error mapping. Health and reflection stay open.
Denied calls and calls to sensitive methods (`roles.SENSITIVE`, and unmasked reads) go to the
optional audit log with their final status; failed authentication too, collapsed per (peer,
reason) and interval (`failures.FailedAuthDigest`: anyone can fail, nobody may fill the disk).
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect

import grpc

from ..errors import Unauthenticated
from ..logging import current_call
from ..rpc import WrappingInterceptor, final_status, handler_parts
from .authn import Authenticator
from .failures import FailedAuthDigest
from .logging import logger
from .principals import Principal
from .roles import ANY_AUTHENTICATED, OPEN_PREFIXES, PII_READER, SENSITIVE, UNMASKED_READS, RoleTable

__all__ = ["AuthInterceptor", "current_principal"]

NOBODY = Principal("nobody")
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("tailor_principal",
                                                                        default=NOBODY)


def current_principal() -> Principal:
    """The caller of the RPC being handled (`NOBODY`, with no roles, outside an intercepted call)."""
    return _principal.get()


def _request_id(metadata) -> str:
    """The call's request id (`server.rpc` binds it, from `x-request-id` or made up)."""
    call = current_call()
    if call is not None:
        return call.request_id
    for key, value in metadata or ():
        if key == "x-request-id":
            return value
    return ""


def _target(request) -> str:
    """The record a call is about, where cheap: the request's user_id or campaign_id."""
    return getattr(request, "user_id", "") or getattr(request, "campaign_id", "") or ""


class AuthInterceptor(WrappingInterceptor):
    """`authenticator` says who calls; `roles` who may call what; `audit` (optional) has
    `record(principal, method, target, status, request_id, **details)` (sync or async; details
    only for failed authentication: `peer`, `reason`, `count`); failed authentication is
    collapsed per (peer, reason) over `failure_seconds`, at most `failure_pairs` pairs."""

    def __init__(self, authenticator: Authenticator, roles: RoleTable | None = None, audit=None,
                 *, failure_seconds: float = 60.0, failure_pairs: int = 256):
        super().__init__()
        self.authenticator = authenticator
        self.roles = roles or RoleTable()
        self.audit = audit
        self.failures = (FailedAuthDigest(audit, failure_seconds, failure_pairs)
                         if audit is not None else None)

    def replace(self, authenticator: Authenticator, roles: RoleTable) -> None:
        """Use a new auth config from the next call on (SIGHUP reload)."""
        self.authenticator, self.roles = authenticator, roles

    async def close(self) -> None:
        """Write the failed authentication counted but not yet audited (server stop)."""
        if self.failures is not None:
            await self.failures.close()

    def _skips(self, method: str) -> bool:
        return method.startswith(OPEN_PREFIXES)  # health and reflection stay open

    # -- the per-call check ------------------------------------------------------------------
    async def authorize(self, method: str, context) -> Principal:
        """The caller, allowed to call `method`; otherwise aborts the call (and audits it)."""
        metadata = context.invocation_metadata()
        try:
            principal = self.authenticator.principal(metadata, context.auth_context)
        except Unauthenticated as err:
            await self._failed(method, str(err), context, metadata)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        except Exception:  # a credential we failed to read is no credential; say why in the log
            logger.exception("authentication failed for %s", method)
            reason = "credentials could not be verified"
            await self._failed(method, reason, context, metadata)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        allowed = self.roles.allowed(method)
        if principal.roles.isdisjoint(allowed) and ANY_AUTHENTICATED not in allowed:
            await self._record(principal.name, method, "", "PERMISSION_DENIED", metadata)
            needed = " or ".join(sorted(allowed)) or "(no role may call it)"
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"{principal.name} lacks the role {needed} for {method}")
        return principal

    async def _failed(self, method: str, reason: str, context, metadata) -> None:
        if self.failures is not None:
            await self.failures.failed(context.peer(), method, reason, _request_id(metadata))

    async def _record(self, principal: str, method: str, target: str, status: str, metadata) -> None:
        if self.audit is None:
            return
        try:
            done = self.audit.record(principal, method, target, status, _request_id(metadata))
            if inspect.isawaitable(done):
                await done
        except Exception:  # the audit log failing must not change the call's answer; say so
            logger.exception("audit record failed for %s", method)

    def _audited(self, method: str, principal: Principal) -> bool:
        return method in SENSITIVE or (method in UNMASKED_READS and principal.has(PII_READER))

    # -- handler wrappers, built once per method ---------------------------------------------
    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        _, inner, make = handler_parts(handler)
        if handler.response_streaming and inspect.isasyncgenfunction(inner):
            return make(self._stream(method, inner))
        return make(self._unary(method, inner))

    def _unary(self, method: str, inner):
        async def call(request, context):
            principal = await self.authorize(method, context)
            token = _principal.set(principal)
            try:
                if not self._audited(method, principal):
                    return await inner(request, context)
                return await self._audit_call(method, principal, request, context,
                                              inner(request, context))
            finally:
                _principal.reset(token)
        return call

    async def _audit_call(self, method, principal, request, context, pending):
        status = "OK"
        try:
            return await pending
        except BaseException as err:
            status = final_status(context, err)
            raise
        finally:
            await self._record(principal.name, method, _target(request), status,
                               context.invocation_metadata())

    def _stream(self, method: str, inner):
        async def call(request, context):
            principal = await self.authorize(method, context)
            token = _principal.set(principal)
            status = "OK"
            try:
                async for reply in inner(request, context):
                    yield reply
            except BaseException as err:
                status = final_status(context, err)
                raise
            finally:
                with contextlib.suppress(ValueError):  # closed from another context: the task ends
                    _principal.reset(token)
                if self._audited(method, principal):
                    await self._record(principal.name, method, _target(request), status,
                                       context.invocation_metadata())
        return call
