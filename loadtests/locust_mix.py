"""Locust mixed workload: Recommend, ChooseVariant, TrackEvents, GetProfile and ComposeMessage,
each with a weight and a p99 SLO; the run exits non-zero when any method misses its SLO, any
call failed, a method with a weight made no call, or a task raised before its call (logged as
task errors: `--compose-users 0` leaves GetProfile, ChooseVariant and ComposeMessage no user
to call for).

    locust -f loadtests/locust_mix.py --headless -u 50 -r 25 -t 60s --host 127.0.0.1:50051 \
        [--weights Recommend=10,GetProfile=2] [--slo Recommend=15,'*=50'] \
        [--user-count 50000 --item-count 5000 --compose-users 200 --batch 10] \
        [--tls-ca ca.pem --cert me.pem --key me.key --token T]

Defaults are the `METHODS` table below; `--weights` and `--slo` override named methods (`*`
names every method: `--slo '*=0.001'` is an SLO no run can meet). At test start the campaign
(`--campaign`, an email campaign) is created unless it exists, and the first `--compose-users`
users are opted in to marketing email (without the opt-in every compose is a suppressed
decision); `--no-setup` skips both, for a server whose data must not change (the token then
needs no admin role). The set-up also previews the campaign when ComposeMessage has a weight: a
server without `--public-url` (`make serve`) cannot compose, and the run stops there, saying so
(`--weights ComposeMessage=0` leaves it out). A `--weights` or `--slo` naming no method or no
finite number (nan, inf) stops the run before it starts (exit 2; typed into the web UI's form,
the start is refused with the same line: `loadtests.options`); a set-up call the server
refuses, at its start (exit 1). Users are ids 0..N-1 (`--user-count`, as the demo data numbers them,
and TrackEvents' items ids 0..M-1, `--item-count`: the demo catalog's, so events name items the
served bundle knows, as production's do)
plus a share of unknown users (`--cold-share`) for Recommend; GetProfile, ChooseVariant and
ComposeMessage take the compose users (whom the setup gives a profile and the opt-in: a
ChooseVariant for anyone else is a suppressed decision, `no_consent`, which skips the bandit).
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass

import grpc
from locust import constant, events, task

from loadtests.grpc_user import (
    GrpcUser,
    add_transport_options,
    channel,
    is_worker,
    locust_target,
    recommend_call,
    stop_run,
    stopped_at_start,
    task_errors,
)
from loadtests.options import check
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import messaging_pb2_grpc as mgrpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rgrpc

__all__ = ["METHODS", "Method", "parse_overrides", "slo_misses", "MixUser"]

logger = logging.getLogger("tailor.loadtests")


@dataclass(frozen=True)
class Method:
    weight: float
    """Share of calls (relative to the other weights)."""
    p99_ms: float
    """SLO: the run fails when this method's p99 is above it."""
    path: str
    """The full gRPC method, as Locust's statistics name it."""


METHODS: dict[str, Method] = {
    "Recommend": Method(10, 25.0, "/tailor.v1.RecommendationService/Recommend"),
    "ChooseVariant": Method(4, 20.0, "/tailor.v1.CampaignService/ChooseVariant"),
    "TrackEvents": Method(4, 30.0, "/tailor.v1.ProfileService/TrackEvents"),
    "GetProfile": Method(2, 20.0, "/tailor.v1.ProfileService/GetProfile"),
    "ComposeMessage": Method(1, 40.0, "/tailor.v1.MessagingService/ComposeMessage"),
}
HTML = ("<p>Hi {{ first_name | default('there') }}</p><ul>{% for it in recommend(4) %}"
        "<li>{{ it.title }}</li>{% endfor %}</ul><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>")


def parse_overrides(text: str, what: str) -> dict[str, float]:
    """`"Recommend=10,*=5"` -> {"Recommend": 10.0, "*": 5.0}; unknown names are an error."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:  # nan is no bound: no p99 is above an SLO of nan, and a weight of nan is none
            if not sep or (name not in METHODS and name != "*") or not math.isfinite(float(value)):
                raise ValueError(part)
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--{what}: {part!r} is not METHOD=NUMBER (a finite number; "
                             f"methods: {', '.join(METHODS)}, or * for all)") from None
    return out


def _table(opts) -> dict[str, Method]:
    """METHODS with the run's --weights and --slo applied (a named method beats `*`)."""
    weights, slos = parse_overrides(opts.weights, "weights"), parse_overrides(opts.slo, "slo")

    def pick(over, name, default):
        return over.get(name, over.get("*", default))
    return {name: Method(pick(weights, name, m.weight), pick(slos, name, m.p99_ms), m.path)
            for name, m in METHODS.items()}


def slo_misses(stats, table: dict[str, Method]) -> list[str]:
    """One line per method whose p99 is over its SLO, that had failures, or that made no call
    although it has a weight."""
    misses = []
    for name, method in table.items():
        if method.weight <= 0:
            continue
        entry = stats.get(method.path, "grpc")
        if not entry.num_requests:
            misses.append(f"{name}: made no call (weight {method.weight:g})")
            continue
        p99 = entry.get_response_time_percentile(0.99)
        if p99 > method.p99_ms or entry.num_failures:
            misses.append(f"{name}: p99 {p99:.1f} ms (SLO {method.p99_ms:g} ms), "
                          f"{entry.num_failures} failed of {entry.num_requests}")
    return misses


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--weights", default="", help="METHOD=W,... over the default weights")
    parser.add_argument("--slo", default="", help="METHOD=P99_MS,... over the default SLOs (* = all)")
    parser.add_argument("--user-count", type=int, default=50_000, help="user ids 0..N-1")
    parser.add_argument("--item-count", type=int, default=5_000,
                        help="item ids 0..N-1 for events (default: the demo catalog's)")
    parser.add_argument("--cold-share", type=float, default=0.05, help="share of unknown users")
    parser.add_argument("--k", type=int, default=10, help="items per Recommend")
    parser.add_argument("--batch", type=int, default=10, help="events per TrackEvents")
    parser.add_argument("--campaign", default="loadmix", help="campaign to choose and compose for")
    parser.add_argument("--compose-users", type=int, default=200,
                        help="users 0..N-1 opted in to email at start and composed for")
    parser.add_argument("--no-setup", action="store_true",
                        help="neither create the campaign nor opt users in (read-mostly servers)")
    add_transport_options(parser)


class SetupError(Exception):
    """The server cannot serve the mix as asked (what and how to change it)."""


def _check_compose(channel: grpc.Channel, campaign: str) -> None:
    """SetupError when this server cannot compose (no unsubscribe link without --public-url,
    as `make serve` runs): every ComposeMessage of the run would fail. A preview asks without
    logging a decision."""
    try:
        mgrpc.MessagingServiceStub(channel).PreviewMessage(
            mpb.PreviewMessageRequest(campaign_id=campaign), timeout=30)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        raise SetupError(f"ComposeMessage would fail every call: {err.details()} "
                         "(or leave it out: --weights ComposeMessage=0)") from None


def _setup(channel: grpc.Channel, opts, compose: bool) -> None:
    """The email campaign (unless it exists), a check that the server can compose (when the
    mix does), and the email opt-ins of the compose users."""
    spec = cpb.CampaignSpec(campaign_id=opts.campaign, channel="email", policy="bernoulli_ts",
                            variants=[cpb.Variant(id=f"v{i}", content={
                                "subject": f"{i}: picked for {{{{ first_name | default('you') }}}}",
                                "html": HTML, "text": "{{ unsubscribe_url }}"}) for i in range(2)])
    campaigns = cgrpc.CampaignServiceStub(channel)
    try:  # the server answers a second CreateCampaign with FAILED_PRECONDITION: ask first
        campaigns.GetCampaign(cpb.GetCampaignRequest(campaign_id=opts.campaign), timeout=30)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec), timeout=30)
    if compose:
        _check_compose(channel, opts.campaign)
    profiles = pgrpc.ProfileServiceStub(channel)
    for n in range(opts.compose_users):
        profiles.SetConsent(ppb.SetConsentRequest(user_id=str(n), channel="email", opted_in=True,
                                                  source="loadtest"), timeout=30)
        profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=str(n), attributes={"email": f"user{n}@loadtest.invalid"}), timeout=30)


@check
def _check_table(environment, opts) -> None:
    """The run's table, before any user starts: a --weights or --slo naming no method or no
    finite number stops the run (`loadtests.options`). Read at test start only, it was a
    traceback and the run went on with the default table, whose SLOs then set the exit code."""
    _table(opts)


@events.test_start.add_listener
def _on_start(environment, **_):
    from clients.transport import Connection
    opts = environment.parsed_options
    if opts is None:  # an Environment built in code: the default table
        return
    mix = environment.mix = _table(opts)  # checked: the command line's or the web UI form's
    if getattr(environment, "setup_failed", None):  # the probe stopped the run: no server
        return
    if opts.no_setup or (mix["ComposeMessage"].weight <= 0 and mix["ChooseVariant"].weight <= 0):
        return
    try:
        with channel(Connection.from_args(opts), locust_target(environment.host)) as setup:
            _setup(setup, opts, compose=mix["ComposeMessage"].weight > 0)
    except grpc.RpcError as err:
        stop_run(environment, f"set-up: {err.code().name}: {err.details()}")
    except (SetupError, ValueError) as err:  # ValueError: a host typed in the web UI's form
        stop_run(environment, f"set-up: {err}")


@events.quitting.add_listener
def _check_slos(environment, **_):
    if stopped_at_start(environment):  # saying why
        return
    if is_worker(environment):  # the master judges the run
        return
    misses = slo_misses(environment.stats, getattr(environment, "mix", METHODS))
    total = environment.stats.total
    logger.info("requests=%d failures=%d", total.num_requests, total.num_failures)
    for line in misses:
        logger.error("SLO missed: %s", line)
    errors = task_errors(environment)
    for line in errors:
        logger.error("task errors (no request made): %s", line)
    environment.process_exit_code = 1 if misses or errors or not total.num_requests else 0


class MixUser(GrpcUser):
    """Each task picks a method by weight and calls it once."""

    stub_class = rgrpc.RecommendationServiceStub
    wait_time = constant(0)

    @classmethod
    def start_calls(cls, opts):
        """Recommend, when it has a weight: a server with no bundle refuses every one."""
        return {"Recommend": recommend_call(opts.k)} if _table(opts)["Recommend"].weight > 0 else {}

    def on_start(self):
        self.campaigns = cgrpc.CampaignServiceStub(self._channel)
        self.profiles = pgrpc.ProfileServiceStub(self._channel)
        self.messages = mgrpc.MessagingServiceStub(self._channel)
        self.opts = self.environment.parsed_options
        mix = getattr(self.environment, "mix", METHODS)
        self.names = [n for n, m in mix.items() if m.weight > 0]
        self.weights = [mix[n].weight for n in self.names]

    def _user(self) -> str:
        if random.random() < self.opts.cold_share:
            return f"unknown-{random.getrandbits(48)}"
        return str(random.randrange(self.opts.user_count))

    @task
    def call(self):
        try:
            getattr(self, "_" + random.choices(self.names, self.weights)[0])()
        except grpc.RpcError:
            pass  # counted as a failure by the interceptor

    def _Recommend(self):
        self.stub.Recommend(rpb.RecommendRequest(user_id=self._user(), k=self.opts.k, channel="web"))

    def _ChooseVariant(self):  # opted-in users: anyone else gets a suppressed decision
        self.campaigns.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id=self.opts.campaign, user_id=str(random.randrange(self.opts.compose_users))))

    def _TrackEvents(self):
        now, user = time.time(), str(random.randrange(self.opts.user_count))
        self.profiles.TrackEvents(ppb.TrackEventsRequest(events=[
            ppb.Event(event_id=f"lm-{random.getrandbits(64):x}", user_id=user, type="view",
                      item_id=str(random.randrange(self.opts.item_count)), timestamp=now)
            for _ in range(self.opts.batch)]))

    def _GetProfile(self):
        user = str(random.randrange(self.opts.compose_users))  # unknown users are NOT_FOUND
        self.profiles.GetProfile(ppb.GetProfileRequest(user_id=user, max_events=20))

    def _ComposeMessage(self):
        self.messages.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id=self.opts.campaign, user_id=str(random.randrange(self.opts.compose_users))))
