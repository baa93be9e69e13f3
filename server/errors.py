"""Domain errors and the one place that maps them to gRPC status codes.

Every error a client can cause is a `TailorError` subclass named for what went wrong; it builds
its own message. `grpc_errors` wraps every servicer method (unary or streaming response) and turns
those errors into `context.abort(status, message)`; anything else becomes INTERNAL, logged with
its traceback, and never leaks details to the client.
"""
from __future__ import annotations

import functools
import inspect
import logging
import time

import grpc

from .security.userref import user_ref

__all__ = [
    "TailorError", "InvalidArgument", "NotFound", "FailedPrecondition", "ResourceExhausted",
    "PermissionDenied", "Unauthenticated", "Unavailable", "Internal", "MalformedRequest", "PartlyDone",
    "RepliesUnread", "Overloaded", "grpc_errors", "safe_deserializer", "http_status", "detail",
    "failure_level", "abort", "set_status",
]

logger = logging.getLogger("tailor.errors")


class TailorError(Exception):
    """Base of every error a request can cause; `status` is its gRPC code."""

    status = grpc.StatusCode.INTERNAL

    def log_message(self) -> str:
        """The message as the server log shows it: without user ids or echoed personal data."""
        return str(self)

    def __reduce__(self):
        # Subclasses take their own arguments and build the message from them, so pickling
        # (a batch run in a writer process) rebuilds from the message, not from the arguments.
        return _rebuild, (type(self), self.args, self.__dict__)


def failure_level(err: BaseException) -> int:
    """The level at which work that failed with `err` out of a caller's sight is logged (a
    write batch, a commit its caller may have left): WARNING for a full store or another
    RESOURCE_EXHAUSTED (the callers are answered it, and it lasts until space is made: a line
    a batch at ERROR buried the rest), ERROR for anything else."""
    exhausted = isinstance(err, TailorError) and err.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    return logging.WARNING if exhausted else logging.ERROR


def _rebuild(cls: type[TailorError], args: tuple, state: dict) -> TailorError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class InvalidArgument(TailorError):
    status = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str, logged_problem: str | None = None):
        """`logged_problem`: the problem without the input it echoes, for the log."""
        self.field = field
        self.logged_problem = logged_problem
        super().__init__(f"{field}: {problem}")

    def log_message(self) -> str:
        logged = getattr(self, "logged_problem", None)
        return str(self) if logged is None else f"{self.field}: {logged}"


class NotFound(TailorError):
    status = grpc.StatusCode.NOT_FOUND

    def __init__(self, kind: str, key: str, personal: bool = False):
        """`personal`: `key` is a user id; the log shows its `user_ref` instead."""
        self.kind, self.key, self.personal = kind, key, personal
        super().__init__(f"{kind} {key!r} not found")

    def log_message(self) -> str:
        # Hashed when logged, in the process that logs (the one holding the `user-id` key).
        if getattr(self, "personal", False):
            return f"{self.kind} {user_ref(self.key)} not found"
        return str(self)


class FailedPrecondition(TailorError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(TailorError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(TailorError):
    status = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(TailorError):
    status = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(TailorError):
    status = grpc.StatusCode.UNAVAILABLE


class Internal(TailorError):
    """A part of a call that failed unexpectedly (logged where it failed) while the call goes
    on: one entry of a partial RecommendBatch. Worded as `grpc_errors` words a whole call's
    (`abort`); its status is `TailorError`'s, INTERNAL."""

    def __init__(self, method: str):
        super().__init__(f"internal error in {method}")


class PartlyDone(TailorError):
    """A streaming call that failed part-way: `err`'s status and message, then `done`, what the
    call did before it failed (and keeps), so the caller knows what to send again."""

    def __init__(self, err: TailorError, done: str):
        self.status = err.status
        self.store_full = getattr(err, "store_full", False)
        self.logged = f"{err.log_message()}; {done}"
        super().__init__(f"{err}; {done}")

    def log_message(self) -> str:
        return self.logged


class Overloaded(ResourceExhausted):
    """A call refused at once because the calls queued before it for the `batcher`'s
    micro-batches have waited `waited` seconds, over `limits.batch_queue_seconds` (`bound`):
    nothing of it was done, so the same call sent again later is safe."""

    def __init__(self, batcher: str, waited: float, bound: float):
        self.batcher, self.waited = batcher, waited
        super().__init__(f"server overloaded: calls queued for the {batcher} batches have waited "
                         f"over limits.batch_queue_seconds ({bound:g} s); nothing of this call "
                         "was done: send it again after a pause")

    def log_message(self) -> str:
        # The answer's message names no figure that changes from call to call: a load test's
        # report (Locust's) groups failures by message, and listed one row per wait measured.
        return f"{self}; the oldest had waited {self.waited:.2f} s"


class RepliesUnread(ResourceExhausted):
    """A streaming call whose client stopped reading, or read too slowly for the replies
    its flow-control window holds: one reply waited `seconds` for room (HTTP/2 flow
    control), the bound `setting` sets (`rpc.RpcInterceptor`)."""

    def __init__(self, seconds: float, setting: str):
        super().__init__(f"the client stopped reading, or read too slowly: an answer waited "
                         f"{seconds:g} s for room ({setting}); the call ended to free its "
                         "place for other callers")


class MalformedRequest:
    """Stands in for a request whose bytes did not parse; the servicer answers INVALID_ARGUMENT."""

    def __init__(self, type_name: str, problem: str):
        self.error = InvalidArgument("request", f"not a valid {type_name} ({problem})")


def safe_deserializer(deserialize, type_name: str):
    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError and friends
            return MalformedRequest(type_name, str(err) or type(err).__name__)
    return parse


def _checked(request):
    if isinstance(request, MalformedRequest):
        raise request.error
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


async def _checked_stream(requests):
    async for request in requests:
        if isinstance(request, MalformedRequest):
            raise request.error
        yield request


MAX_DETAIL_CHARS = 512
"""Longest status message (and log line) an error yields: messages echo at most a short prefix
of a bad input (`server.validation.shown`); this cut keeps any other echo out of the trailer
(which a megabyte would overflow) and the log."""


def _cut(message: str) -> str:
    return message if len(message) <= MAX_DETAIL_CHARS else message[:MAX_DETAIL_CHARS] + "..."


def detail(err: Exception) -> str:
    """`err`'s message as a status message carries it (a call's abort, a partial
    RecommendBatch's entries, the public endpoint's reply)."""
    return _cut(str(err))


async def abort(context: grpc.aio.ServicerContext, err: Exception, method: str):
    """End the call with `err`'s status and message (logged without personal data), or
    INTERNAL for an error that is no `TailorError` (logged with its traceback)."""
    if isinstance(err, TailorError):
        _refused(err, method)
        await context.abort(err.status, detail(err))
    logger.exception("%s failed", method)
    await context.abort(grpc.StatusCode.INTERNAL, str(Internal(method)))


def set_status(context: grpc.aio.ServicerContext, err: TailorError, method: str) -> None:
    """Make `err`'s status and message the call's (logged as `abort` logs them), for a handler
    that returns next instead of waiting in `context.abort`: that waits until the status is
    sent, and a reply the client left unread holds it back (`rpc._Observed.written`)."""
    _refused(err, method)
    context.set_code(err.status)
    context.set_details(detail(err))


def _refused(err: TailorError, method: str) -> None:
    if getattr(err, "store_full", False):  # `store.errors.StoreFull`, or a call it cut short
        from .metrics import STORE_FULL_REFUSALS  # imported late: metrics imports errors
        STORE_FULL_REFUSALS.inc()
    if isinstance(err, Overloaded):
        _shed_logged(err, method)
        return
    logger.info("%s -> %s: %s", method, err.status.name, _cut(err.log_message()))


SHED_LOG_SECONDS = 10.0
"""A batcher's refusals as overload are logged one line per this many seconds, with their
count: one line a call would flood the log exactly when the server is overloaded (their
count a batcher is `tailor_shed_calls_total{batcher}`)."""

_shed_lines: dict[str, tuple[float, int]] = {}
"""Batcher: (time of its last line, refusals since)."""


def _shed_logged(err: Overloaded, method: str) -> None:
    now = time.monotonic()
    last, count = _shed_lines.get(err.batcher, (float("-inf"), 0))
    count += 1
    if now - last < SHED_LOG_SECONDS:
        _shed_lines[err.batcher] = last, count
        return
    _shed_lines[err.batcher] = now, 0
    logger.info("%s -> RESOURCE_EXHAUSTED: %s (%d calls refused overloaded by the %s batcher "
                "since its last such line; one line per %g s)", method,
                _cut(err.log_message()), count, err.batcher, SHED_LOG_SECONDS)


HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
}
"""The public HTTP endpoint's status for each error's gRPC status (`server.http.public` maps
every `TailorError` a handler raises through it): a store that is full or busy is 503, so a
provider retries its webhook later; anything else is 500."""


def http_status(err: TailorError) -> tuple[int, str]:
    """The HTTP status and the (cut) message of `err` for the public endpoint's reply."""
    return HTTP_STATUS.get(err.status, 500), detail(err)


def grpc_errors(method):
    """Map domain errors raised by a servicer method to gRPC statuses (unary or streaming)."""
    name = method.__qualname__
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def stream_wrapper(self, request, context):
            try:
                async for reply in method(self, _checked(request), context):
                    yield reply
            except Exception as err:  # noqa: BLE001 - mapped below, never swallowed
                await abort(context, err, name)
        return stream_wrapper

    @functools.wraps(method)
    async def unary_wrapper(self, request, context):
        try:
            return await method(self, _checked(request), context)
        except Exception as err:  # noqa: BLE001 - mapped below, never swallowed
            await abort(context, err, name)
    return unary_wrapper
