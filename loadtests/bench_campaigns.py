"""ChooseVariant against an empty RPC, in one run against one server.

    python -m loadtests.bench_campaigns [--arms 10] [--duration 10] [--concurrency 32]
        [--procs 1] [--workers 1] [--policy bernoulli_ts] [--no-sync]

Starts `python -m server` on loopback (fsync per commit unless --no-sync), creates a campaign,
then with the same driver (grpc.aio closed loop, `--procs` client processes):
1. Ping max QPS (the empty-RPC ceiling of this server on this machine),
2. ChooseVariant max QPS (decision + propensity + logged decision record committed),
3. ChooseVariant latency under load: open loop (Poisson arrivals) at 25%, 50% and 80% of its max
   QPS, latency from the send (the generator's lag behind its schedule printed beside it),
   each beside Ping at the same rate (what the machine and the gRPC stack alone cost at that load).
Targets (issue 5): ChooseVariant QPS >= 0.5x Ping QPS; p99 <= 5 ms under load.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc

from .bench import _free_port, _wait_ready
from .loadgen import PING, LoadResult, ping_payloads, run_load

CHOOSE = "/tailor.v1.CampaignService/ChooseVariant"


def choose_payloads(campaign: str, n: int = 4096) -> list[bytes]:
    rng = random.Random(7)
    return [cpb.ChooseVariantRequest(campaign_id=campaign, user_id=f"u{rng.randrange(10**6)}")
            .SerializeToString() for _ in range(n)]


def _show(label: str, r: LoadResult) -> None:
    paced = (f"  [generator lag p99 {r.lag_p99_ms:.2f} ms; p99 from schedule {r.sched_p99_ms:.2f} ms]"
             if r.sched_p99_ms else "")
    print(f"{label:<34} {r.qps:>9.0f} qps  p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms"
          f"  ({r.calls} calls, {r.errors} errors){paced}", flush=True)


def create_campaign(target: str, arms: int, policy: str) -> str:
    with grpc.insecure_channel(target) as ch:
        spec = cpb.CampaignSpec(campaign_id="bench", channel="email", policy=policy,
                                variants=[cpb.Variant(id=f"v{i}", content={"subject": f"subject {i}"})
                                          for i in range(arms)],
                                rewards=[cpb.RewardRule(event_type="email_click", value=1.0)])
        stub = cgrpc.CampaignServiceStub(ch)
        stub.CreateCampaign(cpb.CreateCampaignRequest(spec=spec), timeout=10)
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
    args = p.parse_args(argv)

    port = _free_port()
    target = f"127.0.0.1:{port}"
    data_dir = Path(tempfile.mkdtemp(prefix="tailor-bench-campaigns-"))
    cmd = [sys.executable, "-m", "server", "--port", str(port), "--data-dir", str(data_dir),
           "--workers", str(args.workers)]
    env = {"TAILOR_LMDB_SYNC": "false"} if args.no_sync else {}

    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **env})
    try:
        _wait_ready(target, server)
        campaign = create_campaign(target, args.arms, args.policy)
        print(f"server: {args.workers} worker(s), fsync {'off' if args.no_sync else 'on'}; campaign: "
              f"{args.policy}, {args.arms} arms; load: {args.procs} process(es), "
              f"concurrency {args.concurrency}, {args.duration:g}s per step", flush=True)
        common = dict(concurrency=args.concurrency, duration=args.duration, procs=args.procs)
        chooses, pings = choose_payloads(campaign), ping_payloads()
        run_load(target, CHOOSE, chooses, concurrency=8, duration=2)  # warm-up
        ping = run_load(target, PING, pings, **common)
        _show("Ping, closed loop (max QPS)", ping)
        choose = run_load(target, CHOOSE, chooses, **common)
        _show("ChooseVariant, closed loop (max QPS)", choose)
        for frac in (0.25, 0.5, 0.8):
            rate = frac * choose.qps
            _show(f"ChooseVariant, open loop {rate:.0f}/s", run_load(target, CHOOSE, chooses, rate=rate, **common))
            _show(f"Ping, open loop {rate:.0f}/s (baseline)", run_load(target, PING, pings, rate=rate, **common))
        print(f"ChooseVariant / Ping QPS = {choose.qps / ping.qps:.2f} (target >= 0.5)")
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
