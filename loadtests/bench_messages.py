"""ComposeMessage (email, 4 recommended items) against Recommend and an empty RPC, in one run.

    python -m loadtests.bench_messages [--items 20000] [--users 20000] [--duration 10]
        [--concurrency 16] [--rounds 1] [--workers 1] [--no-sync] [--work .bench]
        [--server-src DIR] [--baseline-src DIR]

Trains (or reuses, under --work) a demo bundle, starts `python -m server` on loopback (fsync on)
with its public endpoint, creates an email campaign whose HTML shows
`recommend(4, category=interests[0] if interests else none)`, with the speed target's contact
rules (`bench_contact.contact_rules`: two frequency caps, checked and counted in every
decision's write transaction, and quiet hours), gives 2,000 users (or as many as the bundle has)
a few live views, a first name and an email opt-in (marketing email needs one: without it every
compose would be a suppressed decision), then measures with one generator, composing for them
(about ten messages a user in a run with the defaults: the caps are checked, not met):
1. Ping, ComposeMessage and Recommend k=4 max QPS (closed loop),
2. `--rounds` times, at half of ComposeMessage's max QPS (open loop): ComposeMessage (p99
   target <= 15 ms), Recommend k=4 and Ping at the same rate, each with its server CPU per call
   (loadtests/measure.py).
A composed message is a logged decision plus a Recommend plus rendering, so its CPU per call
is read against Recommend's; Ping's is what any call costs at that rate.

`--baseline-src DIR` starts a second server from another source tree (e.g. a worktree of the
commit before a change, kernels built there), set up the same way; each round then also runs
ComposeMessage on it at the same rate, before this server's in odd rounds and after it in even
ones (the second of two back-to-back runs was seen to fare worse), so before and after
come from one run on the same noise: take several rounds. It also composes at its own max
(closed loop) right after this server's step 1, so both have logged about as many decisions
before the rounds: each message reads and rewrites its user's contact history, which grows with
every decision, and without that step this server's compositions cost about 7% more CPU than the
baseline's for the same code (stop 40: the two trees swapped, 4 rounds each way).

Every composed message waits for its decision's durable write (the caps are checked in that
transaction): with fsync on, an LMDB commit syncs data and meta pages, so the disk's fsync time
is part of ComposeMessage's latency. `--no-sync` runs the servers without fsync per commit
(`TAILOR_LMDB_SYNC=false`, commits still survive a process crash) to read the rest apart.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc

from .bench import _free_port, ensure_bundle, serving
from .bench_contact import contact_rules
from .loadgen import PING, RECOMMEND, ping_payloads, recommend_payloads, run_load
from .measure import add_server_src_argument, compare, idle_cpu, measure, positive, print_table, source_tree

COMPOSE = "/tailor.v1.MessagingService/ComposeMessage"
HTML = """<p>Hi {{ first_name | default('there') }},</p><ul>
{% for it in recommend(4, category=interests[0] if interests else none) %}
<li><a href="{{ it.url }}"><img src="{{ it.image }}">{{ it.title }}</a>
{{ '%.2f' | format(it.price) }}</li>{% endfor %}</ul>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>"""


def setup(target: str, bundle: Path, n_live: int = 2000) -> list[str]:
    """The campaign, live profiles for `n_live` bundle users, opted in to email; returns them
    (the users to compose for)."""
    with np.load(bundle / "users.npz") as npz:
        users = [str(u) for u in npz["user_ids"][:20000]]
    with np.load(bundle / "items.npz") as npz:
        items = [str(i) for i in npz["item_ids"][:2000]]
    rng = random.Random(3)
    with grpc.insecure_channel(target) as ch:
        cgrpc.CampaignServiceStub(ch).CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id="mail", channel="email", policy="bernoulli_ts", variants=[
                cpb.Variant(id=f"v{i}", content={"subject": f"{i}: picked for {{{{ first_name | "
                                                 "default('you') }}", "html": HTML,
                                                 "text": "{{ unsubscribe_url }}"})
                for i in range(3)], **contact_rules())), timeout=30)
        prof = pgrpc.ProfileServiceStub(ch)
        now = time.time()
        for n, user in enumerate(users[:n_live]):
            prof.TrackEvents(ppb.TrackEventsRequest(events=[
                ppb.Event(event_id=f"b{n}-{k}", user_id=user, type="view",
                          item_id=rng.choice(items), timestamp=now - 600 + k) for k in range(3)]),
                timeout=30)
            prof.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id=user, attributes={"first_name": f"Name{n}"}), timeout=30)
            prof.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email", opted_in=True,
                                                  source="bench"), timeout=30)
    return users[:n_live]


def compose_payloads(users: list[str], n: int = 4096) -> list[bytes]:
    rng = random.Random(7)
    return [mpb.ComposeMessageRequest(campaign_id="mail", user_id=rng.choice(users))
            .SerializeToString() for _ in range(n)]


@contextlib.contextmanager
def _server(bundle: Path, src: Path | None, env: dict, workers: int = 1):
    """A server (from `src` if given, `workers` processes) with the campaign and users set up:
    (target, pid, users)."""
    flags = ["--public-http-port", str(_free_port()), "--public-url", "https://bench.example"]
    with serving(bundle, "tailor-bench-messages-", flags=flags, server_src=src, env=env,
                 workers=workers, stop_timeout=60) as srv:
        users = setup(srv.target, bundle)
        run_load(srv.target, COMPOSE, compose_payloads(users), concurrency=8, duration=2)  # warm-up
        yield srv.target, srv.process.pid, users


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_messages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=positive(int), default=20_000)
    p.add_argument("--users", type=positive(int), default=20_000)
    p.add_argument("--days", type=positive(int), default=30)
    p.add_argument("--duration", type=positive(float), default=10.0)
    p.add_argument("--concurrency", type=positive(int), default=16)
    p.add_argument("--rounds", type=positive(int), default=1, help="fixed-rate rounds (step 2)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--no-sync", action="store_true", help="servers without fsync per commit")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for data and bundles")
    add_server_src_argument(p)
    p.add_argument("--baseline-src", type=source_tree, default=None, metavar="DIR",
                   help="also compose on a server from this source tree in every round "
                        "(before/after in one run)")
    args = p.parse_args(argv)
    bundle = ensure_bundle(args.work, args.items, args.users, args.days)
    env = {"TAILOR_LMDB_SYNC": "false"} if args.no_sync else {}
    with contextlib.ExitStack() as stack:
        target, pid, users = stack.enter_context(_server(bundle, args.server_src, env, args.workers))
        base = (stack.enter_context(_server(bundle, args.baseline_src, env, args.workers))
                if args.baseline_src is not None else None)
        composes, recs = compose_payloads(users), recommend_payloads(users, k=4)
        print(f"bundle {bundle.name}: {args.items} items; {args.workers} worker(s); "
              f"fsync {'off' if args.no_sync else 'on'}; "
              f"load: concurrency {args.concurrency}, "
              f"{args.duration:g}s per step"
              + (f"; baseline server from {args.baseline_src}" if base else ""), flush=True)
        idle = idle_cpu(pid)
        common = dict(concurrency=args.concurrency, duration=args.duration)
        pair = compare("ComposeMessage email (max)", pid, target, COMPOSE, composes, **common)
        rows = [pair.ping, pair.method]
        if base is not None:  # as many decisions logged as this server's step 1 (docstring)
            b_target, b_pid, b_users = base
            rows.append(measure("baseline ComposeMessage email (max)", b_pid, b_target, COMPOSE,
                                compose_payloads(b_users), **common))
        rows.append(measure("Recommend k=4 (max)", pid, target, RECOMMEND, recs, **common))
        rate = pair.method.load.qps / 2
        halves, base_halves, rec_halves, ping_halves = [], [], [], []
        for r in range(1, args.rounds + 1):
            def base_run(r=r):
                b_target, b_pid, b_users = base
                base_halves.append(measure(f"baseline ComposeMessage @ {rate:.0f}/s, r{r}", b_pid,
                                           b_target, COMPOSE, compose_payloads(b_users), rate=rate,
                                           **common))
            # The baseline first in odd rounds, second in even ones: of two back-to-back runs the
            # second was seen to fare worse (the first one's writes still reaching the disk?).
            if base is not None and r % 2:
                base_run()
            halves.append(measure(f"ComposeMessage @ half max {rate:.0f}/s, r{r}", pid, target,
                                  COMPOSE, composes, rate=rate, **common))
            if base is not None and not r % 2:
                base_run()
            rec_halves.append(measure(f"Recommend k=4 @ {rate:.0f}/s, r{r}", pid, target,
                                      RECOMMEND, recs, rate=rate, **common))
            ping_halves.append(measure(f"Ping @ {rate:.0f}/s, r{r}", pid, target, PING,
                                       ping_payloads(), rate=rate, **common))
            rows += [*base_halves[-1:], halves[-1], rec_halves[-1], ping_halves[-1]]
        print_table(rows, pair, idle)
        for r, (half, rec, ping) in enumerate(zip(halves, rec_halves, ping_halves), 1):
            print(f"round {r}: ComposeMessage p99 at half max {half.load.p99_ms:.2f} ms (target "
                  f"<= 15); server CPU per call {half.cpu_us_per_call:.0f} us vs Recommend k=4 "
                  f"{rec.cpu_us_per_call:.0f} us (x{half.cpu_us_per_call / rec.cpu_us_per_call:.2f})"
                  f", Ping {ping.cpu_us_per_call:.0f} us"
                  + (f"; baseline p99 {base_halves[r - 1].load.p99_ms:.2f} ms, CPU per call "
                     f"{base_halves[r - 1].cpu_us_per_call:.0f} us" if base_halves else ""))
        print("median over the rounds: ComposeMessage " + _medians(halves)
              + (", baseline " + _medians(base_halves) if base_halves else "")
              + ", Recommend " + _medians(rec_halves) + ", Ping " + _medians(ping_halves))
    return 0


def _medians(runs: list) -> str:
    return (f"p99 {np.median([m.load.p99_ms for m in runs]):.2f} ms, CPU "
            f"{np.median([m.cpu_us_per_call for m in runs]):.0f} us/call")


if __name__ == "__main__":
    sys.exit(main())
