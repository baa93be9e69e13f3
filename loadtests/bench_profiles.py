"""Profile ingestion and read benchmark, in one run on one machine.

    python -m loadtests.bench_profiles [--events 200000] [--profiles 1000000] [--no-sync] [--tls]
        [--server-src DIR] [--encryption on|off|both] [--rounds N] [--ingest-chunks K]

1. Raw LMDB: the same records (events keys, serialized events) put in batches of 500 per write
   transaction, with the same durability setting (fsync per commit unless --no-sync), through
   `server.store.baseline` — the ceiling for comparison.
2. End to end: `python -m server` on loopback, events streamed with TrackEventStream in batches
   of 500 (validation, dedupe, feature kernel, raw event + dedupe records, commit), into an
   empty data dir, or with `--ingest-into stored` into a copy of one holding `--profiles` users
   (the steady state: events of known users, whose data keys exist); the CPU is read once the
   server's start-up work is done (`measure.settle`: its first retention pass walks every
   stored event).
3. GetProfile latency (p50/p99), every part and then only `--parts`, with `--profiles` stored
   profiles (loaded through the server's own repository with fsync off to save time; reads do not
   depend on how records were written),
   beside Ping with the same driver and concurrency (the latency floor of the gRPC stack),
   once the read server's start-up work is done (`measure.settle`: a retention pass over a
   large store takes seconds).

Server CPU (its whole process tree) is read around each step by loadtests/measure.py, the one
measurement every bench uses: CPU per ingested event and per streamed batch beside Ping's CPU
per call on the same server, and GetProfile's CPU per call beside Ping's, with their ratios.
`--encryption both` runs steps 2 and 3 with encryption at rest on and off (`encrypt_at_rest`;
each read store populated in its own mode), alternating, `--rounds` times, in one run, and prints
the ratios on/off of ingestion throughput, server CPU per event, GetProfile p50/p99 and server
CPU per call (medians over the rounds). Both read servers stay up for the whole run and each
round reads them in `--read-slices` alternated slices, so a burst of the shared machine's load
falls on both modes alike rather than on one mode's whole read window. The keyrings are
generated into `--work`/secrets.
`--tls` serves over TLS with a bearer token the server checks (`bench.secured`), and every
call, Ping included, goes that way: the setting issue 20's targets name.
`--server-src DIR` runs the server from another source tree (cwd and PYTHONPATH=DIR, its kernels
built there) to take before/after figures of two commits with one driver (see loadtests/bench.py).
With `--ingest-chunks K` (K > 1) step 2 runs both modes' servers at once and sends each round's
events in K chunks, to one server and then the other, the order swapped every chunk: a burst of
the machine's load then falls on both modes alike rather than on one mode's whole ingestion, and
the per-chunk ratios (median and quartiles) show how far one run's figure can be trusted.
`--encryption both --compare-src DIR` takes step 2 only, for this tree's server and DIR's,
encryption on and off, the four alternated in every round: each tree's on/off ratios from one
run (the spread between runs on a shared VM is larger than a change of a few percent).
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from clients.transport import Connection
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc

from .bench import Secured, _free_port, _wait_ready, secured
from .loadgen import PING, ping_payloads, run_load
from .measure import (
    Comparison,
    add_server_src_argument,
    compare,
    idle_cpu,
    measure,
    positive,
    print_table,
    settle,
    settle_all,
    source_tree,
    start_server,
    tree_cpu_seconds,
)

GET_PROFILE = "/tailor.v1.ProfileService/GetProfile"

BATCH = 500
TLS_ROLES = ("tracker", "analyst")
"""`--tls`'s token: TrackEventStream, and GetProfile with PII masked (a `pii-reader` would have
every read audited)."""
TYPES = ("view", "click", "add_to_cart", "purchase", "email_open", "email_sent")


def make_events(n: int, users: int, seed: int = 3, prefix: str = "b") -> list[pb.Event]:
    rng = np.random.default_rng(seed)
    now = time.time()
    u = rng.integers(0, users, n)
    it = rng.integers(0, 100_000, n)
    ty = rng.integers(0, len(TYPES), n)
    ts = now - rng.uniform(0, 30 * 86400, n)
    return [pb.Event(event_id=f"{prefix}{i}", user_id=f"u{u[i]}", type=TYPES[ty[i]], item_id=f"{it[i]}",
                     value=19.9 if ty[i] == 3 else 0.0, timestamp=float(ts[i])) for i in range(n)]


def raw_lmdb(events: list[pb.Event], sync: bool) -> float:
    """Records/s for batched puts of the serialized events (same count, same durability)."""
    from server.store import keys
    from server.store.baseline import batched_put_rate
    items = [(keys.event_key(e.user_id, e.timestamp, e.event_id), e.SerializeToString()) for e in events]
    return batched_put_rate(items, BATCH, sync)


async def stream_ingest(target: str, events: list[pb.Event], streams: int = 1,
                        connection: Connection | None = None) -> tuple[float, int]:
    """Events/s through TrackEventStream, batches of 500 spread over `streams` connections
    (`connection`: TLS and token, plaintext if None)."""
    batches = [pb.TrackEventsRequest(events=events[i:i + BATCH]) for i in range(0, len(events), BATCH)]
    connection = connection or Connection()
    channels = [connection.aio_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(streams)]

    async def one(ch, mine):
        async def gen():
            for b in mine:
                yield b
        return await pb_grpc.ProfileServiceStub(ch).TrackEventStream(gen(), timeout=3600)
    try:
        start = time.perf_counter()
        replies = await asyncio.gather(*(one(ch, batches[j::streams]) for j, ch in enumerate(channels)))
        seconds = time.perf_counter() - start
    finally:
        for ch in channels:
            await ch.close()
    return len(events) / seconds, sum(r.accepted for r in replies)


def populate(data_dir: Path, profiles: int, secrets_dir: Path, encrypt: bool) -> None:
    """Store `profiles` users (5 events each) through the server's own repository, fsync off,
    keyed and (if `encrypt`) sealed with the keyrings the bench server reads."""
    from server.profiles import ProfileSchema
    from server.profiles.events import TrackedEvent
    from server.profiles.repository import ProfileRepository
    from server.security.secrets import Secrets
    from server.store import Store
    from server.store.crypto import StoreCrypto
    crypto = StoreCrypto.from_secrets(Secrets.load(secrets_dir, generate=True), encrypt=encrypt)
    store = Store(data_dir / "store", map_size=16 << 30, sync=False, crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    now = time.time()
    chunk = 20_000
    for lo in range(0, profiles, chunk):
        evs = [TrackedEvent(f"p{u}-{j}", f"u{u}", TYPES[j % 4], "web", "", f"{(u * 7 + j) % 100_000}",
                            0.0, now - 3600 * j, {})
               for u in range(lo, min(lo + chunk, profiles)) for j in range(5)]
        repo.ingest(evs, [None] * len(evs))
    store.sync()
    store.close()


def read_payloads(profiles: int, n: int = 4096, parts: tuple[str, ...] = ()) -> list[bytes]:
    rng = np.random.default_rng(5)
    return [pb.GetProfileRequest(user_id=f"u{u}", parts=parts).SerializeToString()
            for u in rng.integers(0, profiles, n)]


def serve(data_dir: Path, sync: bool, workers: int = 1, src: Path | None = None,
          secrets_dir: Path | None = None, encrypt: bool = True, secure: Secured | None = None
          ) -> tuple[subprocess.Popen, str]:
    """`python -m server` on `data_dir` (`secure`: its TLS and auth flags, and how to reach it;
    plaintext and no auth if None)."""
    secure = secure or Secured()
    port = _free_port()
    env = {"TAILOR_LMDB_SYNC": "true" if sync else "false", "TAILOR_LMDB_MAP_SIZE": str(16 << 30),
           "TAILOR_ENCRYPT_AT_REST": "true" if encrypt else "false"}
    if secrets_dir is not None:
        env["TAILOR_SECRETS_DIR"] = str(secrets_dir.resolve())
    argv = ["--port", str(port), "--data-dir", str(data_dir.resolve()), "--workers", str(workers)]
    proc = start_server([*argv, *secure.flags], src, env)
    target = f"127.0.0.1:{port}"
    _wait_ready(target, proc, connection=secure.connection)
    return proc, target


def ingest_server(args, sync: bool, encrypt: bool) -> tuple[subprocess.Popen, str]:
    """A server for step 2 on a fresh data dir, or (`--ingest-into stored`) on a copy of a
    store already holding `--profiles` users; returned once its start-up work is done
    (`measure.settle`: its first retention pass walks every stored event), so the ingestion's
    CPU window holds the ingestion only."""
    proc, target = started_ingest_server(args, sync, encrypt)
    try:
        settle(proc.pid)
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    return proc, target


def started_ingest_server(args, sync: bool, encrypt: bool) -> tuple[subprocess.Popen, str]:
    """`ingest_server` before its settling (`ingest_interleaved` settles its two together)."""
    ingest_dir = args.work / f"ingest-{'on' if encrypt else 'off'}"
    shutil.rmtree(ingest_dir, ignore_errors=True)
    if args.ingest_into == "stored":
        shutil.copytree(stored_base(args, encrypt), ingest_dir)
    return serve(ingest_dir, sync, args.workers, args.server_src, args.secrets, encrypt,
                 args.secure)


def ingest(args, events, sync: bool, encrypt: bool) -> dict:
    """Step 2 (`ingest_server`): events/s, server CPU per event, Ping's CPU per call."""
    proc, target = ingest_server(args, sync, encrypt)
    try:
        cpu_before = tree_cpu_seconds(proc.pid)
        e2e, accepted = asyncio.run(stream_ingest(target, events, args.streams, args.conn))
        ingest_cpu = tree_cpu_seconds(proc.pid) - cpu_before
        ping = measure("Ping (empty RPC)", proc.pid, target, PING, ping_payloads(),
                       concurrency=args.streams, duration=args.read_seconds / 3,
                       connection=args.conn)
    finally:
        proc.terminate()
        proc.wait()
    assert accepted == len(events), f"only {accepted} of {len(events)} accepted"
    return {"rate": e2e, "cpu": ingest_cpu, "ping": ping}


def ingest_interleaved(args, events, sync: bool, first: bool) -> dict[bool, dict]:
    """Step 2 on both modes' servers at once, the events sent in `args.ingest_chunks` chunks,
    each chunk to one server and then the other (`first`'s leads, the order swapped every
    chunk), so both modes meet the same moments of a shared machine: per mode as `ingest`,
    plus `chunks`, each chunk's (seconds, CPU seconds)."""
    servers: dict[bool, tuple[subprocess.Popen, str]] = {}
    k = args.ingest_chunks
    bounds = [len(events) * c // k for c in range(k + 1)]  # k chunks, sizes within one event
    got: dict[bool, dict] = {e: {"chunks": [], "accepted": 0} for e in (first, not first)}
    try:
        for encrypt in (first, not first):  # each kept as soon as it runs: stopped below
            servers[encrypt] = started_ingest_server(args, sync, encrypt)
        settle_all([proc.pid for proc, _ in servers.values()])  # as `ingest_server`, in one go
        for c in range(k):
            chunk = events[bounds[c]:bounds[c + 1]]
            for encrypt in (first, not first) if c % 2 == 0 else (not first, first):
                proc, target = servers[encrypt]
                cpu_before = tree_cpu_seconds(proc.pid)
                rate, accepted = asyncio.run(stream_ingest(target, chunk, args.streams, args.conn))
                cpu = tree_cpu_seconds(proc.pid) - cpu_before
                got[encrypt]["chunks"].append((len(chunk) / rate, cpu))
                got[encrypt]["accepted"] += accepted
        for encrypt, (proc, target) in servers.items():
            got[encrypt]["ping"] = measure("Ping (empty RPC)", proc.pid, target, PING,
                                           ping_payloads(), concurrency=args.streams,
                                           duration=args.read_seconds / 3, connection=args.conn)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    for g in got.values():
        assert g["accepted"] == len(events), f"only {g['accepted']} of {len(events)} accepted"
        g["rate"] = len(events) / sum(s for s, _ in g["chunks"])
        g["cpu"] = sum(c for _, c in g["chunks"])
    return got


def reads(args, sync: bool, encrypt: bool, parts: list[str] = ()):
    """Step 3: (GetProfile-vs-Ping comparison, idle CPU, a comparison per `parts` entry)."""
    proc, target = serve(read_store(args, encrypt), sync, src=args.server_src, secrets_dir=args.secrets,
                         encrypt=encrypt, secure=args.secure)
    try:
        load = dict(concurrency=args.read_concurrency, duration=args.read_seconds,
                    connection=args.conn)
        settle(proc.pid)  # start-up work done (a retention pass over a large store)
        run_load(target, GET_PROFILE, read_payloads(args.profiles), concurrency=1,
                 duration=min(2.0, args.read_seconds), connection=args.conn)  # warm, as both's
        idle = idle_cpu(proc.pid)
        pair = compare("GetProfile", proc.pid, target, GET_PROFILE, read_payloads(args.profiles), **load)
        parted = [Comparison(measure(f"GetProfile parts={p}", proc.pid, target, GET_PROFILE,
                                     read_payloads(args.profiles, parts=tuple(p.split(","))),
                                     **load), pair.ping) for p in parts]
    finally:
        proc.terminate()
        proc.wait()
    return pair, idle, parted


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_profiles", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=positive(int), default=200_000)
    p.add_argument("--users", type=int, default=20_000, help="distinct users in the ingested events")
    p.add_argument("--profiles", type=int, default=1_000_000, help="stored profiles for the read test")
    p.add_argument("--read-seconds", type=positive(float), default=15.0)
    p.add_argument("--read-concurrency", type=positive(int), default=4)
    p.add_argument("--read-slices", type=positive(int), default=3,
                   help="with --encryption both: GetProfile runs per server and round, alternated")
    p.add_argument("--streams", type=int, default=1, help="concurrent TrackEventStream connections")
    p.add_argument("--workers", type=int, default=1, help="server worker processes for ingestion")
    p.add_argument("--ingest-into", choices=("fresh", "stored"), default="fresh",
                   help="step 2's data dir: empty (every user's first event makes their data key), "
                        "or a copy of a store holding --profiles users (events of known users, "
                        "the steady state; users below --profiles are known)")
    p.add_argument("--no-sync", action="store_true", help="no fsync per commit (crash-safe, not power-safe)")
    p.add_argument("--encryption", choices=("on", "off", "both"), default="on",
                   help="encryption at rest of the server (both: on and off in one run, with ratios)")
    p.add_argument("--rounds", type=int, default=1, help="with --encryption both: on/off pairs")
    p.add_argument("--ingest-chunks", type=positive(int), default=1,
                   help="with --encryption both: both modes' ingestion servers up at once, each "
                        "round's events sent in this many chunks, alternating between them (1: "
                        "one server after the other)")
    p.add_argument("--work", type=Path, default=Path(".bench/profiles"))
    p.add_argument("--parts", nargs="*", default=["attributes,consent", "attributes,consent,features"],
                   metavar="P1,P2", help="GetProfile `parts` of further read runs, one comma list each "
                        "(the first run asks for every part); none: no such run (servers before "
                        "`parts` existed return every part)")
    p.add_argument("--tls", action="store_true",
                   help="TLS and a checked bearer token (roles tracker and analyst) on every "
                        "call, Ping included")
    add_server_src_argument(p)
    p.add_argument("--compare-src", type=source_tree, default=None, metavar="DIR",
                   help="with --encryption both: ingestion only, this tree's server and DIR's, "
                        "alternated in every round")
    args = p.parse_args(argv)
    if args.ingest_chunks < 1:
        p.error("--ingest-chunks: at least 1")
    if args.ingest_chunks > 1 and (args.encryption != "both" or args.compare_src):
        p.error("--ingest-chunks: only with --encryption both (without --compare-src)")
    if args.ingest_chunks > args.events:
        p.error(f"--ingest-chunks: at most --events ({args.events})")
    sync = not args.no_sync
    args.work.mkdir(parents=True, exist_ok=True)
    args.secrets = args.work / "secrets"
    if args.tls:
        (args.work / "tls").mkdir(exist_ok=True)
    args.secure = secured(args.work / "tls", TLS_ROLES) if args.tls else Secured()
    args.conn = args.secure.connection
    if args.encryption == "both":
        return compare_trees(args, sync) if args.compare_src else compare_encryption(args, sync)
    encrypt = args.encryption == "on"
    events = make_events(args.events, args.users)
    raw = raw_lmdb(events, sync)
    got = ingest(args, events, sync, encrypt)
    e2e, ingest_cpu, ingest_ping = got["rate"], got["cpu"], got["ping"]
    pair, idle, parted = reads(args, sync, encrypt, args.parts)
    reads_, floor = pair.method.load, pair.ping.load
    print(f"\ndurability: {'fsync per commit' if sync else 'no fsync (crash-safe)'}; batches of {BATCH}; "
          f"encryption at rest {args.encryption}; "
          f"{'TLS + checked token' if args.tls else 'plaintext, no auth'} on every call")
    print(f"raw LMDB batched puts      {raw:>10,.0f} records/s  ({len(events)} records)")
    print(f"TrackEventStream end to end {e2e:>9,.0f} events/s   = {e2e / raw:.0%} of raw "
          f"({args.streams} stream(s), {args.workers} server worker(s))")
    print(f"GetProfile on {args.profiles:,} profiles: p50 {reads_.p50_ms:.2f} ms, p99 {reads_.p99_ms:.2f} ms "
          f"({reads_.qps:.0f} calls/s at concurrency {args.read_concurrency})")
    print(f"Ping, same driver and concurrency:  p50 {floor.p50_ms:.2f} ms, p99 {floor.p99_ms:.2f} ms "
          f"({floor.qps:.0f} calls/s) — the gRPC stack's own floor")
    per_event, per_batch = ingest_cpu / len(events) * 1e6, ingest_cpu / -(-len(events) // BATCH) * 1e6
    ping_us = ingest_ping.cpu_us_per_call
    print(f"\nserver CPU, ingestion: {per_event:.1f} us/event, {per_batch:.0f} us per batch of {BATCH} "
          f"= x{per_batch / ping_us:.1f} a Ping ({ping_us:.1f} us/call, same server, "
          f"concurrency {args.streams})")
    print(f"server CPU, reads ({args.read_seconds:g}s each, concurrency {args.read_concurrency}):")
    print_table([pair.ping, pair.method, *(c.method for c in parted)], pair, idle)
    for c in parted:
        print(f"{c.method.name} / Ping: server CPU per call {c.method.cpu_us_per_call:.1f} / "
              f"{c.ping.cpu_us_per_call:.1f} us = x{c.cpu_ratio:.2f}")


def read_store(args, encrypt: bool) -> Path:
    """The data dir of step 3 in one mode (populated on first use, then reused)."""
    read_dir = args.work / f"read-{args.profiles}-{'on' if encrypt else 'off'}"
    if not (read_dir / "store" / "data.mdb").exists():
        print(f"populating {args.profiles} profiles (encryption {'on' if encrypt else 'off'}) ...",
              flush=True)
        populate(read_dir, args.profiles, args.secrets, encrypt)
    return read_dir


def stored_base(args, encrypt: bool) -> Path:
    """The data dir every `--ingest-into stored` ingestion starts from (a copy of it): the
    read store's `--profiles` users, 5 events each, populated once in its own directory (no
    server ever opens it, so copying its files is a consistent copy)."""
    base = args.work / f"ingest-base-{args.profiles}-{'on' if encrypt else 'off'}"
    if not (base / "store" / "data.mdb").exists():
        print(f"populating the ingestion base, {args.profiles} profiles "
              f"(encryption {'on' if encrypt else 'off'}) ...", flush=True)
        populate(base, args.profiles, args.secrets, encrypt)
    return base


def paired_reads(servers: dict, args, first: bool) -> dict[bool, dict]:
    """Step 3 on both read servers ({encrypt: (proc, target)}, both up): Ping on each, then
    GetProfile in `args.read_slices` slices of `args.read_seconds` / slices per server,
    alternated (`first`'s server leads), so both modes meet the same moments of a shared
    machine. Per mode: the slices' median p50 and p99 and the CPU per call over all of them."""
    slice_s = args.read_seconds / args.read_slices
    load = dict(concurrency=args.read_concurrency, duration=slice_s, connection=args.conn)
    out: dict[bool, dict] = {}
    for encrypt, (proc, target) in servers.items():
        ping = measure("Ping", proc.pid, target, PING, ping_payloads(), **load)
        out[encrypt] = {"read_ping": ping.cpu_us_per_call, "p50": [], "p99": [], "cpu": 0.0,
                        "calls": 0}
    order = (first, not first)
    for s in range(args.read_slices):
        for encrypt in order if s % 2 == 0 else order[::-1]:
            proc, target = servers[encrypt]
            got = measure("GetProfile", proc.pid, target, GET_PROFILE,
                          read_payloads(args.profiles), **load)
            row = out[encrypt]
            row["p50"].append(got.load.p50_ms)
            row["p99"].append(got.load.p99_ms)
            row["cpu"] += got.cpu_seconds
            row["calls"] += got.load.calls
    for row in out.values():
        row.update(p50=float(np.median(row["p50"])), p99=float(np.median(row["p99"])),
                   read_cpu=row["cpu"] / max(row["calls"], 1) * 1e6)
        row["read_vs_ping"] = (row["read_cpu"] / row["read_ping"] if row["read_ping"]
                               else float("nan"))
    return out


def compare_encryption(args, sync: bool) -> None:
    """Steps 2 and 3 with encryption on and off, alternating, `args.rounds` times; ratios.
    Both read servers stay up for the whole run and are read in alternated slices
    (`paired_reads`); each round's ingestions start from a new data dir (`ingest_server`), one
    server after the other (`ingest`) or both at once in alternated chunks
    (`ingest_interleaved`, `--ingest-chunks`)."""
    rows: dict[bool, list[dict]] = {True: [], False: []}
    chunks: list[tuple[float, float]] = []
    servers: dict = {}
    try:
        for e in (True, False):  # one at a time, so a failed second start stops the first
            servers[e] = serve(read_store(args, e), sync, src=args.server_src,
                               secrets_dir=args.secrets, encrypt=e, secure=args.secure)
        settle_all([proc.pid for proc, _ in servers.values()])  # both in the same windows
        for _, target in servers.values():  # then warm: page cache, keys
            run_load(target, GET_PROFILE, read_payloads(args.profiles), concurrency=1,
                     duration=min(2.0, args.read_seconds), connection=args.conn)
        for r in range(args.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            events = make_events(args.events, args.users, prefix=f"r{r}")
            if args.ingest_chunks > 1:
                got = ingest_interleaved(args, events, sync, order[0])
                chunks.extend(_chunk_ratios(got))
            else:
                got = {e: ingest(args, events, sync, e) for e in order}
            read = paired_reads(servers, args, order[0])
            for encrypt in order:
                g = got[encrypt]
                g.update(read[encrypt], per_event=g["cpu"] / len(events) * 1e6,
                         ingest_ping=g["ping"].cpu_us_per_call)
                rows[encrypt].append(g)
                print(f"round {r} encryption {'on ' if encrypt else 'off'}: {g['rate']:,.0f} "
                      f"events/s, {g['per_event']:.1f} us CPU/event; GetProfile p50 {g['p50']:.2f} "
                      f"ms p99 {g['p99']:.2f} ms, {g['read_cpu']:.1f} us CPU/call (Ping "
                      f"{g['read_ping']:.1f})", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    med = {e: {k: float(np.median([g[k] for g in rows[e]]))
               for k in ("rate", "per_event", "p50", "p99", "read_cpu", "read_vs_ping")}
           for e in rows}
    for e in rows:  # CPU per event in Pings of the same server (contention moves both alike)
        med[e]["event_vs_ping"] = float(np.median([g["per_event"] / g["ingest_ping"] for g in rows[e]]))
    on, off = med[True], med[False]
    print(f"\nencryption on / off, medians of {args.rounds} round(s) ({args.events} events of "
          f"{args.users:,} users into a {args.ingest_into} store, {args.profiles:,} profiles, "
          f"{'fsync' if sync else 'no fsync'}):")
    print(f"  ingestion throughput   {on['rate']:>9,.0f} / {off['rate']:>9,.0f} events/s = "
          f"x{on['rate'] / off['rate']:.3f} ({1 - on['rate'] / off['rate']:+.1%} slower)")
    print(f"  server CPU per event   {on['per_event']:>9.1f} / {off['per_event']:>9.1f} us = "
          f"x{on['per_event'] / off['per_event']:.3f}")
    if chunks:
        pooled = {e: (sum(g["per_event"] for g in rows[e]),  # every round ingests as many events
                      len(rows[e]) / sum(1 / g["rate"] for g in rows[e])) for e in rows}
        slow, cpu = np.array([c[0] for c in chunks]), np.array([c[1] for c in chunks])
        cpu = cpu[np.isfinite(cpu)]
        print(f"  pooled over the rounds: throughput x{pooled[True][1] / pooled[False][1]:.3f} "
              f"({1 - pooled[True][1] / pooled[False][1]:+.1%} slower), CPU per event "
              f"x{pooled[True][0] / pooled[False][0]:.3f}")
        print(f"  {len(chunks)} interleaved chunk pairs: slower by median {np.median(slow):+.1%} "
              f"(quartiles {np.percentile(slow, 25):+.1%} to {np.percentile(slow, 75):+.1%}), "
              + (f"CPU per event x{np.median(cpu):.3f} (x{np.percentile(cpu, 25):.3f} to "
                 f"x{np.percentile(cpu, 75):.3f}, {len(cpu)} pairs over a clock tick)" if len(cpu)
                 else "CPU per event: every chunk under a clock tick"))
    print(f"  GetProfile p50         {on['p50']:>9.2f} / {off['p50']:>9.2f} ms = "
          f"x{on['p50'] / off['p50']:.3f}")
    print(f"  GetProfile p99         {on['p99']:>9.2f} / {off['p99']:>9.2f} ms = "
          f"x{on['p99'] / off['p99']:.3f}")
    print(f"  GetProfile CPU/call    {on['read_cpu']:>9.1f} / {off['read_cpu']:>9.1f} us = "
          f"x{on['read_cpu'] / off['read_cpu']:.3f}")
    print("  in Pings of the same server (a loaded machine inflates both alike):")
    print(f"  CPU per event / Ping   {on['event_vs_ping']:>9.3f} / {off['event_vs_ping']:>9.3f} = "
          f"x{on['event_vs_ping'] / off['event_vs_ping']:.3f}")
    print(f"  GetProfile / Ping CPU  {on['read_vs_ping']:>9.3f} / {off['read_vs_ping']:>9.3f} = "
          f"x{on['read_vs_ping'] / off['read_vs_ping']:.3f}")


def _chunk_ratios(got: dict[bool, dict]) -> list[tuple[float, float]]:
    """Per chunk pair of `ingest_interleaved`: (how much slower encryption on was, on/off CPU;
    NaN when the off chunk's CPU was under one clock tick, as a small chunk's can be)."""
    return [(1 - off_s / on_s, on_cpu / off_cpu if off_cpu > 0 else float("nan"))
            for (on_s, on_cpu), (off_s, off_cpu) in zip(got[True]["chunks"], got[False]["chunks"])]


def compare_trees(args, sync: bool) -> None:
    """Step 2 with encryption on and off for this tree's server (or `--server-src`'s) and
    `--compare-src`'s, the four runs of a round in a rotating order; each tree's ratios."""
    trees = {"A": args.server_src, "B": args.compare_src}
    runs = [(t, e) for t in trees for e in (True, False)]
    got: dict[tuple[str, bool], list[tuple[float, float]]] = {run: [] for run in runs}
    root = args.work
    for r in range(args.rounds):
        events = make_events(args.events, args.users, prefix=f"r{r}")
        for tree, encrypt in runs[r % 4:] + runs[:r % 4]:
            args.server_src, args.work = trees[tree], root / tree
            args.work.mkdir(parents=True, exist_ok=True)
            out = ingest(args, events, sync, encrypt)
            got[tree, encrypt].append((out["rate"], out["cpu"] / len(events) * 1e6))
            print(f"round {r} {tree} encryption {'on ' if encrypt else 'off'}: {out['rate']:,.0f} "
                  f"events/s, {got[tree, encrypt][-1][1]:.1f} us CPU/event", flush=True)
    print(f"\nencryption on / off per tree, {args.rounds} round(s) of {args.events} events "
          f"(A: {trees['A'] or 'this tree'}, B: {trees['B']}):")
    for tree in trees:
        on, off = np.array(got[tree, True]), np.array(got[tree, False])
        rate = np.median(on[:, 0]) / np.median(off[:, 0])
        print(f"  {tree}: throughput {np.median(on[:, 0]):,.0f} / {np.median(off[:, 0]):,.0f} "
              f"events/s = x{rate:.3f} ({1 - rate:+.1%} slower; median of the rounds' ratios "
              f"x{np.median(on[:, 0] / off[:, 0]):.3f}); CPU per event "
              f"{np.median(on[:, 1]):.1f} / {np.median(off[:, 1]):.1f} us = "
              f"x{np.median(on[:, 1]) / np.median(off[:, 1]):.3f}")


if __name__ == "__main__":
    main()
