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
from pathlib import Path

import grpc
import numpy as np

from .loadgen import PING, RECOMMEND, ping_payloads, recommend_payloads, run_load
from .measure import (
    add_plot_argument,
    add_server_src_argument,
    by_rpc,
    compare,
    idle_cpu,
    measure,
    print_table,
    start_server,
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


def _wait_ready(target: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    deadline = time.time() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.5)
    raise TimeoutError("server did not become ready")


@contextlib.contextmanager
def serving(bundle: Path, prefix: str = "tailor-"):
    """`python -m server` serving `bundle` on a free loopback port from a temporary data dir;
    yields its target and removes the data dir once the server stopped."""
    port, work = _free_port(), Path(tempfile.mkdtemp(prefix=prefix))
    server = start_server(["--port", str(port), "--data-dir", str(work),
                           "--bundle", str(Path(bundle).resolve())])
    try:
        _wait_ready(f"127.0.0.1:{port}", server)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def bench_catalog(bundle: Path, args) -> dict:
    port = _free_port()
    target = f"127.0.0.1:{port}"
    data_dir = bundle.parent.parent / f"serve-{port}"
    argv = ["--port", str(port), "--data-dir", str(data_dir.resolve()), "--bundle", str(bundle.resolve()),
            "--workers", str(args.workers)]
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"serve-{port}.log", "w")  # never an unread PIPE: it can fill
    server = start_server(argv, args.server_src, stderr=log)
    try:
        try:
            _wait_ready(target, server)
        except RuntimeError:
            raise RuntimeError(f"server did not start; its log is {log.name}") from None
        with np.load(bundle / "users.npz") as npz:
            users = [str(u) for u in npz["user_ids"][:20000]]
        load = dict(duration=args.duration, procs=args.procs, concurrency=args.concurrency)
        recs, pings = recommend_payloads(users, k=10), ping_payloads()
        run_load(target, RECOMMEND, recs, concurrency=8, duration=2)  # warm-up
        idle = idle_cpu(server.pid)
        pair = compare("Recommend k=10 (max)", server.pid, target, RECOMMEND, recs, **load)
        # Open loop at a fixed rate needs no parallel generators; extra ones only take the
        # server's CPU, so latency runs use --latency-procs (default 1).
        paced = []
        for frac in args.load_fractions:
            rate = dict(load, procs=args.latency_procs, rate=pair.method.load.qps * frac)
            label = "half max" if frac == 0.5 else f"{frac:g} x max"
            paced.append(measure(f"Recommend @ {label}", server.pid, target, RECOMMEND, recs,
                                 **rate))
            # the stack's own latency floor at that arrival rate (same generator, empty RPC)
            paced.append(measure("Ping @ same rate", server.pid, target, PING, pings, **rate))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)  # holds a copy of the bundle (~1 GB at 1M)
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {"items": manifest["data"]["n_items"], "index": manifest["index"]["type"],
            "index_recall@10": manifest["index"].get("recall_at_10"),
            "pair": pair, "runs": [pair.ping, pair.method, *paced], "idle": idle}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=32, help="in-flight calls (closed loop)")
    p.add_argument("--procs", type=int, default=1, help="load generator processes")
    p.add_argument("--latency-procs", type=int, default=1,
                   help="load generator processes for the fixed-rate (latency) runs")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for data and bundles")
    p.add_argument("--load-fractions", type=float, nargs="+", default=[0.5], metavar="F",
                   help="fixed-rate (latency) runs at these fractions of Recommend's max QPS, "
                        "each with Ping at the same rate (more points for --plot)")
    add_server_src_argument(p)
    add_plot_argument(p)
    args = p.parse_args(argv)
    rows = [bench_catalog(ensure_bundle(args.work, n, args.users, args.days), args) for n in args.items]
    print(f"\nworkers={args.workers} loadgen procs={args.procs} (latency runs {args.latency_procs}) "
          f"concurrency={args.concurrency} duration={args.duration}s "
          f"server source={args.server_src or 'this tree'}")
    for r in rows:
        print(f"\ncatalog {r['items']} items, index {r['index']}, "
              f"index recall@10 vs exact = {r['index_recall@10']}")
        print_table(r["runs"], r["pair"], r["idle"])
    if args.plot is not None:
        series = {k: v for r in rows for k, v in by_rpc(r["runs"], f" ({r['items']} items)").items()}
        write_latency_plot(series, args.plot, f"Latency vs load, workers={args.workers}")


if __name__ == "__main__":
    main()
