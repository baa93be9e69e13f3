"""ChooseVariant with every contact check on against the plain ChooseVariant, in one run.

    python -m loadtests.bench_contact [--arms 10] [--duration 10] [--concurrency 32]
        [--procs 1] [--workers 1] [--rounds 2] [--no-sync] [--server-src DIR]
        [--baseline-src DIR]

Starts `python -m server` on loopback, creates two campaigns over the same 4,096 users:
- "plain": a web campaign with no contact rules: nothing to check, today's ChooseVariant path;
- "checked": an email campaign (consent: opt-in required, every user opted in first; each
  user has an `email` attribute looked up on the suppression list, 1 in 16 of them listed), two
  frequency caps (email 50/day, any channel 100/week: checked and counted in the decisions'
  write transaction) and quiet hours 21:00-08:00 with `defer`, the users spread over eight time
  zones (`timezone` attribute), so some decisions are deferred.
Then, with the same driver (grpc.aio closed loop), alternates plain and checked `--rounds` times
and prints the server CPU per call of each (its whole process tree, loadtests/measure.py) and
their ratio (target <= 1.3), then the checked ChooseVariant in open loop at a quarter of its max
QPS (target p99 <= 5 ms), beside the plain one at the same rate. The machine may be shared:
read the ratio of one run, and the spread between rounds, not the absolute figures.

`--baseline-src DIR` starts a second server from another source tree (e.g. a worktree of the
commit before a change), set up the same way, and measures it in each round too (its plain and
checked runs beside this server's), so before and after come from one run: each round then
prints both ratios, and the run their medians. With `--baseline-plain`, the baseline runs the
plain campaign only (a tree from before the contact policy, which has neither contact rules nor
a suppression list): each round then also prints this server's checked ChooseVariant against
the baseline's plain one, the issue's "1.3x today's ChooseVariant" read as the code of the day
it was filed.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import grpc
import numpy as np

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc

from .bench import serving
from .bench_campaigns import CHOOSE, bench_users, choose_payloads, grant_consent
from .measure import (
    Measurement,
    add_server_src_argument,
    idle_cpu,
    measure,
    positive,
    print_table,
    source_tree,
)

ZONES = ("UTC", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo",
         "Australia/Sydney", "Asia/Kolkata", "America/Sao_Paulo")
DAY = 86400.0


def contact_rules() -> dict:
    """The checked campaign's contact rules (CampaignSpec fields): two frequency caps (email
    50/day, any channel 100/week) and quiet hours 21:00-08:00 with `defer`."""
    return dict(frequency_caps=[cpb.FrequencyCap(channel="email", max=50, window_seconds=DAY),
                                cpb.FrequencyCap(channel="*", max=100, window_seconds=7 * DAY)],
                quiet_hours=cpb.QuietHours(start="21:00", end="08:00", action="defer"))


def contact_spec(campaign_id: str, arms: int, checked: bool) -> cpb.CampaignSpec:
    variants = [cpb.Variant(id=f"v{i}", content={"subject": f"subject {i}"}) for i in range(arms)]
    if not checked:
        return cpb.CampaignSpec(campaign_id=campaign_id, channel="web", variants=variants,
                                rewards=[cpb.RewardRule(event_type="click", value=1.0)])
    return cpb.CampaignSpec(
        campaign_id=campaign_id, channel="email", variants=variants,
        rewards=[cpb.RewardRule(event_type="email_click", value=1.0)], **contact_rules())


def setup(target: str, arms: int, plain_only: bool = False) -> None:
    """Both campaigns (the plain one only, with `plain_only`), their users' consent and zones,
    and a non-trivial posterior each."""
    users = bench_users()
    grant_consent(target, users, attributes=lambda i: {"timezone": ZONES[i % len(ZONES)],
                                                       "email": f"{users[i]}@bench.example"})
    rng = np.random.default_rng(0)
    with grpc.insecure_channel(target) as ch:
        profiles = pgrpc.ProfileServiceStub(ch)
        for u in () if plain_only else users[::16]:
            profiles.AddSuppression(ppb.AddSuppressionRequest(
                address=ppb.SuppressionAddress(email=f"{u}@bench.example")), timeout=10)
        stub = cgrpc.CampaignServiceStub(ch)
        for cid, checked in (("plain", False),) + (() if plain_only else (("checked", True),)):
            stub.CreateCampaign(cpb.CreateCampaignRequest(spec=contact_spec(cid, arms, checked)),
                                timeout=10)
            for i in range(20 * arms):  # rewarded pulls (users vary: the caps stay far)
                d = stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id=cid, user_id=users[i]))
                if not d.suppressed:
                    stub.ReportReward(cpb.ReportRewardRequest(
                        decision_id=d.decision_id, reward=float(rng.random() < 0.05 + 0.01 * d.arm)))


@contextlib.contextmanager
def _server(args, src: Path | None, env: dict, plain_only: bool = False):
    """A set-up server from `src` (default: this tree): (target, pid)."""
    with serving(prefix="tailor-bench-contact-", workers=args.workers, server_src=src, env=env,
                 stop_timeout=60) as served:
        setup(served.target, args.arms, plain_only)
        yield served.target, served.process.pid


def _pair(label: str, round_: int, server, common: dict, plain_only: bool = False
          ) -> tuple[Measurement, ...]:
    """(plain, checked) on one server, one after the other ((plain,) with `plain_only`)."""
    target, pid = server
    return tuple(measure(f"{label}{cid} ChooseVariant, round {round_}", pid, target, CHOOSE,
                         choose_payloads(cid), **common)
                 for cid in ("plain",) + (() if plain_only else ("checked",)))


def _ratios(pairs: list[tuple[Measurement, Measurement]]) -> str:
    """Checked / plain CPU per call of each round, their median, and pooled over the rounds
    (all checked CPU per call over all plain: the steadier figure on a shared machine)."""
    per = [b.cpu_us_per_call / a.cpu_us_per_call for a, b in pairs]
    cpu = [sum(m.cpu_seconds for m in side) / sum(m.load.calls for m in side)
           for side in zip(*pairs)]
    return (", ".join(f"x{x:.2f}" for x in per)
            + f" (median x{np.median(per):.2f}, pooled x{cpu[1] / cpu[0]:.2f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_contact", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", type=positive(int), default=10)
    p.add_argument("--duration", type=positive(float), default=10.0)
    p.add_argument("--concurrency", type=positive(int), default=32)
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--rounds", type=positive(int), default=2, help="plain/checked pairs, alternated")
    p.add_argument("--no-sync", action="store_true", help="server without fsync per commit")
    add_server_src_argument(p)
    p.add_argument("--baseline-src", type=source_tree, default=None, metavar="DIR",
                   help="also measure a server from this source tree in every round (before/after "
                        "in one run)")
    p.add_argument("--baseline-plain", action="store_true",
                   help="the baseline runs the plain campaign only (a tree without the contact "
                        "policy); rounds also print checked here / plain there")
    args = p.parse_args(argv)
    if args.baseline_plain and args.baseline_src is None:
        p.error("--baseline-plain: needs --baseline-src")

    env = {"TAILOR_LMDB_SYNC": "false"} if args.no_sync else {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(_server(args, args.server_src, env))
        base = (stack.enter_context(_server(args, args.baseline_src, env, args.baseline_plain))
                if args.baseline_src is not None else None)
        print(f"server: {args.workers} worker(s), fsync {'off' if args.no_sync else 'on'}; "
              f"{args.arms} arms; load: {args.procs} process(es), concurrency {args.concurrency}, "
              f"{args.duration:g}s per step"
              + (f"; baseline server from {args.baseline_src}" if base else ""), flush=True)
        common = dict(concurrency=args.concurrency, duration=args.duration, procs=args.procs)
        idle = idle_cpu(server[1])
        rows, pairs, base_pairs = [], [], []
        for r in range(args.rounds):
            if base is not None:
                base_pairs.append(_pair("baseline ", r + 1, base, common, args.baseline_plain))
                rows += base_pairs[-1]
            pairs.append(_pair("", r + 1, server, common))
            rows += pairs[-1]
        checked_rows = [m for m in rows if m.name.startswith("checked")]
        rate = 0.25 * np.mean([m.load.qps for m in checked_rows])
        target, pid = server
        rows.append(measure(f"checked, open loop {rate:.0f}/s", pid, target, CHOOSE,
                            choose_payloads("checked"), rate=rate, **common))
        rows.append(measure(f"plain, open loop {rate:.0f}/s (baseline)", pid, target, CHOOSE,
                            choose_payloads("plain"), rate=rate, **common))
        print_table(rows, None, idle)
        print("checked / plain server CPU per call, per round: " + _ratios(pairs)
              + " (target <= 1.3)")
        if base_pairs and args.baseline_plain:
            print("checked here / the baseline's plain, per round: "
                  + _ratios([(b[0], c) for b, (_, c) in zip(base_pairs, pairs)]) + " (target <= 1.3)")
        elif base_pairs:
            print("baseline server, per round: " + _ratios(base_pairs))
        print(f"checked ChooseVariant p99 at a quarter of its max: {rows[-2].load.p99_ms:.2f} ms "
              f"(target <= 5 ms; plain at the same rate: {rows[-1].load.p99_ms:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
