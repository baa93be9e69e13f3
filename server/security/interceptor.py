"""The authentication + authorization interceptor: every call is authenticated, then checked
against the roles the auth config grants; the handler finds the caller in `current_principal()`.

It sits after the metrics interceptor and before the error mapping. Health stays open to
anyone, its Watch streams at most `Limits.open_streams` open at once, per process; reflection
takes any authenticated caller; the request messages of both (a service or symbol name) are
bounded (`Limits.open_request_bytes`).

A caller is known before its request is read: gRPC reads a unary call's request (up to
`grpc_max_request_bytes`) before the handler runs, so a call whose metadata alone does not
name its caller (`Authenticator.known`: no token, an unknown one, a JWT not yet verified, a
client certificate) gets a handler that authenticates it with its transport first and reads
the request only then (`rpc.reading_later`): a stranger's request is never read.

Calls to sensitive methods (`roles.SENSITIVE`, and unmasked reads) go to the optional audit
log with their final status, one line each; denied calls to its `denied` (`AuditWriter`
collapses them per principal and method); failed authentication is collapsed per (peer,
reason) and interval (`failures.FailedAuthDigest`: anyone can fail, nobody may fill the disk).

A streaming call's caller is checked again as the stream runs (`_Caller`): at its next message
in either direction after an auth config reload (SIGHUP), and at least every `RECHECK_SECONDS`
otherwise, so a revoked token, a role taken away or an expired JWT ends the streams it opened
(UNAUTHENTICATED or PERMISSION_DENIED; what a stream had done before stays done); so does
`pii-reader` taken from a caller whose call started with it (an export that sends unmasked data).
A stream of requests waiting for its next one is checked too, at the reload and about every
`RECHECK_SECONDS` (`AuthInterceptor.sweep`): one whose caller is gone stops waiting and ends
with that status (a revoked decider's silent PlanCampaign streams held every plan place of the
worker until their connection's age ended them, 377 s measured).
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import time

import grpc

from ..errors import PermissionDenied, TailorError, Unauthenticated
from ..logging import current_call
from ..rpc import CallCap, bounded_requests, final_status, handler_parts, reading_later
from .authn import Authenticator
from .failures import FailedAuthDigest
from .logging import audit_failed, logger
from .principals import Principal
from .roles import (
    ANY_AUTHENTICATED,
    OPEN_PREFIXES,
    PII_READER,
    SENSITIVE,
    SMALL_REQUEST_PREFIXES,
    UNMASKED_READS,
    UNMASKED_STREAMS,
    RoleTable,
)
from .userref import AddressKey, CampaignKey

__all__ = ["AuthInterceptor", "current_principal", "address_target", "RECHECK_SECONDS"]

RECHECK_SECONDS = 5.0
"""How long a stream runs on its caller's last check when no auth config reload came between."""
ADDRESS_CHARS = 1024
"""Longest address an audit target is made from (the handler bounds it tighter and refuses)."""

NOBODY = Principal("nobody")
_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("tailor_principal",
                                                                        default=NOBODY)
_known: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("tailor_known_caller",
                                                                         default=None)
"""The caller `intercept_service` (or `_reading_later`) found, for the handler of the same call."""


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
    """The record a call is about, where cheap: the request's user_id or campaign_id
    (`CampaignKey`; CreateCampaign's and UpdateCampaign's, its spec's), or the suppression
    address it names (`address_target`); the audit log keeps its keyed hash, labelled by which
    of them it is (`userref.target_ref`)."""
    found = getattr(request, "user_id", "")
    if found:
        return found
    found = getattr(request, "campaign_id", "") or getattr(
        getattr(request, "spec", None), "campaign_id", "")
    if found:
        return CampaignKey(found)
    address = getattr(request, "address", request)  # AddSuppression's, or the request itself
    try:
        kind = address.WhichOneof("address")
    except (AttributeError, ValueError):  # no address in it (or not a message: a stream)
        return ""
    return address_target(kind, getattr(address, kind)) if kind else ""


def address_target(kind: str, value: str) -> str:
    """What an audit line's target hashes for a suppression address: `<kind>:` (email, phone,
    push_token: `contact.addresses.KINDS`) and the address as the list normalizes it, an
    `AddressKey` (labelled `a:`, not a user's `u:`); "" when it is not one (the call failed
    anyway)."""
    from ..contact.addresses import normalize
    try:
        return AddressKey(f"{kind}:{normalize(kind, value, ADDRESS_CHARS)}")
    except TailorError:
        return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """`authenticator` says who calls; `roles` who may call what; `audit` (optional) has
    `record(principal, method, target, status, request_id, **details)` (sync or async; details
    only for failed authentication: `peer`, `reason`, `count`); failed authentication is
    collapsed per (peer, reason) over `failure_seconds`, at most `failure_pairs` pairs; the
    methods whose requests are a name (health, reflection) take requests of `open_request_bytes`
    at most (`rpc.bounded_requests`), and at most `open_streams` streams of those open to anyone
    (Health/Watch) are open at once (`rpc.CallCap`)."""

    def __init__(self, authenticator: Authenticator, roles: RoleTable | None = None, audit=None,
                 *, failure_seconds: float = 60.0, failure_pairs: int = 256,
                 open_request_bytes: int = 4096, open_streams: int = 1000):
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self.authenticator = authenticator
        self.roles = roles or RoleTable()
        self.audit = audit
        self.failures = (FailedAuthDigest(audit, failure_seconds, failure_pairs)
                         if audit is not None else None)
        self.open_request_bytes = open_request_bytes
        self.open_streams = CallCap(open_streams, "streams of the methods open to anyone "
                                                  "(Health/Watch)")
        self.streams: set[_Caller] = set()
        """The streams of requests under way, each checked again at a reload (`sweep`)."""

    def replace(self, authenticator: Authenticator, roles: RoleTable) -> None:
        """Use a new auth config from the next call on (SIGHUP reload); the streams open end
        now if their caller is gone (`sweep`)."""
        self.authenticator, self.roles = authenticator, roles
        self.sweep()

    def sweep(self) -> None:
        """Check the caller of every stream of requests under way again; end the wait of those
        whose caller is gone (`_Caller.check`)."""
        for caller in list(self.streams):
            caller.check()

    async def close(self) -> None:
        """Write the failed authentication counted but not yet audited (server stop)."""
        if self.failures is not None:
            await self.failures.close()

    async def intercept_service(self, continuation, handler_call_details):
        """The method's handler: the one that reads the request at once when the metadata
        names a known caller, the one that authenticates before reading it otherwise."""
        method = handler_call_details.method
        pair = self._handlers.get(method)
        if pair is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            if method.startswith(SMALL_REQUEST_PREFIXES):  # health, reflection: a name
                handler = bounded_requests(handler, self.open_request_bytes, method)
            if method.startswith(OPEN_PREFIXES):  # health: anyone's
                if handler.response_streaming:  # Check stays unbounded: it ends at once
                    handler = self.open_streams.bound(handler)
                pair = self._handlers[method] = (handler, handler)
            else:
                pair = self._handlers[method] = self._wrap(method, handler)
        at_once, later = pair
        if at_once is not later:
            try:
                known = self.authenticator.known(handler_call_details.invocation_metadata)
            except Exception:  # metadata it cannot read: `authenticate` says why, unread
                known = None
            if known is None:
                return later
            _known.set(known)  # this call's task runs its handler next
        return at_once

    # -- the per-call check ------------------------------------------------------------------
    async def authorize(self, method: str, context, request=None) -> Principal:
        """The caller, allowed to call `method`; otherwise aborts the call (and audits it: a
        denied one with the `request`'s target, whom the call was aimed at)."""
        return await self.permit(await self.authenticate(method, context), method, context,
                                 request)

    async def authenticate(self, method: str, context) -> Principal:
        """The caller, from the call's metadata and transport; otherwise aborts the call
        (UNAUTHENTICATED, counted in the failed-authentication digest)."""
        metadata = context.invocation_metadata()
        try:
            return self.authenticator.principal(metadata, context.auth_context, context.peer())
        except Unauthenticated as err:
            await self._failed(method, str(err), context, metadata)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(err))
        except Exception:  # a credential we failed to read is no credential; say why in the log
            logger.exception("authentication failed for %s", method)
            reason = "credentials could not be verified"
            await self._failed(method, reason, context, metadata)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    async def permit(self, principal: Principal, method: str, context, request=None) -> Principal:
        """`principal`, when it may call `method`; otherwise aborts the call (PERMISSION_DENIED,
        audited with the `request`'s target, whom the call was aimed at)."""
        lacking = self.lacking(principal, method)
        if lacking is not None:
            await self._denied(principal.name, method, _target(request),
                               context.invocation_metadata())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, lacking)
        return principal

    async def _caller(self, method: str, context, request) -> Principal:
        """The call's caller, allowed to call `method`: the one found before its handler ran
        (`intercept_service`, `_reading_later`), or authenticated now."""
        known = _known.get()
        if known is None:
            return await self.authorize(method, context, request)
        return await self.permit(known, method, context, request)

    def lacking(self, principal: Principal, method: str) -> str | None:
        """Why `principal` may not call `method` (None: it may)."""
        allowed = self.roles.allowed(method)
        if principal.roles.isdisjoint(allowed) and ANY_AUTHENTICATED not in allowed:
            needed = " or ".join(sorted(allowed)) or "(no role may call it)"
            return f"{principal.name} lacks the role {needed} for {method}"
        return None

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
            audit_failed(method)

    async def _denied(self, principal: str, method: str, target: str, metadata) -> None:
        """A call denied for the caller's roles: the audit's `denied` (collapsed) if it has one,
        else a line of its own."""
        denied = getattr(self.audit, "denied", None)
        if denied is None:
            await self._record(principal, method, target, "PERMISSION_DENIED", metadata)
            return
        try:
            await denied(principal, method, target, _request_id(metadata))
        except Exception:  # the audit log failing must not change the call's answer; say so
            audit_failed(method)

    def _audited(self, method: str, principal: Principal) -> bool:
        return method in SENSITIVE or (method in UNMASKED_READS and principal.has(PII_READER))

    # -- handler wrappers, built once per method ---------------------------------------------
    def _wrap(self, method: str, handler: grpc.RpcMethodHandler):
        """(the handler for a caller known from the metadata, the one for any other caller):
        one and the same for a stream of requests, which gRPC reads only as the handler asks."""
        _, inner, make = handler_parts(handler)
        streams_in = handler.request_streaming
        streams_out = handler.response_streaming and inspect.isasyncgenfunction(inner)
        at_once = make(self._stream(method, inner, streams_in) if streams_out
                       else self._unary(method, inner, streams_in))
        if streams_in:
            return at_once, at_once
        return at_once, reading_later(handler, self._reading_later(method, at_once, streams_out))

    def _reading_later(self, method: str, at_once: grpc.RpcMethodHandler, streams_out: bool):
        """`at_once`'s behaviour, called with the request read from a stream of one once the
        caller is authenticated (a caller refused never has its request read)."""
        behaviour = at_once.unary_stream if at_once.response_streaming else at_once.unary_unary

        async def first(requests, context):
            _known.set(await self.authenticate(method, context))
            async for request in requests:
                return request
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "the call ended before its request message arrived")

        if not streams_out:
            async def call(requests, context):
                return await behaviour(await first(requests, context), context)
            return call

        async def stream(requests, context):
            request = await first(requests, context)
            async with contextlib.aclosing(behaviour(request, context)) as replies:
                async for reply in replies:
                    yield reply
        return stream

    def _unary(self, method: str, inner, streams_in: bool):
        async def call(request, context):
            principal = await self._caller(method, context, request)
            caller = None
            if streams_in:
                caller = _Caller(self, method, context, principal)
                request = caller.checking(request)
            token = _principal.set(principal)
            try:
                if not self._audited(method, principal):
                    return await inner(request, context)
                return await self._audit_call(method, principal, request, context,
                                              inner(request, context))
            finally:
                _principal.reset(token)
                if caller is not None:
                    caller.retire()
                if caller is not None and caller.denied and not self._audited(method, principal):
                    await self._denied(principal.name, method, "", context.invocation_metadata())
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

    def _stream(self, method: str, inner, streams_in: bool):
        """A stream of replies' handler. Where gRPC writes its replies, a client that gives
        up while one is being written ends the call in gRPC, which leaves this generator
        suspended at its `yield`: asyncio's finalizer closes it later, in a task of its own,
        after gRPC has released the call and freed its metadata (walked: read back as heap
        garbage). So its `finally` reads only the metadata read at the start, and the call's
        watch ends with the call itself (`_Caller`, retired from gRPC's done callback). (The
        server's rpc layer writes the replies itself, `rpc._Observed.written`: a cancel then
        reaches this generator in its own task.)"""
        async def call(request, context):
            principal = await self._caller(method, context, request)
            metadata = context.invocation_metadata()  # for the end: see `_stream`'s docstring
            caller = _Caller(self, method, context, principal)
            if streams_in:
                request = caller.checking(request)
            token = _principal.set(principal)
            status = "OK"
            try:
                async with contextlib.aclosing(inner(request, context)) as replies:
                    async for reply in replies:
                        gone = caller.gone()
                        if gone is not None:
                            await context.abort(gone.status, str(gone))
                        yield reply
            except BaseException as err:
                status = final_status(context, err)
                raise
            finally:
                caller.retire()
                with contextlib.suppress(ValueError):  # closed from another context: the task ends
                    _principal.reset(token)
                if self._audited(method, principal):  # its own line, whatever its status
                    await self._record(principal.name, method, _target(request), status, metadata)
                elif caller.denied:
                    await self._denied(principal.name, method, _target(request), metadata)
        return call


class _Caller:
    """A streaming call's caller, checked again while the stream runs: `gone()` before each
    reply it sends, and before each request it reads (`checking`). While a call waits for its
    next request, its caller is checked at each reload (`AuthInterceptor.sweep`) and about every
    `RECHECK_SECONDS` too (`check`): one gone ends the wait with the reason, as at a message.
    `denied`: a check found a role taken away (the call is then audited as denied, as one
    denied at its start is)."""

    __slots__ = ("interceptor", "method", "context", "principal", "authenticator", "due",
                 "denied", "timer", "ending", "cut", "retired")

    def __init__(self, interceptor: AuthInterceptor, method: str, context, principal: Principal):
        self.interceptor, self.method, self.context = interceptor, method, context
        self.principal, self.authenticator = principal, interceptor.authenticator
        self.due = time.monotonic() + RECHECK_SECONDS
        self.denied = False
        self.timer: asyncio.TimerHandle | None = None
        self.ending: TailorError | None = None
        """Why the call ends (a check found its caller gone)."""
        self.cut = asyncio.Event()
        """Set with `ending`: the wait for the next request ends."""
        self.retired = False
        """The call has ended (`retire`): its context is gRPC's to free, never to be read."""
        context.add_done_callback(self._ended)

    def __enter__(self) -> _Caller:
        """Watch the call: checked at reloads and on a timer, whether messages go or not."""
        if not self.retired:
            self.interceptor.streams.add(self)
            self.timer = asyncio.get_running_loop().call_later(RECHECK_SECONDS, self._tick)
        return self

    def __exit__(self, *_) -> None:
        self.interceptor.streams.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def retire(self) -> None:
        """The call has ended (its handler returned or raised): stop watching it now. A
        handler that returns, or fails, without reading its requests to the end leaves their
        `checking` generator suspended inside `with self` until the garbage collector finds
        it; meanwhile the timer (and a reload's `sweep`) read the metadata of a call gRPC had
        freed, and the worker died of SIGSEGV (a PlanCampaign refused INVALID_ARGUMENT at its
        first message: the whole server stopped 5 s later)."""
        self.retired = True
        self.__exit__()
        self.cut.set()  # what that generator waits on ends too (destroyed pending, it logged an ERROR)

    def _ended(self, _context) -> None:
        """gRPC's done callback: the call is over, whatever became of its handler (a reply
        stream's generator left suspended when its client gave up is closed only later, after
        gRPC has freed the call: `AuthInterceptor._stream`). It runs before gRPC releases the
        call, so no timer or sweep reads the call's metadata after that."""
        self.retire()

    def _tick(self) -> None:
        self.timer = None
        self.check()
        if self.ending is None and self in self.interceptor.streams:
            self.timer = asyncio.get_running_loop().call_later(RECHECK_SECONDS, self._tick)

    def check(self) -> None:
        """Note why the call must end (`ending`) if its caller is gone, and end its wait."""
        if self.ending is None and not self.retired:
            self.ending = self.gone()
            if self.ending is not None:
                self.cut.set()

    def gone(self) -> TailorError | None:
        """Why the caller may no longer go on (None: it may): its credentials checked again
        after a reload, or once `RECHECK_SECONDS` have passed since the last check."""
        now, interceptor = time.monotonic(), self.interceptor
        if self.retired or (interceptor.authenticator is self.authenticator and now < self.due):
            return None
        self.authenticator, self.due = interceptor.authenticator, now + RECHECK_SECONDS
        try:
            again = self.authenticator.principal(  # not charged to the address: a check
                self.context.invocation_metadata(), self.context.auth_context, None)  # we asked for
        except Unauthenticated as err:
            return Unauthenticated(f"the stream's credentials are no longer valid: {err}")
        except Exception:  # as `authorize`: a credential we fail to read is none
            logger.exception("authentication failed again for %s", self.method)
            return Unauthenticated("the stream's credentials could not be verified again")
        if again.name != self.principal.name:
            return Unauthenticated(f"the stream's credentials now name {again.name}, "
                                   f"not {self.principal.name}")
        lacking = interceptor.lacking(again, self.method) or self._unmasking(again)
        if lacking is None:
            return None
        self.denied = True
        return PermissionDenied(lacking)

    def _unmasking(self, again: Principal) -> str | None:
        """Why the call may not go on (None: it may): an export that decided at its start to
        send unmasked data (`UNMASKED_STREAMS`, its caller a `pii-reader`), whose caller
        `again` no longer has the role."""
        if self.method in UNMASKED_STREAMS and self.principal.has(PII_READER) \
                and not again.has(PII_READER):
            return (f"{again.name} lacks the role {PII_READER} this call started with: it "
                    "sends unmasked data")
        return None

    async def checking(self, requests):
        """`requests`, each read after the caller is checked (`gone`): a caller gone ends the
        call with its status, through the handler (`server.errors.grpc_errors`); so does one
        found gone while the call waits for a request (`check`), however long it waits. (On
        a server without an auth config nobody's credentials can go: read as they come.)"""
        if self.authenticator.config is None:
            async for request in requests:
                yield request
            return
        with self:
            cut, arriving = asyncio.ensure_future(self.cut.wait()), None
            try:
                while True:
                    arriving = asyncio.ensure_future(_next(requests))
                    await asyncio.wait((arriving, cut), return_when=asyncio.FIRST_COMPLETED)
                    if not arriving.done():
                        if self.ending is None:  # retired: the call is over, nothing to read
                            return
                        raise self.ending
                    request = arriving.result()
                    if request is _END:
                        return
                    gone = self.ending or self.gone()
                    if gone is not None:
                        raise gone
                    yield request
            finally:
                cut.cancel()
                if arriving is not None:
                    arriving.cancel()


_END = object()


async def _next(requests):
    """The next message of `requests`, `_END` after the last."""
    return await anext(requests, _END)
