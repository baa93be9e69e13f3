"""Locust load test of RecommendationService/Recommend.

    locust -f loadtests/locustfile.py --headless -u 50 -r 25 -t 30s --host 127.0.0.1:50051 \
        --users-file users.txt --p99-ms 15 [--tls-ca ca.pem --cert me.pem --key me.key --token T] [--insecure]

Users are drawn from `--users-file` (one id per line, UTF-8; default: ids 0..N-1 with
`--user-count`, which the demo data uses) plus a share of unknown users (cold start); a file
that cannot be read, or a `--p99-ms` that is no finite number of ms 0 or more (nan), stops the
run before it starts (one `error:` line, exit 2; typed into the web UI's form, the start is
refused with the same line: `loadtests.options`). The run
exits non-zero when the aggregated p99 exceeds `--p99-ms`, any request failed, a task raised
before its call (an empty `--users-file`: logged as task errors) or no request was made.
"""
from __future__ import annotations

import logging
import math
import random

import grpc
from locust import constant, events, task

from loadtests.grpc_user import (
    GrpcUser,
    add_transport_options,
    is_worker,
    recommend_call,
    stopped_at_start,
    task_errors,
)
from loadtests.options import check
from protos.tailor.v1 import recommendation_pb2 as pb
from protos.tailor.v1 import recommendation_pb2_grpc as pb_grpc

logger = logging.getLogger("tailor.loadtests")
USER_IDS: list[str] = []


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--p99-ms", type=float, default=0.0,
                        help="fail the run if p99 exceeds this many ms (default 0: no target)")
    parser.add_argument("--users-file", default="", help="user ids to request, one per line")
    parser.add_argument("--user-count", type=int, default=50_000, help="ids 0..N-1 if no file")
    parser.add_argument("--cold-share", type=float, default=0.05, help="share of unknown users")
    parser.add_argument("--k", type=int, default=10, help="items per Recommend")
    add_transport_options(parser)


_READ: dict[str, list[str]] = {}
"""The users file the checks read last, by path: read once, then used at test start."""


@check
def _check_users_file(environment, opts) -> None:
    """A users file that cannot be read stops the run before any user starts: read at test
    start only, it failed as a traceback, and every task of the run then raised on the empty
    list (12,550 more in 5 s)."""
    if not opts.users_file:
        return
    try:
        with open(opts.users_file, encoding="utf-8") as fh:
            ids = [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ValueError(f"--users-file {opts.users_file}: {reason.lower()}") from None
    _READ.clear()
    _READ[opts.users_file] = ids


@check
def _check_target(environment, opts) -> None:
    """No p99 is above a target of nan (every run passed) and every one is above a negative
    target."""
    if not (math.isfinite(opts.p99_ms) and opts.p99_ms >= 0):
        raise ValueError(f"--p99-ms {opts.p99_ms:g}: not a finite number of ms, 0 or more "
                         "(0: no target)")


@events.test_start.add_listener
def _load_users(environment, **_):
    """The users of this run: the checked file's (the command line's or the web UI form's),
    else ids 0..N-1."""
    opts = environment.parsed_options
    if opts is None:  # an Environment built in code: its caller fills USER_IDS
        return
    if opts.users_file:
        USER_IDS[:] = _READ[opts.users_file]
    else:
        USER_IDS[:] = [str(i) for i in range(opts.user_count)]


@events.quitting.add_listener
def _check_p99(environment, **_):
    if stopped_at_start(environment):  # saying why
        return
    if is_worker(environment):  # the master judges the run
        return
    target = environment.parsed_options.p99_ms
    total = environment.stats.total
    p99 = total.get_response_time_percentile(0.99) if total.num_requests else float("inf")
    logger.info("requests=%d failures=%d p50=%.1fms p99=%.1fms", total.num_requests,
                total.num_failures, total.get_response_time_percentile(0.5) or 0, p99)
    errors = task_errors(environment)
    for line in errors:
        logger.error("task errors (no request made): %s", line)
    if total.num_failures or errors or not total.num_requests or (target and p99 > target):
        logger.error("FAILED: p99 %.1f ms (%s), %d failures, %d task errors", p99,
                     f"target {target:g} ms" if target else "no --p99-ms target",
                     total.num_failures, len(errors))
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0


class RecommendUser(GrpcUser):
    stub_class = pb_grpc.RecommendationServiceStub
    wait_time = constant(0)

    @classmethod
    def start_calls(cls, opts):
        """A server with no bundle refuses every Recommend: one at start says so and stops."""
        return {"Recommend": recommend_call(opts.k)}

    @task
    def recommend(self):
        opts = self.environment.parsed_options
        if random.random() < opts.cold_share:
            user = f"unknown-{random.getrandbits(48)}"
        else:
            user = random.choice(USER_IDS)
        try:
            self.stub.Recommend(pb.RecommendRequest(user_id=user, k=opts.k, channel="web"))
        except grpc.RpcError:
            pass  # counted as a failure by the interceptor
