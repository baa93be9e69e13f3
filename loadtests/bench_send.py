"""SendCampaign to a real SMTP server (aiosmtpd) on loopback: emails/s unthrottled, and the
achieved rate at a configured rate.

    python -m loadtests.bench_send [--users 1500] [--rate 50] [--seconds 10] [--full]
        [--work .bench] [--server-src DIR]

Trains (or reuses, under --work) a small demo bundle, starts `python -m server` on loopback
(fsync on) with the sink as its relay (plain SMTP, loopback), gives each audience an email
address and email consent, then:
1. unthrottled (rate = limits.send_rate_per_second): emails/s from the first to the last
   arrival at the sink, and from the SendCampaign call to `done` (target >= 300/s), with the
   server's CPU per email;
2. at `--rate` for `--seconds` (`--full`: 60 s, the acceptance run): the achieved rate between
   the first and the last arrival (target within +-5%).
The sink runs in this process and shares the machine's cores with the server (and, on a
shared machine, with whatever else runs): the figures are a floor.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cgrpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import messaging_pb2_grpc as mgrpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc

from .bench import _free_port, ensure_bundle, serving
from .measure import add_server_src_argument, tree_cpu_seconds
from .smtp_sink import SmtpSink

UNTHROTTLED = 10_000.0
"""The highest rate a request may ask for (`Limits.send_rate_per_second`)."""
SPEC = cpb.CampaignSpec(campaign_id="bench-mail", channel="email", policy="fixed", variants=[
    cpb.Variant(id="v1", content={
        "subject": "Hi {{ first_name | default('there') }}, new for you",
        "html": "<p>Hi {{ first_name | default('there') }},</p><p>{{ interests | join(', ') }}"
                "</p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>",
        "text": "Hi {{ first_name | default('there') }}: {{ unsubscribe_url }}"})])


def setup(target: str, users: list[str]) -> None:
    with grpc.insecure_channel(target) as ch:
        cgrpc.CampaignServiceStub(ch).CreateCampaign(cpb.CreateCampaignRequest(spec=SPEC),
                                                     timeout=30)
        prof = pgrpc.ProfileServiceStub(ch)
        for n, user in enumerate(users):
            prof.UpsertAttributes(ppb.UpsertAttributesRequest(user_id=user, attributes={
                "first_name": f"Name{n}", "email": f"{user}@bench.example"}), timeout=30)
            prof.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email", opted_in=True,
                                                  source="bench"), timeout=30)


def send(target: str, sink: SmtpSink, users: list[str], rate: float) -> tuple[float, float]:
    """Send to `users` at `rate`; (seconds first→last arrival, seconds call→done)."""
    before = len(sink.arrived)
    with grpc.insecure_channel(target) as ch:
        stub = mgrpc.MessagingServiceStub(ch)
        t0 = time.monotonic()
        send_id = stub.SendCampaign(mpb.SendCampaignRequest(
            campaign_id=SPEC.campaign_id, user_ids=users, rate_per_second={"email": rate}),
            timeout=60).send_id
        while True:
            got = stub.GetSendProgress(mpb.GetSendProgressRequest(send_id=send_id), timeout=30)
            if got.done:
                break
            time.sleep(0.05)
        t_done = time.monotonic() - t0
    if got.sent != len(users):
        raise SystemExit(f"sent {got.sent} of {len(users)}: {got}")
    times = [t for t, _, _ in sink.arrived[before:]]
    return times[-1] - times[0], t_done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_send", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=1500, help="audience of the unthrottled run")
    p.add_argument("--rate", type=float, default=50.0, help="configured rate of the second run")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the second run")
    p.add_argument("--full", action="store_true", help="the acceptance sizes: 60 s at --rate, "
                   "3000 users unthrottled")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for data and bundles")
    add_server_src_argument(p)
    args = p.parse_args(argv)
    if args.full:
        args.seconds, args.users = 60.0, max(args.users, 3000)
    bundle = ensure_bundle(args.work, 2000, 2000, 30)
    rated = int(args.rate * args.seconds) + 1
    fast = [f"bench-{i}" for i in range(args.users)]
    slow = [f"bench-r{i}" for i in range(rated)]
    with SmtpSink(_free_port(), keep_mails=False) as sink:
        env = {"TAILOR_SMTP_HOST": "127.0.0.1", "TAILOR_SMTP_PORT": str(sink.controller.port),
               "TAILOR_SMTP_SECURITY": "none", "TAILOR_PUBLIC_URL": "https://bench.example"}
        with serving(bundle, "tailor-bench-send-", server_src=args.server_src, env=env,
                     stop_timeout=60) as srv:
            target, pid = srv.target, srv.process.pid
            setup(target, fast + slow)
            print("SendCampaign to aiosmtpd on loopback (plain SMTP, fsync on); machine shared "
                  "with other jobs, sink in the bench process", flush=True)
            cpu0 = tree_cpu_seconds(pid)
            span, total = send(target, sink, fast, UNTHROTTLED)
            cpu = tree_cpu_seconds(pid) - cpu0
            print(f"unthrottled: {len(fast)} emails, {(len(fast) - 1) / span:.0f} emails/s "
                  f"first->last arrival, {len(fast) / total:.0f}/s call->done (target >= 300); "
                  f"server CPU {cpu / len(fast) * 1e3:.2f} ms/email", flush=True)
            span, _ = send(target, sink, slow, args.rate)
            achieved = (rated - 1) / span
            print(f"rate {args.rate:g}/s over {span:.1f} s: achieved {achieved:.2f}/s "
                  f"({(achieved / args.rate - 1) * 100:+.2f}%, target within +-5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
