"""Recommend vs empty-RPC benchmark on one server stack, with one load generator, in one run.

    python -m loadtests.bench --items 100000 1000000

For each catalog size: make demo data and train a bundle (cached under --work), start
`python -m server` on a free loopback port, then with the same generator measure
  1. Ping (empty RPC) max throughput (closed loop),
  2. Recommend k=10 max throughput (closed loop),
  3. Recommend latency at half its max throughput (open loop, Poisson arrivals; other fractions
     with --load-fractions, each beside Ping at the same rate),
and print QPS, p50, p99, the server's CPU per call (its whole process tree, read by
loadtests/measure.py, the one measurement every bench uses) and the Recommend/Ping ratios of QPS
and of CPU per call. `--plot FILE.png` also draws p50/p99 latency against achieved QPS per RPC
(loadtests/plot.py; matplotlib, the bench extra).

`--impressions on|off|both` serves with the impression log on (the default server), off, or
both in one run: a server with the log off and one with it on, up together, the same bundle and
generator; the fixed-rate runs alternate between them (`--rounds N` times) at the rates taken from
the first server's max; then the p99 and server CPU per call of on vs off, paired by round.

`--compare-env NAME=VALUE ...` and `--compare-src DIR` are the same pairing for any setting or
commit: server A as usual and server B with these TAILOR_* variables set and/or run from the
source tree DIR, up together, runs alternated, then B minus A paired by round
(`--server-env NAME=VALUE ...` sets variables on every server of the run). With
`--impressions both` too, four servers (A and B, each with the log off and on), runs alternated,
and the on vs off figures of A and of B: what a change does to the log's cost, from one run.

`--interleave SECONDS` (with two servers) replaces the separate fixed-rate runs: one schedule at
each rate whose windows of SECONDS go to the two servers in turn (`--window-pairs` pairs), and
B's pooled p99 against A's with a bootstrap interval over the pairs, and the median over pairs
of the per-window p99 difference (`loadtests/interleave.py`): the tail compared on the same
seconds of the machine, which separate runs cannot do here.

`--tls` serves over TLS with a bearer token the server checks (a throwaway CA and certificate,
`loadtests/certs.py`, and an auth config with one minted token of the `decider` role), and every
RPC, Ping included, is called that way: the production setting the issue's targets name.

`--server-src DIR` runs the server from another source tree (cwd and PYTHONPATH=DIR, its kernels
built there), so before/after figures of two commits come from one machine and one generator:

    git worktree add /tmp/before HEAD~1 && (cd /tmp/before && python setup.py build_ext --inplace)
    python -m loadtests.bench --items 100000 --server-src /tmp/before
    python -m loadtests.bench --items 100000
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from clients.transport import Connection

from .interleave import paired_windows
from .loadgen import PING, RECOMMEND, ping_payloads, recommend_payloads, run_load, run_windows
from .measure import (
    add_plot_argument,
    add_server_src_argument,
    by_rpc,
    compare,
    idle_cpu,
    measure,
    positive,
    print_table,
    source_tree,
    start_server,
    tree_cpu_seconds,
    write_latency_plot,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str) -> None:
    print("$ python -m", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", *args], check=True)


def ensure_bundle(work: Path, items: int, users: int, days: int) -> Path:
    root = work / f"items{items}-users{users}-days{days}"
    bundles = root / "bundles"
    found = sorted(p for p in bundles.glob("*/manifest.json")) if bundles.exists() else []
    if found:
        return found[-1].parent
    data = root / "data"
    if not (data / "interactions.csv").exists():
        _run("training", "demo-data", "--out", str(data), "--items", str(items), "--users", str(users),
             "--days", str(days), "--seed", "1")
    _run("training", "train", "--interactions", str(data / "interactions.csv"), "--items",
         str(data / "items.csv"), "--out", str(bundles))
    return sorted(bundles.glob("*/manifest.json"))[-1].parent


def _wait_ready(target: str, proc: subprocess.Popen, timeout: float = 600, connection=None,
                poll: float | None = None) -> None:
    """Poll the health service until SERVING; `connection` (clients.transport.Connection) for TLS
    or a token, plaintext if None. Every poll but the last is followed by `poll` seconds
    (default `POLL_SECONDS`): a
    server listening but not yet SERVING was polled back to back on new channels (taking CPU
    from its own start-up), one not listening yet every 0.5 s (0.25 s lost per start)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with (connection.channel(target) if connection else grpc.insecure_channel(target)) as ch:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(POLL_SECONDS if poll is None else poll)
    raise TimeoutError("server did not become ready")


POLL_SECONDS = 0.05
"""`_wait_ready`'s pause between health checks."""


@dataclass(frozen=True)
class Served:
    """A running `python -m server` (see `serving`)."""

    target: str
    """host:port to call."""
    process: subprocess.Popen
    """The server's main process (its pid for loadtests/measure.py)."""
    data_dir: Path
    log: Path
    """The server's stderr, next to the data dir; kept after the data dir is removed."""


@contextlib.contextmanager
def serving(bundle: Path | None = None, prefix: str = "tailor-", *, flags=(), workers: int | None = None,
            server_src: Path | None = None, env: dict | None = None, data_dir: Path | None = None,
            stop_timeout: float = 30, connection=None):
    """`python -m server` on a free loopback port, serving `bundle` if given; yields `Served` once
    it is ready, and stops it and removes its data dir on the way out.

    Parameters
    ----------
    flags : extra server arguments (paths in them absolute).
    workers : `--workers`, the server's default if None.
    server_src, env : as `loadtests.measure.start_server`.
    data_dir : the data dir (created if missing; it may hold data already); default a new
        temporary directory named `prefix`*. Removed at the end either way.
    stop_timeout : seconds to wait for the server to exit after SIGTERM.
    connection : `clients.transport.Connection` for the readiness check (TLS, token).
    """
    port = _free_port()
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = ["--port", str(port), "--data-dir", str(data_dir)]
    if bundle is not None:
        argv += ["--bundle", str(Path(bundle).resolve())]
    if workers is not None:
        argv += ["--workers", str(workers)]
    log_path = Path(f"{data_dir}.log")
    with open(log_path, "w") as log:  # never an unread PIPE: it can fill and block the server
        server = start_server([*argv, *flags], server_src, env, stderr=log)
        try:
            try:
                _wait_ready(f"127.0.0.1:{port}", server, connection=connection)
            except RuntimeError:
                raise RuntimeError(f"server did not start; its log is {log_path}") from None
            yield Served(f"127.0.0.1:{port}", server, data_dir, log_path)
        finally:
            server.terminate()
            server.wait(timeout=stop_timeout)
            shutil.rmtree(data_dir, ignore_errors=True)


IMPRESSION_MODES = {"on": ("on",), "off": ("off",), "both": ("off", "on")}
"""`--impressions`: the impression log setting of each server a catalog is measured on, in order."""


@dataclass(frozen=True)
class Secured:
    """How the servers listen and the generator calls: server flags and the client side."""

    flags: tuple[str, ...] = ()
    connection: Connection = Connection()


def secured(folder: Path, roles: tuple[str, ...] = ("decider",)) -> Secured:
    """TLS with a throwaway CA and certificate, and an auth config holding one bearer token with
    `roles` (default `decider`, which Recommend needs; Ping takes any authenticated caller),
    under `folder`. A bench that also sets up its server over RPC names the roles that needs.
    The flags name absolute paths: a server run from another tree (`--compare-src`) starts in
    that tree (`bench_profiles --tls --compare-src` with its default, relative `--work` failed:
    `--tls-cert .bench/profiles/tls/server.pem: No such file or directory`)."""
    from server.security import tokens

    from .certs import CertificateAuthority
    folder = Path(folder).resolve()
    ca = CertificateAuthority(folder)
    cert = ca.issue("server")
    auth = folder / "auth.toml"
    token = tokens.mint(auth, "bench", list(roles))
    flags = ("--tls-cert", str(cert.cert), "--tls-key", str(cert.key), "--auth-config", str(auth))
    return Secured(flags, Connection(tls_ca=ca.cert, token=token))


def secured_if(tls: bool, stack: contextlib.ExitStack, roles: tuple[str, ...] = ("decider",)
               ) -> Secured:
    """`secured` in a temporary folder that `stack` removes when it closes, if `tls`; else
    plaintext and no auth (a bench's `--tls`)."""
    if not tls:
        return Secured()
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tailor-bench-tls-")))
    return secured(folder, roles)


def _env_pairs(pairs: list[str] | None) -> dict[str, str]:
    """`NAME=VALUE` arguments as a dict."""
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        out[name] = value
    return out


def server_variants(args) -> list[tuple[str | None, dict[str, str], Path | None]]:
    """(mode, environment, source tree) of each server a catalog is measured on, in order: the
    impression log's modes (`--impressions`), or A then B (`--compare-env`, `--compare-src`);
    `--server-env` in all."""
    common, src = _env_pairs(args.server_env), args.server_src
    trees = [(None, common, src)]
    if args.compare_env or args.compare_src:
        trees = [("A", common, src), ("B", {**common, **_env_pairs(args.compare_env)},
                                      args.compare_src or src)]
    if not args.impressions or (len(trees) == 2 and args.impressions != "both"):
        return trees
    return [(" ".join(filter(None, (t, m))),
             {**env, "TAILOR_IMPRESSION_LOG": "true" if m == "on" else "false"}, tree_src)
            for t, env, tree_src in trees for m in IMPRESSION_MODES[args.impressions]]


def _start(stack: contextlib.ExitStack, bundle: Path, args, env: dict[str, str],
           src: Path | None, secure: Secured) -> Served:
    """A server with `env` added to its environment, run from the source tree `src`."""
    # the data dir beside the bundle, not in /tmp: it holds a copy of the bundle (~1 GB at 1M)
    work = Path(tempfile.mkdtemp(prefix="serve-", dir=bundle.parent.parent))
    return stack.enter_context(serving(bundle, workers=args.workers, server_src=src,
                                       data_dir=work, env=env or None, flags=secure.flags,
                                       connection=secure.connection))


def bench_catalog(bundle: Path, args) -> dict:
    """Every server of `--impressions` up at once; max QPS of each beside Ping, then `--rounds`
    rounds of the fixed-rate runs, the servers alternating within each round, all at the rates
    taken from the first server's max (so on and off meet the same load and the same noise)."""
    with np.load(bundle / "users.npz") as npz:
        users = [str(u) for u in npz["user_ids"][:20000]]
    recs, pings = recommend_payloads(users, k=10), ping_payloads()
    with contextlib.ExitStack() as stack:
        secure = secured_if(args.tls, stack)
        load = dict(duration=args.duration, procs=args.procs, concurrency=args.concurrency,
                    connection=secure.connection)
        servers = [{"mode": m, "srv": _start(stack, bundle, args, env, src, secure), "paced": []}
                   for m, env, src in server_variants(args)]
        for s in servers:
            s["tag"] = ("" if s["mode"] is None else f" [log {s['mode']}]"
                        if s["mode"] in IMPRESSION_MODES else f" [{s['mode']}]")
            run_load(s["srv"].target, RECOMMEND, recs, concurrency=8, duration=2,
                     connection=secure.connection)  # warm-up
        for s in servers:
            pid, target = s["srv"].process.pid, s["srv"].target
            s["idle"] = idle_cpu(pid)
            # On a shared machine one pair can be off either way: alternate Ping and Recommend
            # `--repeat` times and keep the pair of the median CPU ratio (every ratio printed).
            pairs = sorted((compare(f"Recommend k=10 (max){s['tag']}", pid, target, RECOMMEND,
                                    recs, **load) for _ in range(args.repeat)),
                           key=lambda c: c.cpu_ratio)
            s["pair"], s["ratios"] = pairs[len(pairs) // 2], [c.cpu_ratio for c in pairs]
        base = servers[0]["pair"].method.load.qps
        if args.interleave:
            interleaved = [interleave_pair(servers, RECOMMEND, recs, base * frac, args, secure)
                           for frac in args.load_fractions]
        # Open loop at a fixed rate needs no parallel generators; extra ones only take the
        # server's CPU, so latency runs use --latency-procs (default 1).
        for r in range(0 if args.interleave else args.rounds):
            for frac in args.load_fractions:
                rate = dict(load, procs=args.latency_procs, rate=base * frac)
                label = "half max" if frac == 0.5 else f"{frac:g} x max"
                # the first server in odd rounds, the last in even ones: the first run of a
                # round was seen to fare worse, Ping's included (docs/performance.md, stop 40)
                for s in (servers if r % 2 == 0 else servers[::-1]):
                    pid, target = s["srv"].process.pid, s["srv"].target
                    s["paced"].append(measure(f"Recommend @ {label}{s['tag']}", pid, target,
                                              RECOMMEND, recs, **rate))
                    # the stack's own latency floor at that arrival rate (same generator, empty RPC)
                    s["paced"].append(measure(f"Ping @ same rate{s['tag']}", pid, target, PING,
                                              pings, **rate))
    manifest = json.loads((bundle / "manifest.json").read_text())
    runs = [m for s in servers for m in (s["pair"].ping, s["pair"].method, *s["paced"])]
    return {"items": manifest["data"]["n_items"], "index": manifest["index"]["type"],
            "index_recall@10": manifest["index"].get("recall_at_10"), "servers": servers,
            "ratios": servers[-1]["ratios"],
            "pair": servers[-1]["pair"], "runs": runs, "idle": servers[-1]["idle"],
            "interleaved": interleaved if args.interleave else []}


def interleave_pair(servers: list[dict], path: str, payloads: list[bytes], rate: float, args,
                    secure: Secured) -> dict:
    """The second server against the first at `rate`, window by window (`loadtests.interleave`),
    with each server tree's CPU per call over the run (its idle windows included; the
    generator's start-up and warm-up calls not)."""
    pids = [s["srv"].process.pid for s in servers]
    per_target, lag, errors, timeouts, (before, after) = run_windows(
        [s["srv"].target for s in servers], path, payloads, rate=rate, window=args.interleave,
        windows=2 * args.window_pairs, connection=secure.connection,
        probe=lambda: [tree_cpu_seconds(p) for p in pids])
    cpu = [a - b for a, b in zip(after, before)]
    calls = [sum(len(w) for w in wins) - late for wins, late in zip(per_target, timeouts)]
    return {"rate": rate, "names": [s["tag"].strip(" []") or "A" for s in servers],
            "result": paired_windows(per_target[1], per_target[0]),
            "cpu_us": [c / n * 1e6 if n else float("nan") for c, n in zip(cpu, calls)],
            "lag_p99_ms": float(np.percentile(lag, 99) * 1e3) if len(lag) else float("nan"),
            "errors": errors, "timeouts": timeouts}


def print_interleaved(runs: list[dict], window: float) -> None:
    """`--interleave`: B against A at each rate, from pooled windows."""
    for run in runs:
        r, (a, b) = run["result"], run["names"]
        print(f"interleaved at {run['rate']:.0f}/s, {r.windows} pairs of {window:g} s windows: "
              f"{b} vs {a}: p99 {r.p99_ms[0]:.2f} vs {r.p99_ms[1]:.2f} ms, difference "
              f"{r.diff_p99_ms:+.2f} ms ({r.confidence:.0%} interval {r.ci_ms[0]:+.2f} to "
              f"{r.ci_ms[1]:+.2f}); per-window p99 shift, median over pairs {r.window_shift_ms:+.2f} "
              f"ms ({r.window_ci_ms[0]:+.2f} to {r.window_ci_ms[1]:+.2f}); p50 {r.p50_ms[0]:.2f} "
              f"vs {r.p50_ms[1]:.2f} ms; calls "
              f"{r.calls[0]} vs {r.calls[1]}; server CPU per call {run['cpu_us'][1]:.1f} vs "
              f"{run['cpu_us'][0]:.1f} us (idle windows included); generator lag p99 "
              f"{run['lag_p99_ms']:.2f} ms; errors {run['errors'][1]} vs {run['errors'][0]} "
              f"(given up on at the deadline, in the p99s and the window calls: "
              f"{run['timeouts'][1]} vs {run['timeouts'][0]})", flush=True)


def print_impression_cost(servers: list[dict], compared: str = "") -> None:
    """On vs off (or B vs A of `--compare-env`/`--compare-src`), from one run: Recommend's p99
    per fixed-rate run (paired by round) and the median difference, and server CPU per call."""
    by = {s["mode"]: s for s in servers}
    if set(by) == {"A", "B"}:
        print(f"B ({compared}) vs A, same bundle, generator and rates; runs alternated:")
        _print_pair(by["B"], by["A"])
    elif set(by) == {"on", "off"}:
        print("impression log on vs off (same bundle, generator and rates; runs alternated):")
        _print_pair(by["on"], by["off"])
    elif set(by) == {"A off", "A on", "B off", "B on"}:
        for tree, name in (("A", "A"), ("B", f"B ({compared})")):
            print(f"{name}: impression log on vs off (same bundle, generator and rates; the four "
                  "servers' runs alternated):")
            _print_pair(by[f"{tree} on"], by[f"{tree} off"])


def _print_pair(on: dict, off: dict) -> None:
    """`print_impression_cost` of one pair of servers."""
    cpu_on, cpu_off = on["pair"].method.cpu_us_per_call, off["pair"].method.cpu_us_per_call
    print(f"  Recommend max: QPS {on['pair'].method.load.qps:.0f} vs {off['pair'].method.load.qps:.0f}; "
          f"server CPU per call {cpu_on:.1f} vs {cpu_off:.1f} us (x{cpu_on / cpu_off:.3f})")
    recs_on, recs_off = on["paced"][::2], off["paced"][::2]
    for a, b in zip(recs_on, recs_off):
        print(f"  {a.name}: p99 {a.load.p99_ms:.2f} vs {b.load.p99_ms:.2f} ms "
              f"({a.load.p99_ms - b.load.p99_ms:+.2f}), p50 {a.load.p50_ms:.2f} vs "
              f"{b.load.p50_ms:.2f} ms, CPU per call {a.cpu_us_per_call:.1f} vs "
              f"{b.cpu_us_per_call:.1f} us at {a.load.qps:.0f}/s", flush=True)
    if len(recs_on) > 1:
        dp99 = np.median([a.load.p99_ms - b.load.p99_ms for a, b in zip(recs_on, recs_off)])
        cpu = (np.median([a.cpu_us_per_call for a in recs_on]),
               np.median([b.cpu_us_per_call for b in recs_off]))
        print(f"  median over {len(recs_on)} paired runs: p99 {dp99:+.2f} ms; CPU per call "
              f"{cpu[0]:.1f} vs {cpu[1]:.1f} us (x{cpu[0] / cpu[1]:.3f})", flush=True)


def _compared(args) -> str:
    """What server B changes, in words."""
    src = [f"source {args.compare_src}"] if args.compare_src else []
    return " ".join([*(args.compare_env or ()), *src])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=positive(int), nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--users", type=positive(int), default=100_000)
    p.add_argument("--days", type=positive(int), default=30)
    p.add_argument("--duration", type=positive(float), default=15.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=positive(int), default=32, help="in-flight calls (closed loop)")
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--latency-procs", type=positive(int), default=1,
                   help="load generator processes for the fixed-rate (latency) runs")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--repeat", type=positive(int), default=1,
                   help="Ping/Recommend max-throughput pairs, alternated; the median ratio's is shown")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for data and bundles")
    p.add_argument("--load-fractions", type=float, nargs="+", default=[0.5], metavar="F",
                   help="fixed-rate (latency) runs at these fractions of Recommend's max QPS, "
                        "each with Ping at the same rate (more points for --plot)")
    p.add_argument("--rounds", type=positive(int), default=1,
                   help="fixed-rate runs per load fraction and server (alternating servers)")
    p.add_argument("--interleave", type=float, default=0.0, metavar="SECONDS",
                   help="two servers (--impressions both, --compare-env/--compare-src): instead of "
                        "separate fixed-rate runs, one schedule whose windows of SECONDS go to "
                        "each server in turn; pooled p99s and the difference's bootstrap interval")
    p.add_argument("--window-pairs", type=positive(int), default=30,
                   help="pairs of windows per fixed rate with --interleave")
    p.add_argument("--impressions", choices=sorted(IMPRESSION_MODES), default=None,
                   help="impression log on, off, or both (two servers, one run); default: the "
                        "server's own setting")
    p.add_argument("--compare-env", nargs="+", metavar="NAME=VALUE",
                   help="two servers, one run: the defaults (A) and one with these variables "
                        "set (B), runs alternated, B vs A paired by round")
    p.add_argument("--compare-src", type=source_tree, metavar="DIR",
                   help="two servers, one run: A from this tree (or --server-src), B from DIR "
                        "(with --compare-env too, if given), runs alternated, B vs A paired")
    p.add_argument("--server-env", nargs="+", metavar="NAME=VALUE",
                   help="environment variables set on every server of the run")
    p.add_argument("--tls", action="store_true",
                   help="serve over TLS with a bearer token the server checks (auth config), and "
                        "call every RPC that way")
    add_server_src_argument(p)
    add_plot_argument(p)
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.interleave and len(server_variants(args)) != 2:
        raise SystemExit("--interleave compares two servers: use it with --impressions both, "
                         "--compare-env or --compare-src")
    rows = [bench_catalog(ensure_bundle(args.work, n, args.users, args.days), args) for n in args.items]
    print(f"\nworkers={args.workers} loadgen procs={args.procs} (latency runs {args.latency_procs}) "
          f"concurrency={args.concurrency} duration={args.duration}s "
          f"{'TLS + token ' if args.tls else ''}server source={args.server_src or 'this tree'}")
    for r in rows:
        print(f"\ncatalog {r['items']} items, index {r['index']}, "
              f"index recall@10 vs exact = {r['index_recall@10']}")
        print_table(r["runs"], r["pair"], r["idle"])
        for s in r["servers"] if len(r["ratios"]) > 1 else ():
            print(f"server CPU ratio of each pair{s['tag']}: "
                  + ", ".join(f"x{x:.2f}" for x in s["ratios"]) + " (the table shows the median pair)")
        print_impression_cost(r["servers"], _compared(args))
        print_interleaved(r["interleaved"], args.interleave)
    if args.plot is not None:
        series = {k: v for r in rows for k, v in by_rpc(r["runs"], f" ({r['items']} items)").items()}
        write_latency_plot(series, args.plot, f"Latency vs load, workers={args.workers}")


if __name__ == "__main__":
    main()
