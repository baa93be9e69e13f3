"""TrackEventStream's floor: what a stream costs an event before anything is stored, beside Tailor.

    python -m loadtests.stream_floor [--events 100000] [--users 20000] [--rounds 3] [--tls]

Issue 20 asks for 5 us of server CPU an event at batches of 500. This bench says how much of
that the parts no store layout can remove take, on this machine, in one run. Three servers on
loopback get the same events in batches of 500 over one TrackEventStream each (the
`bench_profiles` driver), the servers alternated every round, each one's CPU (its whole process
tree) read around its stream:

  1. transport: a grpc.aio server (this module's `serve`) whose TrackEventStream reads each
     message and counts its events, nothing else: gRPC, HTTP/2, TLS and protobuf parsing, the
     floor of any server on grpcio's aio API;
  2. convert: the same server, also doing the server's own per-event work before a write:
     `ProfileConverter.to_events` and `check_event` (the default rules), nothing stored;
  3. tailor: `python -m server` with every default (fsync per commit, encryption at rest).

Then the raw LMDB puts of `bench_profiles` (`server.store.baseline`: one record an event,
batches of 500, the same durability, in this process), as CPU a record: the store's own cost of
one record. Each round streams new event ids of new users (Tailor's store grows by a round's).
`convert` plus that is what the cheapest possible Tailor ingestion would cost (a single record
an event and no profile work), against the 5 us target.

With `--tls` every server listens over TLS and the generator sends `bench.secured`'s bearer
token (the floor servers take it unchecked: a token is checked once a call, not an event).
"""
from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc

from .bench import Secured, _free_port, _wait_ready, secured
from .bench_profiles import BATCH, TLS_ROLES, make_events, raw_lmdb, serve, stream_ingest
from .measure import positive, settle, stop_on_sigterm, tree_cpu_seconds

LEVELS = ("transport", "convert")


class _Floor(pb_grpc.ProfileServiceServicer):
    """TrackEventStream only: every message read and its events counted (`convert`: also
    converted and checked as the server does before its write)."""

    def __init__(self, level: str):
        from server.limits import DEFAULT_LIMITS
        from server.profiles.events import EventRules, check_event
        from server.services.profile import ProfileConverter
        self.convert = level == "convert"
        self.most = DEFAULT_LIMITS.events_per_batch
        self.to_events, self.check, self.rules = ProfileConverter.to_events, check_event, EventRules()

    async def TrackEventStream(self, request_iterator, context) -> pb.TrackEventsResponse:
        accepted = 0
        async for request in request_iterator:
            if not self.convert:
                accepted += len(request.events)
                continue
            now = time.time()
            accepted += sum(self.check(ev, self.rules, now) is None
                            for ev in self.to_events(request, self.most))
        return pb.TrackEventsResponse(accepted=accepted)


async def _serve(port: int, level: str, cert: Path | None, key: Path | None) -> None:
    from grpc_health.v1 import health, health_pb2_grpc
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 24 << 20)])
    pb_grpc.add_ProfileServiceServicer_to_server(_Floor(level), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    address = f"127.0.0.1:{port}"
    if cert is not None:
        credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def start_floor(level: str, secure: Secured) -> tuple[subprocess.Popen, str]:
    """`serve` at `level` in a process of its own, on a free loopback port, once it answers."""
    stop_on_sigterm()
    port = _free_port()
    flags = dict(zip(secure.flags[::2], secure.flags[1::2]))
    tls = ["--tls-cert", flags["--tls-cert"], "--tls-key", flags["--tls-key"]] if flags else []
    proc = subprocess.Popen([sys.executable, "-m", "loadtests.stream_floor", "serve", level,
                             "--port", str(port), *tls])
    target = f"127.0.0.1:{port}"
    _wait_ready(target, proc, timeout=60, connection=secure.connection)
    return proc, target


def stream_cpu(proc: subprocess.Popen, target: str, events: list[pb.Event], secure: Secured
               ) -> tuple[float, float]:
    """(server CPU us an event, events/s) of one stream of `events` to the server `proc`."""
    before = tree_cpu_seconds(proc.pid)
    rate, accepted = asyncio.run(stream_ingest(target, events, 1, secure.connection))
    cpu = tree_cpu_seconds(proc.pid) - before
    if accepted != len(events):
        raise RuntimeError(f"{target}: {accepted} of {len(events)} events accepted")
    return cpu / len(events) * 1e6, rate


def raw_cpu(events: list[pb.Event], sync: bool) -> float:
    """`bench_profiles.raw_lmdb`'s puts (one record an event, batches of 500), in this process:
    its CPU us a record (user and system: the commits' fsync included), not its wall time,
    which a loaded machine's disk stretches."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    raw_lmdb(events, sync)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return cpu / len(events) * 1e6


def run(args) -> dict[str, list[tuple[float, float]]]:
    """Each server's (us an event, events/s) per round; a round streams fresh event ids."""
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    secure = secured(work / "tls", TLS_ROLES) if args.tls else Secured()
    servers = {level: start_floor(level, secure) for level in LEVELS}
    try:
        shutil.rmtree(work / "tailor", ignore_errors=True)
        servers["tailor"] = serve(work / "tailor", not args.no_sync, secure=secure,
                                  secrets_dir=work / "secrets")
        settle(servers["tailor"][0].pid)
        got: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for r in range(args.rounds):
            events = make_events(args.events, args.users, seed=3 + r, prefix=f"r{r}.")
            for ev in events:  # each round's users new to Tailor's store, as the first's
                ev.user_id = f"r{r}.{ev.user_id}"
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for name in order:
                got[name].append(stream_cpu(*servers[name], events, secure))
        return got
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()


def report(got: dict[str, list[tuple[float, float]]], raw_us: float, args) -> None:
    print(f"\n{args.events:,} events a round over {args.users:,} users, batches of {BATCH}, "
          f"{args.rounds} round(s), servers alternated; "
          f"{'TLS + token' if args.tls else 'plaintext'}; Tailor with fsync "
          f"{'off' if args.no_sync else 'on'}, encryption at rest on")
    print(f"{'server':<12}{'us an event (rounds)':<36}{'median':>8}{'events/s':>11}")
    median = {}
    for name, rounds in got.items():
        median[name] = statistics.median(us for us, _ in rounds)
        shown = ", ".join(f"{us:.1f}" for us, _ in rounds)
        print(f"{name:<12}{shown:<36}{median[name]:>8.1f}{statistics.median(r for _, r in rounds):>11,.0f}")
    print(f"raw LMDB    one record an event, batches of {BATCH}, in process: {raw_us:.1f} us of CPU "
          "a record")
    least = median["convert"] + raw_us
    print(f"\nconvert + one LMDB record an event = {least:.1f} us: the least a Tailor ingestion "
          f"could cost here (target 5 us); Tailor {median['tailor']:.1f} us, "
          + (f"x{median['tailor'] / median['transport']:.1f} the transport's"
             if median["transport"] else "the transport's under the CPU clock's tick"))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        p = argparse.ArgumentParser(prog="python -m loadtests.stream_floor serve")
        p.add_argument("level", choices=LEVELS)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--tls-cert", type=Path)
        p.add_argument("--tls-key", type=Path)
        a = p.parse_args(argv[1:])
        return asyncio.run(_serve(a.port, a.level, a.tls_cert, a.tls_key))
    p = argparse.ArgumentParser(prog="python -m loadtests.stream_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=positive(int), default=100_000)
    p.add_argument("--users", type=positive(int), default=20_000)
    p.add_argument("--rounds", type=positive(int), default=3)
    p.add_argument("--tls", action="store_true", help="TLS and a bearer token on every call")
    p.add_argument("--no-sync", action="store_true", help="Tailor and raw LMDB without fsync")
    p.add_argument("--work", type=Path, default=Path(".bench/stream-floor"))
    args = p.parse_args(argv)
    raw_us = raw_cpu(make_events(args.events, args.users), not args.no_sync)
    report(run(args), raw_us, args)


if __name__ == "__main__":
    main()
