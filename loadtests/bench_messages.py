"""ComposeMessage (email, 4 recommended items) against Recommend and an empty RPC, in one run.

    python -m loadtests.bench_messages [--items 20000] [--users 20000] [--duration 10]
        [--concurrency 16] [--work .bench] [--server-src DIR]

Trains (or reuses, under --work) a demo bundle, starts `python -m server` on loopback (fsync on)
with its public endpoint, creates an email campaign whose HTML shows
`recommend(4, category=interests[0] if interests else none)`, gives 500 users a few live views,
a first name and an email opt-in (marketing email needs one: without it every compose would be
a suppressed decision), then measures with one generator, composing for those 500:
1. Ping, ComposeMessage and Recommend k=4 max QPS (closed loop),
2. ComposeMessage at half its max QPS (open loop): p99 (target <= 15 ms), beside Recommend k=4
   at the same rate, and the server CPU per call of each (loadtests/measure.py).
A composed message is a logged decision plus a Recommend plus rendering, so its CPU per call
is read against Recommend's. (The speed target's two caps and quiet hours are not configured
here yet.)
"""
from __future__ import annotations

import argparse
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
from .loadgen import RECOMMEND, recommend_payloads, run_load
from .measure import add_server_src_argument, compare, idle_cpu, measure, print_table

COMPOSE = "/tailor.v1.MessagingService/ComposeMessage"
HTML = """<p>Hi {{ first_name | default('there') }},</p><ul>
{% for it in recommend(4, category=interests[0] if interests else none) %}
<li><a href="{{ it.url }}"><img src="{{ it.image }}">{{ it.title }}</a>
{{ '%.2f' | format(it.price) }}</li>{% endfor %}</ul>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>"""


def setup(target: str, bundle: Path, n_live: int = 500) -> list[str]:
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
                for i in range(3)])), timeout=30)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_messages", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for data and bundles")
    add_server_src_argument(p)
    args = p.parse_args(argv)
    bundle = ensure_bundle(args.work, args.items, args.users, args.days)
    flags = ["--public-http-port", str(_free_port()), "--public-url", "https://bench.example"]
    with serving(bundle, "tailor-bench-messages-", flags=flags, server_src=args.server_src,
                 stop_timeout=60) as srv:
        target, pid = srv.target, srv.process.pid
        users = setup(target, bundle)
        composes, recs = compose_payloads(users), recommend_payloads(users, k=4)
        print(f"bundle {bundle.name}: {args.items} items; load: concurrency {args.concurrency}, "
              f"{args.duration:g}s per step", flush=True)
        run_load(target, COMPOSE, composes, concurrency=8, duration=2)  # warm-up
        idle = idle_cpu(pid)
        common = dict(concurrency=args.concurrency, duration=args.duration)
        pair = compare("ComposeMessage email (max)", pid, target, COMPOSE, composes, **common)
        rec_max = measure("Recommend k=4 (max)", pid, target, RECOMMEND, recs, **common)
        rate = pair.method.load.qps / 2
        half = measure(f"ComposeMessage @ half max {rate:.0f}/s", pid, target, COMPOSE,
                       composes, rate=rate, **common)
        rec_half = measure(f"Recommend k=4 @ {rate:.0f}/s", pid, target, RECOMMEND, recs,
                           rate=rate, **common)
        print_table([pair.ping, pair.method, rec_max, half, rec_half], pair, idle)
        print(f"ComposeMessage p99 at half max: {half.load.p99_ms:.2f} ms (target <= 15); server "
              f"CPU per call {half.cpu_us_per_call:.0f} us vs Recommend k=4 "
              f"{rec_half.cpu_us_per_call:.0f} us (x{half.cpu_us_per_call / rec_half.cpu_us_per_call:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
