"""A Locust user that speaks gRPC: every call is timed by a client interceptor and reported
to Locust as a request event (name = full method, exception = the grpc.RpcError if any).
Every call gets a deadline (`--call-timeout`, default 10 s, unless the task set its own): a call
the server never answers is then a DEADLINE_EXCEEDED failure in the statistics, instead of a
user stuck until the run ends with that call never counted.

TLS and a token come from the locustfile's `--tls-ca --cert --key --token --insecure` options
(`add_transport_options`; the token also from the environment, `TAILOR_TOKEN`; in plaintext
only to a loopback --host unless --insecure), and every
channel a locustfile opens comes from `channel`, which sends the token as a header; options that
cannot work (a file that is no PEM, a --cert without --key, a --call-timeout of 0) stop the
run before any user starts (one `error:` line, exit 2; from the web UI's form, the start is
refused with the same line: `loadtests.options`). At test start one Ping (`probe`) checks the
server answers these credentials: one that cannot be reached or refuses them stops the run
with one line naming the option to change (`stop_run`, exit 1), instead of thousands of the
same failure until `-t` ends. Then each user class's `start_calls` (one call of each method its
tasks make that the server could refuse for all: Recommend without a bundle) is made once: a
refusal that every call of that method would get stops the run the same way."""
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events
from locust.exception import LocustError, StopUser
from locust.runners import WorkerRunner

from clients.transport import Connection, add_arguments, check_target
from loadtests.options import check
from protos.tailor.v1 import (
    diagnostics_pb2,
    diagnostics_pb2_grpc,
    recommendation_pb2,
    recommendation_pb2_grpc,
)

grpc_gevent.init_gevent()

__all__ = ["GrpcUser", "add_transport_options", "channel", "is_worker", "probe",
           "recommend_call", "stop_run", "stopped_at_start", "task_errors"]

logger = logging.getLogger("tailor.loadtests")

CALL_TIMEOUT = 10.0


def add_transport_options(parser) -> None:
    """Register --tls-ca, --cert, --key, --token, --insecure and --call-timeout on locust's
    parser (call in its init hook). The connection flags stay out of the web UI, which prints
    every option it shows in its page (the token in plain text, to whoever reaches it: every
    interface by default) and cannot print a path (the page failed, 500). The file flags are
    str: a distributed run's master sends its options to each worker as msgpack, which holds no
    Path (the spawn failed, `can not serialize 'PosixPath' object`, and no user ever started)."""
    add_arguments(parser, path=str, include_in_web_ui=False)
    parser.add_argument("--call-timeout", type=float, default=CALL_TIMEOUT,
                        help="deadline of every call, seconds (default %(default)s)")


@check
def _check_transport(environment, opts) -> None:
    """Connection options every user would fail on (a TLS file that is no PEM, a --cert without
    its --key, a token no header can hold, or one that would go in plaintext to a --host that is
    not loopback without --insecure) and a --call-timeout that is no deadline stop the run
    (`loadtests.options`). Raised in each user's start instead, they were tracebacks and the run
    went on with no user until its -t. A --host gRPC would misread (https://, a port past
    65535) likewise."""
    if not hasattr(opts, "tls_ca"):  # no transport options
        return
    target = locust_target(opts.host) if opts.host else None  # else the web UI's form asks
    connection = Connection.from_args(opts)  # for it, and `probe` refuses what this would
    if target is not None:
        connection.check_token_target(target)
    if connection.secure:
        connection.credentials()  # reads the PEM files
    if not (math.isfinite(opts.call_timeout) and opts.call_timeout > 0):
        raise ValueError(f"--call-timeout {opts.call_timeout:g}: not a number of seconds above 0")


def locust_target(host: str) -> str:
    """The gRPC target of Locust's --host: its grpc:// or http:// (any case) taken off, as
    Locust's own form puts one there; ValueError naming --host for what gRPC would misread
    (`check_target`: https://, grpcs://, a port past 65535; TLS is --tls-ca)."""
    target = re.sub(r"^(grpc|http)://", "", host, flags=re.IGNORECASE)
    check_target(target, "--host")
    return target


def channel(connection: Connection, target: str) -> grpc.Channel:
    """A channel to `target` that works under gevent: over TLS, `Connection.channel` sends the
    token as call credentials, a metadata plugin gRPC runs on a thread of its own, and with
    `grpc.experimental.gevent` calls then hung (20 users: ~340 calls in the first seconds, then
    every call DEADLINE_EXCEEDED, unseen by the server; the mix's set-up made none). Here the
    token goes as the same `authorization` header, added to each call's metadata: in plaintext
    only to a loopback `target` unless --insecure (`Connection.check_token_target`)."""
    return connection.channel(target, token_as_header=True)


@events.test_start.add_listener
def _probe_at_start(environment, **_):
    opts = environment.parsed_options
    if opts is None or not hasattr(opts, "tls_ca") or not environment.host:
        return  # an Environment built in code, or no transport options
    environment.probing = environment.host  # `stopped_at_start`, if the run ends meanwhile
    try:
        reason = probe(Connection.from_args(opts), locust_target(environment.host),
                       environment.host, min(opts.call_timeout, 10.0),
                       _start_calls(environment.user_classes, opts))
    except ValueError as err:  # a host typed in the web UI's form
        reason = str(err)
    environment.probing = None  # not in a finally: the -t stop kills this greenlet mid-Ping
    if reason:
        stop_run(environment, reason)


StartCall = Callable[[grpc.Channel, float], object]
"""One call of a method a run's tasks make (the channel, its deadline), made once at start."""

REFUSED_FOR_ALL = frozenset({grpc.StatusCode.FAILED_PRECONDITION,
                             grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED})
"""Answers to a start call that every call of its method would get: the server lacks what it
needs (no bundle), the token its role, the server the method. Others (NOT_FOUND for one
unknown user, a deadline) may be this call's alone; INVALID_ARGUMENT (a --k the server
refuses) is left to the run, whose refused calls fail it as before."""


def _start_calls(user_classes, opts) -> dict[str, StartCall]:
    """The start calls of the run's user classes (`GrpcUser.start_calls`), by method."""
    calls: dict[str, StartCall] = {}
    for cls in user_classes:
        calls.update(getattr(cls, "start_calls", lambda _: {})(opts))
    return calls


def probe(connection: Connection, target: str, host: str, timeout: float,
          calls: dict[str, StartCall] | None = None) -> str | None:
    """Why no call of this run could succeed, naming what to change, or None: one Ping, which
    any authenticated caller may make. A TLS server closes a plaintext connection (`Socket
    closed`), a server without TLS fails the handshake, and a TLS server with an auth config
    answers a call without a token UNAUTHENTICATED: each failed every call of a run, 2,000 to
    8,000 identical failures in 3 s, printed as a multi-line error report. Then each of
    `calls` (method -> call) once: a Recommend against a server with no bundle went on with
    thousands of identical FAILED_PRECONDITION failures (`REFUSED_FOR_ALL`)."""
    try:
        with channel(connection, target) as ch:
            diagnostics_pb2_grpc.DiagnosticsServiceStub(ch).Ping(
                diagnostics_pb2.PingRequest(), timeout=timeout)
            for method, call in (calls or {}).items():
                try:
                    call(ch, timeout)
                except grpc.RpcError as err:
                    if err.code() in REFUSED_FOR_ALL:
                        return (f"the server refuses {method}, which the run's tasks call: "
                                f"{err.code().name}: {err.details()}")
    except grpc.RpcError as err:
        return _why(err, connection, target, host)
    return None


def _why(err: grpc.RpcError, connection: Connection, target: str, host: str) -> str | None:
    code, details = err.code(), err.details()
    if code == grpc.StatusCode.UNAVAILABLE:
        hint = ("the server may serve TLS: give --tls-ca (its CA)" if not connection.secure else
                "the server may serve plaintext, or --tls-ca may not have signed its certificate "
                "(and the host name must be one of its names)")
        port = "" if re.search(r":\d+$", target) else " (it names no port: gRPC dialled 443)"
        return f"cannot reach --host {host}{port}: {details}; check --host and the port, {hint}"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (f"the server refused the credentials ({details}): give --token (or TAILOR_TOKEN) "
                "a token its auth config holds, or --cert/--key")
    return None  # it answered: reached and authenticated (a stand-in may lack Ping: UNIMPLEMENTED)


def recommend_call(k: int) -> StartCall:
    """A Recommend as the run's tasks make it (`k`, channel web), for a user no store holds: a
    server with no bundle refuses it (FAILED_PRECONDITION) as it would every call."""
    def call(ch: grpc.Channel, timeout: float):
        return recommendation_pb2_grpc.RecommendationServiceStub(ch).Recommend(
            recommendation_pb2.RecommendRequest(user_id="loadtest-start-probe", k=k,
                                                channel="web"), timeout=timeout)
    return call


def stop_run(environment, reason: str) -> None:
    """End a run at its start: one error line, the run stopped at once, exit 1 (the quitting
    listeners see `environment.setup_failed` and report nothing more; a user Locust spawns
    before the stop makes no call: `LocustInterceptor`)."""
    if getattr(environment, "setup_failed", None):
        return  # stopped already, said why
    logger.error("FAILED at test start: %s", reason)
    environment.setup_failed = reason
    gevent.spawn(environment.runner.quit)


def stopped_at_start(environment) -> bool:
    """True when the run ended at its start (the quitting listeners then judge nothing, exit 1):
    `stop_run` said why, or `-t` ran out while the start's Ping still waited for an answer (a
    server that accepts but does not answer: the run ended 'FAILED: p99 inf ms, 0 failures',
    with no word of the Ping), which is said here."""
    if getattr(environment, "probing", None):
        logger.error("FAILED at test start: the start's Ping to --host %s had no answer before "
                     "the run ended (-t); check that a Tailor server serves there, or give a "
                     "longer -t", environment.probing)
        environment.setup_failed = "no answer to the start's Ping"
    if getattr(environment, "setup_failed", None):
        environment.process_exit_code = 1
        return True
    return False


def is_worker(environment) -> bool:
    """A distributed run's worker: it sends its samples to the master and keeps none, so only
    the master judges the run (a worker's quitting listener saw 0 requests, logged `FAILED`
    and exited 1 after every run, a good one too)."""
    return isinstance(environment.runner, WorkerRunner)


def task_errors(environment) -> list[str]:
    """One line per error Locust caught in a task (`runner.exceptions`), most frequent first: a
    task that raised before or instead of its call made no request, so the statistics (and a
    p99 gate over them) never see it, e.g. `2133 x Cannot choose from an empty sequence (File
    "loadtests/locustfile.py", line 69, in recommend)`. Tasks catch grpc.RpcError themselves:
    the interceptor already counted it as a failed request."""
    runner = environment.runner
    found = sorted(runner.exceptions.values() if runner else (), key=lambda e: -e["count"])
    return [f"{e['count']} x {e['msg'] or 'an exception'} ({_where(e['traceback'])})" for e in found]


def _where(traceback: str) -> str:
    """The innermost frame of a formatted traceback in a locustfile (else the innermost)."""
    frames = [line.strip() for line in traceback.splitlines() if line.strip().startswith("File ")]
    ours = [f for f in frames if "loadtests" in f]
    return (ours or frames or ["no traceback"])[-1]


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, environment, timeout: float = CALL_TIMEOUT):
        self.env, self.timeout = environment, timeout

    def intercept_unary_unary(self, continuation, call_details, request):
        if getattr(self.env, "setup_failed", None):  # stopping at its start (`stop_run`): the
            raise StopUser()  # users spawned meanwhile made 1-2 failed calls, an error report
        if call_details.timeout is None:
            call_details = call_details._replace(timeout=self.timeout)
        started = time.perf_counter()
        response, exception, size = None, None, 0
        try:
            response = continuation(call_details, request)
            size = response.result().ByteSize()  # wait for the reply to time it
        except grpc.RpcError as err:
            exception = err
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.env.events.request.fire(
            request_type="grpc", name=call_details.method, response_time=elapsed_ms,
            response_length=size, response=response, context=None, exception=exception)
        return response


class GrpcUser(User):
    """Subclass with `stub_class` and @task methods calling `self.stub`; `start_calls(opts)`
    names one call of each method the tasks make that the server may refuse for all (`probe`,
    at test start)."""

    abstract = True
    stub_class = None

    @classmethod
    def start_calls(cls, opts) -> dict[str, StartCall]:
        return {}

    def __init__(self, environment):
        super().__init__(environment)
        if not self.host:
            raise LocustError("set --host 127.0.0.1:50051 (no scheme)")
        target = locust_target(self.host)
        opts = environment.parsed_options
        connection = Connection.from_args(opts) if hasattr(opts, "tls_ca") else Connection()
        timeout = getattr(opts, "call_timeout", CALL_TIMEOUT)
        self._channel = grpc.intercept_channel(channel(connection, target),
                                               LocustInterceptor(environment, timeout))
        self.stub = self.stub_class(self._channel)

    def on_stop(self):
        self._channel.close()
