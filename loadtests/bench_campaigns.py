"""ChooseVariant against an empty RPC, in one run against one server.

    python -m loadtests.bench_campaigns [--arms 10] [--duration 10] [--concurrency 32]
        [--procs 1] [--workers 1] [--policy bernoulli_ts] [--no-sync] [--server-src DIR]

Starts `python -m server` on loopback (fsync per commit unless --no-sync), creates a campaign,
then with the same driver (grpc.aio closed loop, `--procs` client processes):
1. Ping max QPS (the empty-RPC ceiling of this server on this machine),
2. ChooseVariant max QPS (decision + propensity + logged decision record committed),
3. ChooseVariant latency under load: open loop (Poisson arrivals) at 25%, 50% and 80% of its max
   QPS, latency from the send (the generator's lag behind its schedule printed beside it),
   each beside Ping at the same rate (what the machine and the gRPC stack alone cost at that load).
Every run also reports the server's CPU per call (its whole process tree, loadtests/measure.py),
and the closed-loop pair prints ChooseVariant/Ping ratios of QPS and of CPU per call.
Targets (issue 5): ChooseVariant QPS >= 0.5x Ping QPS; p99 <= 5 ms under load.

`--server-src DIR` runs the server from another source tree (cwd and PYTHONPATH=DIR, its kernels
built), so before/after figures of two commits come from one run of the same driver:

    git worktree add /tmp/before HEAD~1 && (cd /tmp/before && python setup.py build_ext --inplace)
    python -m loadtests.bench_campaigns --server-src /tmp/before; python -m loadtests.bench_campaigns
"""
from __future__ import annotations

import argparse
import random
import sys

import grpc
import numpy as np

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc

from .bench import serving
from .loadgen import PING, ping_payloads, run_load
from .measure import add_server_src_argument, compare, idle_cpu, measure, print_table

CHOOSE = "/tailor.v1.CampaignService/ChooseVariant"


def bench_users(n: int = 4096) -> list[str]:
    rng = random.Random(7)
    return [f"u{rng.randrange(10**6)}" for _ in range(n)]


def choose_payloads(campaign: str, n: int = 4096) -> list[bytes]:
    return [cpb.ChooseVariantRequest(campaign_id=campaign, user_id=u).SerializeToString()
            for u in bench_users(n)]


def grant_consent(target: str, users: list[str], channel: str = "email",
                  attributes=None) -> None:
    """Opt every user in to `channel` (email needs it by default), and set `attributes(i)`;
    256 calls in flight (thousands at once get cancelled)."""
    with grpc.insecure_channel(target) as ch:
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


def create_campaign(target: str, arms: int, policy: str) -> str:
    with grpc.insecure_channel(target) as ch:
        spec = cpb.CampaignSpec(campaign_id="bench", channel="email", policy=policy,
                                variants=[cpb.Variant(id=f"v{i}", content={"subject": f"subject {i}"})
                                          for i in range(arms)],
                                rewards=[cpb.RewardRule(event_type="email_click", value=1.0)])
        stub = cgrpc.CampaignServiceStub(ch)
        stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec), timeout=10)
        grant_consent(target, ["warm"])
        rng = np.random.default_rng(0)  # a non-trivial posterior: 50 rewarded pulls per arm
        for _ in range(50 * arms):
            d = stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="bench", user_id="warm"))
            stub.ReportReward(cpb.ReportRewardRequest(decision_id=d.decision_id,
                                                      reward=float(rng.random() < 0.05 + 0.01 * d.arm)))
    return "bench"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_campaigns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", type=int, default=10)
    p.add_argument("--policy", default="bernoulli_ts")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--no-sync", action="store_true", help="server without fsync per commit")
    add_server_src_argument(p)
    args = p.parse_args(argv)

    env = {"TAILOR_LMDB_SYNC": "false"} if args.no_sync else {}
    with serving(prefix="tailor-bench-campaigns-", workers=args.workers, server_src=args.server_src,
                 env=env, stop_timeout=60) as srv:
        target, pid = srv.target, srv.process.pid
        campaign = create_campaign(target, args.arms, args.policy)
        grant_consent(target, bench_users())  # an email campaign: users opted in first
        print(f"server: {args.workers} worker(s), fsync {'off' if args.no_sync else 'on'}, "
              f"source {args.server_src or 'this tree'}; campaign: {args.policy}, {args.arms} arms; "
              f"load: {args.procs} process(es), concurrency {args.concurrency}, "
              f"{args.duration:g}s per step", flush=True)
        common = dict(concurrency=args.concurrency, duration=args.duration, procs=args.procs)
        chooses, pings = choose_payloads(campaign), ping_payloads()
        run_load(target, CHOOSE, chooses, concurrency=8, duration=2)  # warm-up
        idle = idle_cpu(pid)
        pair = compare("ChooseVariant, closed loop (max QPS)", pid, target, CHOOSE, chooses, **common)
        rows = [pair.ping, pair.method]
        for frac in (0.25, 0.5, 0.8):
            rate = frac * pair.method.load.qps
            rows.append(measure(f"ChooseVariant, open loop {rate:.0f}/s", pid, target, CHOOSE,
                                chooses, rate=rate, **common))
            rows.append(measure(f"Ping, open loop {rate:.0f}/s (baseline)", pid, target, PING,
                                pings, rate=rate, **common))
        print_table(rows, pair, idle)
        print(f"ChooseVariant / Ping QPS = {pair.qps_ratio:.2f} (target >= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
