"""Recommend vs empty-RPC benchmark on one server stack, with one load generator, in one run.

    python -m loadtests.bench --items 100000 1000000

For each catalog size: make demo data and train a bundle (cached under --work), start
`python -m server` on a free loopback port, then with the same generator measure
  1. Ping (empty RPC) max throughput (closed loop),
  2. Recommend k=10 max throughput (closed loop),
  3. Recommend latency at half its max throughput (open loop, Poisson arrivals),
and print QPS, p50, p99 and the ratio Recommend QPS / Ping QPS.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from .loadgen import PING, RECOMMEND, ping_payloads, recommend_payloads, run_load


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


def bench_catalog(bundle: Path, args) -> dict:
    port = _free_port()
    target = f"127.0.0.1:{port}"
    data_dir = bundle.parent.parent / f"serve-{port}"
    cmd = [sys.executable, "-m", "server", "--port", str(port), "--data-dir", str(data_dir),
           "--bundle", str(bundle), "--workers", str(args.workers)]
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"serve-{port}.log", "w")  # never an unread PIPE: it can fill
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
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
        ping = run_load(target, PING, pings, **load)
        rec = run_load(target, RECOMMEND, recs, **load)
        # Open loop at a fixed rate needs no parallel generators; extra ones only take the
        # server's CPU, so latency runs use --latency-procs (default 1).
        paced = dict(load, procs=args.latency_procs)
        half = run_load(target, RECOMMEND, recs, rate=rec.qps / 2, **paced)
        # the stack's own latency floor at that arrival rate (same generator, empty RPC)
        ping_half = run_load(target, PING, pings, rate=rec.qps / 2, **paced)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)  # holds a copy of the bundle (~1 GB at 1M)
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {"items": manifest["data"]["n_items"], "index": manifest["index"]["type"],
            "index_recall@10": manifest["index"].get("recall_at_10"),
            "ping": ping, "recommend": rec, "recommend_half": half, "ping_half": ping_half,
            "ratio": rec.qps / ping.qps if ping.qps else float("nan")}


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
    args = p.parse_args(argv)
    rows = [bench_catalog(ensure_bundle(args.work, n, args.users, args.days), args) for n in args.items]
    print(f"\nworkers={args.workers} loadgen procs={args.procs} (latency runs {args.latency_procs}) "
          f"concurrency={args.concurrency} "
          f"duration={args.duration}s")
    print(f"{'catalog':>9} {'index':>6} {'rpc':>22} {'QPS':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
          f" {'gen lag p99':>11} {'p99 from schedule':>17}")
    for r in rows:
        for name, res in (("Ping (empty)", r["ping"]), ("Recommend k=10 (max)", r["recommend"]),
                          ("Recommend @ half max", r["recommend_half"]),
                          ("Ping @ same rate", r["ping_half"])):
            paced = f" {res.lag_p99_ms:11.2f} {res.sched_p99_ms:17.2f}" if res.sched_p99_ms else ""
            print(f"{r['items']:>9} {r['index']:>6} {name:>22} {res.qps:8.0f} {res.p50_ms:7.2f} "
                  f"{res.p99_ms:7.2f} {res.errors:6d}{paced}")
        print(f"{'':>9} ratio Recommend/Ping QPS = {r['ratio']:.2f}   "
              f"index recall@10 vs exact = {r['index_recall@10']}")


if __name__ == "__main__":
    main()
