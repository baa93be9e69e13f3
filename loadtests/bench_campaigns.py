"""ChooseVariant against an empty RPC, in one run against one server.

    python -m loadtests.bench_campaigns [--arms 10] [--duration 10] [--concurrency 32]
        [--procs 1] [--workers 1] [--policy bernoulli_ts] [--no-sync] [--rounds 1] [--tls]
        [--rewards] [--request-ids] [--caps] [--server-src DIR] [--baseline-src DIR]

Starts `python -m server` on loopback (fsync per commit unless --no-sync), creates a campaign,
then with the same driver (grpc.aio closed loop, `--procs` client processes):
1. Ping max QPS (the empty-RPC ceiling of this server on this machine),
2. ChooseVariant max QPS (decision + propensity + logged decision record committed),
3. ChooseVariant latency under load: open loop (Poisson arrivals) at 25%, 50% and 80% of its max
   QPS, latency from the send (the generator's lag behind its schedule printed beside it),
   each beside Ping at the same rate (what the machine and the gRPC stack alone cost at that load).
Every run also reports the server's CPU per call (its whole process tree, loadtests/measure.py),
and the closed-loop pair prints ChooseVariant/Ping ratios of QPS and of CPU per call.
Targets (issue 5): ChooseVariant QPS >= 0.5x Ping QPS; p99 <= 5 ms under load; (issue 20)
ChooseVariant server CPU per call <= 1.6x Ping's.

`--rounds N` repeats step 1 N times, Ping first in odd rounds and second in even ones (of two
back-to-back runs on a shared machine the second often meets other load), and prints each
round's CPU ratio, their median, and the pooled ratio (all ChooseVariant CPU over all its calls,
against Ping's likewise): the figures to quote on a busy machine.

`--tls` serves over TLS with a bearer token the server checks, and makes every call that way,
Ping included (`bench.secured`; the token also holds the roles the set-up calls need: `admin`
creates the campaign, `tracker` sets consent): the setting issue 20's targets name.

`--caps` gives the campaign two frequency caps (`CAPS`: email 50 a day, any channel 100 a week,
as `bench_contact`'s checked campaign), so every decision's commit checks and counts them (the
contact history read, checked and written in the decisions' transaction); the posterior's
warm-up pulls then go to `WARM_PULLS_A_USER` a user, under the caps. Default: no caps, nothing
of them checked.

`--server-src DIR` runs the server from another source tree (cwd and PYTHONPATH=DIR, its kernels
built), so before/after figures of two commits come from one run of the same driver:

    git worktree add /tmp/before HEAD~1 && (cd /tmp/before && python setup.py build_ext --inplace)
    python -m loadtests.bench_campaigns --server-src /tmp/before; python -m loadtests.bench_campaigns

`--rewards` also runs ReportReward on each server after the rounds, each call rewarding one of
`--reward-decisions` decisions planned just before (PlanCampaign): closed loop, then open loop
at a quarter and at half of its max QPS; it prints its CPU per call against the same server's
Ping.

`--baseline-src DIR` starts a second server from another source tree, set up the same way, and
measures it in every round and at every open-loop rate too, beside this server's runs (the
rates from this server's max), so before and after come from one run on the same noise:

    python -m loadtests.bench_campaigns --rounds 4 --baseline-src /tmp/before
"""
from __future__ import annotations

import argparse
import contextlib
import random
import sys
import uuid
from pathlib import Path

import numpy as np

from clients.transport import Connection
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc

from .bench import Secured, secured_if, serving
from .loadgen import PING, ping_payloads, run_load
from .measure import (
    Comparison,
    Measurement,
    add_server_src_argument,
    idle_cpu,
    measure,
    positive,
    print_table,
    source_tree,
)

CHOOSE = "/tailor.v1.CampaignService/ChooseVariant"
REWARD = "/tailor.v1.CampaignService/ReportReward"


def bench_users(n: int = 4096) -> list[str]:
    rng = random.Random(7)
    return [f"u{rng.randrange(10**6)}" for _ in range(n)]


def choose_payloads(campaign: str, n: int = 4096, request_ids: bool = False) -> list[bytes]:
    """ChooseVariant requests for `n` users; `request_ids`: each with a new `request_id`, as the
    Python client sends (unique in this list and across calls: none repeats an earlier one, which
    the server would answer from its log), `REQUEST_ID_CALLS` of them cycling over the users."""
    if not request_ids:
        return [cpb.ChooseVariantRequest(campaign_id=campaign, user_id=u).SerializeToString()
                for u in bench_users(n)]
    users, run = bench_users(n), uuid.uuid4().hex[:16]
    return [cpb.ChooseVariantRequest(campaign_id=campaign, user_id=users[i % n],
                                     request_id=f"{run}{i:016x}").SerializeToString()
            for i in range(REQUEST_ID_CALLS)]


REQUEST_ID_CALLS = 131_072
"""Distinct request ids a `--request-ids` run sends (more calls than a 10 s run makes here)."""


def grant_consent(target: str, users: list[str], channel: str = "email",
                  attributes=None, connection: Connection | None = None) -> None:
    """Opt every user in to `channel` (email needs it by default), and set `attributes(i)`;
    256 calls in flight (thousands at once get cancelled)."""
    with (connection or Connection()).channel(target) as ch:
        stub = pgrpc.ProfileServiceStub(ch)
        for lo in range(0, len(users), 256):
            calls = [stub.SetConsent.future(ppb.SetConsentRequest(
                user_id=u, channel=channel, opted_in=True, source="bench"), timeout=60)
                for u in users[lo:lo + 256]]
            if attributes is not None:
                calls += [stub.UpsertAttributes.future(ppb.UpsertAttributesRequest(
                    user_id=u, attributes=attributes(lo + i)), timeout=60)
                    for i, u in enumerate(users[lo:lo + 256])]
            for call in calls:
                call.result()


CAPS = (("email", 50, 86400.0), ("*", 100, 7 * 86400.0))
"""`--caps`: (channel, most contacts, window in seconds) of each of the campaign's frequency caps."""
WARM_PULLS_A_USER = 40
"""With caps, the warm-up's pulls a user (under the tightest cap, which would suppress the rest)."""


def create_campaign(target: str, arms: int, policy: str,
                    connection: Connection | None = None, caps: bool = False) -> str:
    """The bench campaign, its posterior warmed by 50 rewarded pulls an arm (`caps`: with the
    frequency caps `CAPS`, the pulls spread over users `WARM_PULLS_A_USER` each)."""
    pulls = 50 * arms
    warm = [f"warm{i // WARM_PULLS_A_USER}" if caps else "warm" for i in range(pulls)]
    with (connection or Connection()).channel(target) as ch:
        spec = cpb.CampaignSpec(campaign_id="bench", channel="email", policy=policy,
                                variants=[cpb.Variant(id=f"v{i}", content={"subject": f"subject {i}"})
                                          for i in range(arms)],
                                rewards=[cpb.RewardRule(event_type="email_click", value=1.0)],
                                frequency_caps=[cpb.FrequencyCap(channel=c, max=m, window_seconds=w)
                                                for c, m, w in CAPS] if caps else [])
        stub = cgrpc.CampaignServiceStub(ch)
        stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec), timeout=10)
        grant_consent(target, sorted(set(warm)), connection=connection)
        rng = np.random.default_rng(0)  # a non-trivial posterior: 50 rewarded pulls per arm
        for user in warm:
            d = stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="bench", user_id=user))
            stub.ReportReward(cpb.ReportRewardRequest(decision_id=d.decision_id,
                                                      reward=float(rng.random() < 0.05 + 0.01 * d.arm)))
    return "bench"


def reward_payloads(target: str, campaign: str, n: int, connection: Connection | None = None,
                    seed: int = 0) -> list[bytes]:
    """ReportReward requests (reward 0 or 1) for `n` new decisions, planned for the bench
    users over and over through PlanCampaign: each decision is rewarded once (a second reward
    of a decision writes nothing, so a run must not outlast its payloads)."""
    users, rng = bench_users(), np.random.default_rng(seed)
    audience = [users[i % len(users)] for i in range(n)]
    batches = [audience[lo:lo + 1000] for lo in range(0, n, 1000)]
    requests = (cpb.PlanCampaignRequest(campaign_id=campaign if i == 0 else "", user_ids=b)
                for i, b in enumerate(batches))
    with (connection or Connection()).channel(target) as ch:
        ids = [d.decision_id for answer in cgrpc.CampaignServiceStub(ch).PlanCampaign(
            requests, timeout=600) for d in answer.decisions if not d.suppressed]
    return [cpb.ReportRewardRequest(decision_id=d, reward=float(r)).SerializeToString()
            for d, r in zip(ids, rng.random(len(ids)) < 0.1)]


def _rewarded(label: str, server, common: dict, n: int, seed: int) -> list[Measurement]:
    """ReportReward on one server, for the `n` decisions planned just before (the suppressed
    ones left out): closed loop on 60% of them, then open loop at a quarter and at half of that
    max QPS on the rest. Fails if a run made more calls than it had decisions (the rest would be
    repeats, which write nothing)."""
    target, pid, campaign, _ = server
    payloads = reward_payloads(target, campaign, n, common["connection"], seed)
    parts = np.split(np.array(payloads, dtype=object),
                     [int(0.6 * len(payloads)), int(0.75 * len(payloads))])
    runs = [measure(f"{label}ReportReward (max QPS)", pid, target, REWARD, list(parts[0]),
                    **common)]
    for frac, part in zip((0.25, 0.5), parts[1:]):
        rate = frac * runs[0].load.qps
        runs.append(measure(f"{label}ReportReward, open loop {rate:.0f}/s", pid, target, REWARD,
                            list(part), rate=rate, **common))
    for m, part in zip(runs, parts):
        if m.load.calls > len(part):
            raise SystemExit(f"ReportReward: {m.load.calls} calls for {len(part)} decisions: "
                             "raise --reward-decisions")
    return runs


SETUP_ROLES = ("decider", "admin", "tracker")
"""What `--tls`'s token holds: ChooseVariant and ReportReward, CreateCampaign, SetConsent."""


@contextlib.contextmanager
def _server(args, src: Path | None, env: dict, secure: Secured):
    """A server from `src` (default: this tree) with the bench campaign and its users opted in:
    (target, pid, campaign, whether ChooseVariant calls carry request ids)."""
    conn = secure.connection
    with serving(prefix="tailor-bench-campaigns-", workers=args.workers, server_src=src,
                 env=env, stop_timeout=60, flags=secure.flags, connection=conn) as srv:
        campaign = create_campaign(srv.target, args.arms, args.policy, conn, args.caps)
        grant_consent(srv.target, bench_users(), connection=conn)  # email: users opted in first
        run_load(srv.target, CHOOSE, choose_payloads(campaign), concurrency=8, duration=2,
                 connection=conn)  # warm-up
        yield srv.target, srv.process.pid, campaign, args.request_ids


def _pair(label: str, round_: int, server, common: dict) -> Comparison:
    """Ping and ChooseVariant closed loop on one server; Ping second in even rounds."""
    target, pid, campaign, ids = server
    runs = [lambda: measure(f"{label}Ping (empty RPC), round {round_}", pid, target, PING,
                            ping_payloads(), **common),
            lambda: measure(f"{label}ChooseVariant (max QPS), round {round_}", pid, target,
                            CHOOSE, choose_payloads(campaign, request_ids=ids), **common)]
    if round_ % 2 == 0:
        method, ping = runs[1](), runs[0]()
    else:
        ping, method = runs[0](), runs[1]()
    return Comparison(method, ping)


def _pooled(runs: list[Measurement]) -> float:
    """Server CPU seconds a call over all `runs` together (the steadier figure on a shared
    machine than any one run's)."""
    return sum(m.cpu_seconds for m in runs) / sum(m.load.calls for m in runs)


def _ratios(pairs: list[Comparison]) -> str:
    """ChooseVariant / Ping CPU per call of each round, their median, and pooled."""
    per = [c.cpu_ratio for c in pairs]
    pooled = [_pooled([c.method for c in pairs]), _pooled([c.ping for c in pairs])]
    return (", ".join(f"x{x:.2f}" for x in per)
            + f" (median x{np.median(per):.2f}, pooled x{pooled[0] / pooled[1]:.2f}: "
              f"{pooled[0] * 1e6:.1f} / {pooled[1] * 1e6:.1f} us)")


def _paced(label: str, server, rate: float, common: dict) -> list[Measurement]:
    """ChooseVariant then Ping in open loop at `rate` on one server."""
    target, pid, campaign, ids = server
    return [measure(f"{label}ChooseVariant, open loop {rate:.0f}/s", pid, target, CHOOSE,
                    choose_payloads(campaign, request_ids=ids), rate=rate, **common),
            measure(f"{label}Ping, open loop {rate:.0f}/s (baseline)", pid, target, PING,
                    ping_payloads(), rate=rate, **common)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_campaigns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", type=positive(int), default=10)
    p.add_argument("--policy", default="bernoulli_ts")
    p.add_argument("--duration", type=positive(float), default=10.0)
    p.add_argument("--concurrency", type=positive(int), default=32)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--no-sync", action="store_true", help="server without fsync per commit")
    p.add_argument("--rounds", type=positive(int), default=1, help="Ping/ChooseVariant pairs, alternated")
    p.add_argument("--tls", action="store_true",
                   help="TLS and a checked bearer token on every call, Ping included")
    add_server_src_argument(p)
    p.add_argument("--rewards", action="store_true",
                   help="also ReportReward (each server, after the rounds): at max QPS, against "
                        "Ping's CPU per call of the same server, then at a quarter and half of it")
    p.add_argument("--reward-decisions", type=positive(int), default=100_000,
                   help="decisions planned for --rewards (each rewarded once)")
    p.add_argument("--request-ids", action="store_true",
                   help="every ChooseVariant carries a new request_id, as the Python client's do "
                        "(the server checks and remembers each; default: none, as raw stubs send)")
    p.add_argument("--baseline-src", type=source_tree, default=None, metavar="DIR",
                   help="also measure a server from this source tree in every round and at "
                        "every rate (before/after in one run)")
    p.add_argument("--caps", action="store_true",
                   help="give the campaign two frequency caps (email 50/day, any channel "
                        "100/week), checked and counted in every decision's commit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    env = {"TAILOR_LMDB_SYNC": "false"} if args.no_sync else {}
    with contextlib.ExitStack() as stack:
        secure = secured_if(args.tls, stack, SETUP_ROLES)
        server = stack.enter_context(_server(args, args.server_src, env, secure))
        base = (stack.enter_context(_server(args, args.baseline_src, env, secure))
                if args.baseline_src is not None else None)
        print(f"server: {args.workers} worker(s), fsync {'off' if args.no_sync else 'on'}, "
              f"source {args.server_src or 'this tree'}; campaign: {args.policy}, {args.arms} arms; "
              f"load: {args.procs} process(es), concurrency {args.concurrency}, "
              f"{args.duration:g}s per step{'; TLS + token' if args.tls else ''}"
              f"{'; a request_id on every ChooseVariant' if args.request_ids else ''}"
              f"{'; two frequency caps' if args.caps else ''}"
              + (f"; baseline server from {args.baseline_src}" if base else ""), flush=True)
        common = dict(concurrency=args.concurrency, duration=args.duration, procs=args.procs,
                      connection=secure.connection)
        idle = idle_cpu(server[1])
        rows, pairs, base_pairs = [], [], []
        for r in range(1, args.rounds + 1):
            if base is not None:
                base_pairs.append(_pair("baseline ", r, base, common))
                rows += [base_pairs[-1].ping, base_pairs[-1].method]
            pairs.append(_pair("", r, server, common))
            rows += [pairs[-1].ping, pairs[-1].method]
        rewards = []
        if args.rewards:
            for label, srv, its in (("baseline ", base, base_pairs), ("", server, pairs)):
                if srv is not None:
                    runs = _rewarded(label, srv, common, args.reward_decisions, len(rewards))
                    rewards.append((label, runs[0], its))
                    rows += runs
        max_qps = float(np.median([c.method.load.qps for c in pairs]))
        for frac in (0.25, 0.5, 0.8):
            if base is not None:
                rows += _paced("baseline ", base, frac * max_qps, common)
            rows += _paced("", server, frac * max_qps, common)
        print_table(rows, pairs[0] if len(pairs) == 1 else None, idle)
        print("ChooseVariant / Ping server CPU per call, per round: " + _ratios(pairs)
              + " (target <= 1.6)")
        if base_pairs:
            print("baseline server, per round: " + _ratios(base_pairs))
        for label, m, its in rewards:
            ping = _pooled([c.ping for c in its])
            print(f"{label or 'this '}server: ReportReward / Ping server CPU per call "
                  f"{m.cpu_us_per_call:.1f} / {ping * 1e6:.1f} us = x{m.cpu_us_per_call / (ping * 1e6):.2f}")
        print(f"ChooseVariant / Ping QPS = "
              f"{np.median([c.qps_ratio for c in pairs]):.2f} (median; target >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
