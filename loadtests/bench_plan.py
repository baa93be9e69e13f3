"""PlanCampaign throughput on an audience, with Recommend's latency measured during the run.

    python -m loadtests.bench_plan [--audience 1000000] [--profiles 100000] [--batch 250]
        [--items 100000] [--demo-users 100000] [--duration 15] [--server-src DIR]

1. A demo bundle (`loadtests.bench.ensure_bundle`, cached under --work) and a data dir holding
   `--profiles` profiles (demo users "0".."P-1", 5 events each, stored through the server's own
   repository with fsync off: reads do not depend on how records were written; with
   --server-src, that tree's code stores them, in its own record layouts). The audience is
   the demo users "0".."A-1" (generated ids past the demo world's users): the first P have a
   profile, the rest none (the share is printed).
2. `python -m server` on loopback, one worker, the decision log durable (fsync per commit,
   `lmdb_sync` on), a bernoulli_ts push campaign of 10 arms with a warmed posterior: the contact
   policy reads every user's profile meta (push consent is opt-out by default, so users without
   a consent record pass) and the writer counts every decision in the user's contact log; with
   --profile-features it also logs two profile context features (every batch then reads its
   users' feature states and decodes each one, as ChooseVariant does per call).
3. The plan alone on a fifth of the audience's size (other user ids): users/s and server CPU
   per user (worker and decision-log writer); Recommend max QPS (closed loop) and its p99 at
   half that rate alone (open loop).
4. The audience planned in one PlanCampaign stream (batches of --batch ids), while a second
   load sends Recommend at the same half-max rate: users/s, server CPU per user, Recommend's p99
   during the run, and whether the plan outlasted the Recommend window. The decision count in
   GetCampaignStats is checked against the audience.

`--choose-rate R` also sends ChooseVariant on the plan's campaign at R/s, alone and beside the
plan (the third load: its decisions go through the same decision-log writer as the plan's).
`--recommend-rate R` fixes Recommend's rate (alone and during the plan) instead of half of the max
measured in the run, so runs of two settings on a shared machine load Recommend alike.

Targets (issue 15): >= 20,000 users/s; Recommend p99 <= 15 ms during the run. Use small sizes
(--audience 50000 --items 20000 --demo-users 20000 --profiles 20000) for a quick run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc

from .bench import ensure_bundle, serving
from .bench_campaigns import CHOOSE, choose_payloads
from .loadgen import CONNECTIONS, RECOMMEND, recommend_payloads, run_load
from .measure import (
    Measurement,
    add_server_src_argument,
    idle_cpu,
    measure,
    positive,
    print_table,
    tree_cpu_seconds,
)

CAMPAIGN = "plan-bench"
FEATURES = ("profile.recency_days", "profile.n_events")
TYPES = ("view", "click", "add_to_cart", "purchase")
WRITER = "server.campaigns.repository:writer_functions"


def populate(data_dir: Path, profiles: int) -> None:
    """Store `profiles` demo users (ids "0".."P-1", 5 events each) through the repository."""
    from server.profiles import ProfileSchema
    from server.profiles.events import TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.store import Store
    store = Store(data_dir / "store", map_size=16 << 30, sync=False)
    repo = ProfileRepository(store, ProfileSchema().layout())
    now, chunk = time.time(), 20_000
    for lo in range(0, profiles, chunk):
        evs = [TrackedEvent(f"p{u}-{j}", str(u), TYPES[j % 4], "web", "", f"{(u * 7 + j) % 1000}",
                            0.0, now - 3600 * j, {})
               for u in range(lo, min(lo + chunk, profiles)) for j in range(5)]
        repo.ingest(evs, [None] * len(evs))
    store.sync()
    store.close()


def populate_from(src: Path | None, data_dir: Path, profiles: int) -> None:
    """`populate` run by the server's own source tree (`--server-src`): records are stored in
    the layouts of the code that will serve them (an older tree refuses a store stamped with
    newer layouts)."""
    if src is None:
        populate(data_dir, profiles)
        return
    src = Path(src).resolve()
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from loadtests.bench_plan import populate; "
                    "populate(Path(sys.argv[1]), int(sys.argv[2]))", str(data_dir), str(profiles)],
                   cwd=src, env={**os.environ, "PYTHONPATH": str(src)}, check=True)


def create_campaign(target: str, features: tuple[str, ...], arms: int = 10) -> None:
    """The campaign, its posterior warmed by 50 rewarded pulls per arm."""
    with grpc.insecure_channel(target) as ch:
        stub = cgrpc.CampaignServiceStub(ch)
        spec = cpb.CampaignSpec(campaign_id=CAMPAIGN, channel="push", policy="bernoulli_ts",
                                context_features=features,
                                variants=[cpb.Variant(id=f"v{i}", content={"subject": f"s{i}"})
                                          for i in range(arms)],
                                rewards=[cpb.RewardRule(event_type="email_click", value=1.0)])
        stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec), timeout=10)
        rng = np.random.default_rng(0)
        for _ in range(50 * arms):
            d = stub.ChooseVariant(cpb.ChooseVariantRequest(campaign_id=CAMPAIGN, user_id="warm"))
            stub.ReportReward(cpb.ReportRewardRequest(
                decision_id=d.decision_id, reward=float(rng.random() < 0.05 + 0.01 * d.arm)))


async def plan(target: str, audience: int, batch: int, start: int = 0,
               rate: float = 0.0) -> tuple[int, float]:
    """(decisions answered, seconds) for users str(start)..str(start + audience - 1); with
    `rate`, batches are sent at that many users a second (paced from the stream's start)."""
    async def requests():
        for lo in range(start, start + audience, batch):
            if rate:
                await asyncio.sleep(max(0.0, t0 + (lo - start) / rate - time.perf_counter()))
            yield cpb.PlanCampaignRequest(campaign_id=CAMPAIGN if lo == start else "",
                                          user_ids=[str(u) for u in range(lo, min(lo + batch,
                                                                                   start + audience))])
    async with grpc.aio.insecure_channel(target) as ch:
        t0, n = time.perf_counter(), 0
        async for answer in cgrpc.CampaignServiceStub(ch).PlanCampaign(requests(), timeout=3600):
            n += len(answer.decisions)
        return n, time.perf_counter() - t0


def writer_cpu_seconds(data_dir: Path) -> float:
    """CPU seconds used so far by the campaigns writer process (the decision log's writer) of
    the server on `data_dir` (other servers' writers may run on the same machine)."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
                if WRITER.encode() in cmdline and str(data_dir).encode() in cmdline:
                    return tree_cpu_seconds(int(entry))
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
            continue
    return float("nan")


def logged_decisions(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        st = cgrpc.CampaignServiceStub(ch).GetCampaignStats(
            cpb.GetCampaignStatsRequest(campaign_id=CAMPAIGN), timeout=60)
    return sum(v.decisions for v in st.variants) + st.holdout_decisions


def plan_under_load(target: str, pid: int, args, rate: float, recs: list[bytes],
                    expected_s: float) -> tuple[Measurement, Measurement | None, int, float,
                                                float, bool]:
    """The audience planned while Recommend runs at `rate` in a second load (and, with
    `--choose-rate`, ChooseVariant in a third); returns the Recommend measurement, the
    ChooseVariant one (None without it), decisions, seconds, server CPU seconds of the plan,
    and whether the plan outlasted the Recommend window."""
    out: dict = {}
    duration = args.duration_during or max(2.0, 0.7 * expected_s)

    def recommend_load():
        out["rec"] = measure(f"Recommend @ {rate:.0f}/s during plan", pid, target, RECOMMEND, recs,
                             rate=rate, duration=duration, concurrency=args.concurrency, procs=1)
        out["rec_done"] = time.perf_counter()

    def choose_load():
        out["choose"] = measure(f"ChooseVariant @ {args.choose_rate:.0f}/s during plan", pid,
                                target, CHOOSE, choose_payloads(CAMPAIGN), rate=args.choose_rate,
                                duration=duration, concurrency=args.concurrency, procs=1)
    loaders = [threading.Thread(target=recommend_load)]
    if args.choose_rate:
        loaders.append(threading.Thread(target=choose_load))
    cpu0 = tree_cpu_seconds(pid)
    for loader in loaders:
        loader.start()
    n, seconds = asyncio.run(plan(target, args.audience, args.batch, start=0,
                                  rate=args.plan_rate))
    plan_done, cpu = time.perf_counter(), tree_cpu_seconds(pid) - cpu0
    for loader in loaders:
        loader.join()
    return out["rec"], out.get("choose"), n, seconds, cpu, out["rec_done"] <= plan_done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audience", type=positive(int), default=1_000_000)
    p.add_argument("--profiles", type=int, default=100_000, help="audience users with a profile")
    p.add_argument("--batch", type=int, default=250, help="user ids per PlanCampaign message")
    p.add_argument("--items", type=int, default=100_000, help="demo catalog of the bundle")
    p.add_argument("--demo-users", type=int, default=100_000, help="demo world users (bundle)")
    p.add_argument("--days", type=positive(int), default=30)
    p.add_argument("--duration", type=positive(float), default=15.0,
                   help="seconds of each Recommend run alone")
    p.add_argument("--duration-during", type=float, default=0.0,
                   help="seconds of the Recommend run during the plan (default 0.7x its expected time)")
    p.add_argument("--concurrency", type=positive(int), default=32)
    p.add_argument("--choose-rate", type=float, default=0.0,
                   help="also ChooseVariant on the plan's campaign at this rate, alone and beside "
                        "the plan (its decisions share the plan's decision-log writer)")
    p.add_argument("--recommend-rate", type=float, default=0.0,
                   help="Recommend calls/s beside the plan (default: half of the max measured in "
                        "this run; fix it to compare runs on a shared machine)")
    p.add_argument("--plan-rate", type=float, default=0.0,
                   help="users/s the audience is sent at beside Recommend (default: as fast as "
                        "the server answers); the plan alone always runs flat out")
    p.add_argument("--profile-features", action="store_true",
                   help="the campaign logs profile features (reads and decodes every state)")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for data and bundles")
    add_server_src_argument(p)
    args = p.parse_args(argv)
    if args.batch > 10_000:
        p.error("--batch: at most Limits.plan_batch_users (10000)")

    bundle = ensure_bundle(args.work, args.items, args.demo_users, args.days)
    data_dir = Path(tempfile.mkdtemp(prefix="tailor-bench-plan-"))
    t0 = time.perf_counter()
    populate_from(args.server_src, data_dir, args.profiles)
    print(f"stored {args.profiles} profiles in {time.perf_counter() - t0:.0f}s", flush=True)
    env = {"TAILOR_LMDB_SYNC": "true", "TAILOR_LMDB_MAP_SIZE": str(16 << 30)}
    with serving(bundle, workers=1, server_src=args.server_src, env=env, data_dir=data_dir,
                 stop_timeout=120) as srv:
        target, pid = srv.target, srv.process.pid
        create_campaign(target, FEATURES if args.profile_features else ())
        with np.load(bundle / "users.npz") as npz:
            recs = recommend_payloads([str(u) for u in npz["user_ids"][:20000]], k=10)
        run_load(target, RECOMMEND, recs, concurrency=8, duration=2)  # warm-up
        warm_n, _ = asyncio.run(plan(target, min(20_000, args.audience), args.batch,
                                     start=10**9))  # warm-up, users outside the audience
        idle = idle_cpu(pid)
        # alone: a fifth of the audience, other user ids
        cpu0, writer0 = tree_cpu_seconds(pid), writer_cpu_seconds(srv.data_dir)
        solo_n, solo_s = asyncio.run(plan(target, max(args.audience // 5, 1000), args.batch,
                                          start=2 * 10**9))
        solo_cpu = tree_cpu_seconds(pid) - cpu0
        solo_writer = writer_cpu_seconds(srv.data_dir) - writer0
        load = dict(duration=args.duration, concurrency=args.concurrency, procs=1)
        top = measure("Recommend k=10 (max)", pid, target, RECOMMEND, recs, **load)
        rate = args.recommend_rate or top.load.qps / 2
        alone = measure(f"Recommend @ {rate:.0f}/s alone", pid, target, RECOMMEND, recs,
                        rate=rate, **load)
        choose_alone = (measure(f"ChooseVariant @ {args.choose_rate:.0f}/s alone", pid, target,
                                CHOOSE, choose_payloads(CAMPAIGN), rate=args.choose_rate, **load)
                        if args.choose_rate else None)
        during, choose_during, n, seconds, cpu, covered = plan_under_load(
            target, pid, args, rate, recs,
            args.audience / min(solo_n / solo_s, args.plan_rate or float("inf")))
        chosen = sum(m.load.calls + CONNECTIONS for m in (choose_alone, choose_during) if m)
        logged = logged_decisions(target) - warm_n - solo_n - 500 - chosen
        share = min(args.profiles, args.audience) / args.audience
        print(f"\nserver: 1 worker, fsync on (durable decision log), source "
              f"{args.server_src or 'this tree'}; campaign context "
              f"{', '.join(FEATURES) if args.profile_features else 'none'}; "
              f"bundle {bundle.name} ({args.items} items); "
              f"machine shared with other jobs (figures vary run to run)")
        print_table([top, alone, during] + [m for m in (choose_alone, choose_during) if m],
                    idle=idle)
        print(f"\nPlanCampaign: {n} users ({share:.0%} with a profile) in {seconds:.1f}s = "
              f"{n / seconds:,.0f} users/s (target >= 20,000); batches of {args.batch}; "
              f"server CPU {cpu / n * 1e6:.1f} us/user (Recommend load included)")
        print(f"PlanCampaign alone (no other load): {solo_n} users in {solo_s:.1f}s = "
              f"{solo_n / solo_s:,.0f} users/s, server CPU {solo_cpu / solo_n * 1e6:.1f} us/user "
              f"(its whole process tree), of which the decision-log writer process "
              f"{solo_writer / solo_n * 1e6:.1f} us/user")
        print(f"decisions logged (GetCampaignStats): {logged} of {n}")
        print(f"Recommend p99 during the plan: {during.load.p99_ms:.2f} ms (target <= 15), alone "
              f"{alone.load.p99_ms:.2f} ms; the plan {'outlasted' if covered else 'ended before the end of'} "
              f"the Recommend window")
        if choose_during is not None:
            print(f"ChooseVariant p99 during the plan (its log shares the plan's writer): "
                  f"{choose_during.load.p99_ms:.2f} ms, alone {choose_alone.load.p99_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
