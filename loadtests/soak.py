"""Soak: steady mixed traffic for a long while, sampling what must not grow without bound.

    python -m loadtests.soak --minutes 35 [--users 10] [--rate 20] [--every 30] [--idle 120]
        [--out DIR] [--work .bench] [--bundle DIR] [--keep-data]

Starts `python -m server --workers 2` on loopback as production runs it (TLS, a bearer token,
metrics on, `--public-url`) on a fresh data dir, serving the demo bundle (600 items, 1,500
users; trained under --work unless --bundle), and drives it with the mix of
`loadtests/locust_soak.py` (`locust_mix.py`'s, paced: --users x --rate calls a second at most)
for --minutes. Every --every seconds a sample goes to OUT/samples.jsonl: each process of the
server's tree (main, workers, writer children: RSS, anonymous RSS, open fds, threads, CPU
seconds), the size of every file of the data dir, and the `tailor_` metrics. Locust's own
figures go to OUT/locust_*.csv (p50/p99 per RPC every 10 s in locust_stats_history.csv); the
mix's p99 SLOs are not judged (a shared machine misses them now and then): p99 is a figure.

After the load: --idle seconds of samples (the server's CPU should fall to ~0 and its queues
empty), then the events of the TrackEvents calls answered OK are looked for in ExportEvents,
and the server is stopped with SIGINT. OUT/summary.json and the printed table give the figures
at 5 minutes, half-way and the load's end, the idle CPU, the events lost and the stop's exit
code and seconds. Exit 1 when a call failed, an accepted event is missing, or the server did
not exit 0 within its grace; memory and disk growth are figures to read, not judged here (a
cache fills for its first minutes; the store grows with what is stored until retention).
The data dir goes at the end unless --keep-data (it grows ~1 GB an hour at 200 calls/s).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from .bench import _free_port, _wait_ready, ensure_bundle, secured
from .measure import CLOCK_TICKS, positive, start_server

__all__ = ["process_tree", "process_figures", "sample", "Sampler", "summarize", "main"]

ROLES = ("decider", "tracker", "analyst", "admin")
"""The token's: the mix's calls, its set-up (CreateCampaign, PreviewMessage) and ExportEvents."""
TRACK = "/tailor.v1.ProfileService/TrackEvents"
PAGE = os.sysconf("SC_PAGE_SIZE")
STOP_GRACE = 60.0
"""Seconds the server may take to exit after SIGINT."""


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:  # gone meanwhile
            pass
    return out


def _role(cmdline: str) -> str:
    if "spawn_main" in cmdline:
        return "worker"
    if "zygote_process" in cmdline:
        return "writer"
    if "resource_tracker" in cmdline:
        return "tracker"
    return "main"


def process_figures(pid: int) -> dict | None:
    """One process's role, RSS and anonymous RSS (MB), open fds, threads and CPU seconds; None
    if it is gone. Anonymous RSS is what a leak grows: the rest is mostly the LMDB file's pages
    mapped in, which follow the data file's size."""
    try:
        proc = Path(f"/proc/{pid}")
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
        return {"pid": pid, "role": _role((proc / "cmdline").read_bytes().decode(errors="replace")),
                "rss_mb": int((proc / "statm").read_text().split()[1]) * PAGE / 2**20,
                "anon_mb": int(status["RssAnon"].split()[0]) / 1024,
                "fds": len(os.listdir(proc / "fd")), "threads": int(fields[17]),
                "cpu_s": (int(fields[11]) + int(fields[12])) / CLOCK_TICKS}
    except (OSError, KeyError):
        return None


def _files(data_dir: Path) -> dict[str, int]:
    """Bytes on disk of every file under `data_dir`, by relative path."""
    out = {}
    for root, _, names in os.walk(data_dir):
        for name in names:
            path = Path(root, name)
            try:
                out[str(path.relative_to(data_dir))] = path.stat().st_blocks * 512
            except OSError:
                pass
    return out


def _metrics(url: str, ca: Path | None) -> dict[str, float]:
    """The `tailor_` samples of the metrics endpoint (histogram buckets left out)."""
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        text = urllib.request.urlopen(url, timeout=5, context=context).read().decode()
    except OSError as err:
        return {"error": str(err)}
    out = {}
    for line in text.splitlines():
        if line.startswith("tailor_") and "_bucket{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def sample(pid: int, data_dir: Path, metrics_url: str | None = None, ca: Path | None = None
           ) -> dict:
    procs = [f for f in map(process_figures, process_tree(pid)) if f is not None]
    return {"t": time.time(), "load": os.getloadavg(), "procs": procs, "files": _files(data_dir),
            "metrics": _metrics(metrics_url, ca) if metrics_url else {}}


class Sampler(threading.Thread):
    """`sample` every `every` seconds into `out` (JSON lines) until `stop`, kept in `rows`."""

    def __init__(self, out: Path, every: float, *args):
        super().__init__(daemon=True)
        self.out, self.every, self.args, self.rows = out, every, args, []
        self._stop_event = threading.Event()

    def run(self):
        with open(self.out, "a") as fh:
            while True:
                row = sample(*self.args)
                self.rows.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                if self._stop_event.wait(self.every):
                    return

    def stop(self):
        self._stop_event.set()
        self.join()


def _by_role(row: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in row["procs"]:
        agg = out.setdefault(p["role"], {"n": 0, "rss_mb": 0.0, "anon_mb": 0.0, "fds": 0,
                                         "threads": 0})
        agg["n"] += 1
        for key in ("rss_mb", "anon_mb", "fds", "threads"):
            agg[key] += p[key]
    return out


def _cpu(row: dict) -> float:
    return sum(p["cpu_s"] for p in row["procs"])


def _nearest(rows: list[dict], t: float) -> dict:
    return min(rows, key=lambda r: abs(r["t"] - t))


def _locust_windows(history: Path) -> list[tuple[float, float, float]]:
    """(time, p50 ms, p99 ms) of Locust's last-10-seconds window, every row it wrote."""
    if not history.exists():
        return []
    with open(history) as fh:
        return [(float(r["Timestamp"]), float(r["50%"] or 0), float(r["99%"] or 0))
                for r in csv.DictReader(fh) if r["Name"] == "Aggregated" and r["50%"] != "N/A"]


def _locust_totals(stats: Path) -> dict[str, tuple[int, int]]:
    """Per RPC (the full method): (calls, failures) of the whole run."""
    with open(stats) as fh:
        return {r["Name"]: (int(r["Request Count"]), int(r["Failure Count"]))
                for r in csv.DictReader(fh)}


def summarize(rows: list[dict], start: float, end: float, out: Path) -> dict:
    """The figures at 5 minutes, half-way and the end of the load (per process role, data dir
    MB, Locust's p50/p99 then), and the server's CPU over the idle samples after the load."""
    windows = _locust_windows(out / "locust_stats_history.csv")
    points = {}
    for label, t in (("5min", start + 300), ("half", (start + end) / 2), ("end", end)):
        row = _nearest([r for r in rows if r["t"] <= end + 1] or rows, min(t, end))
        near = min(windows, key=lambda w: abs(w[0] - row["t"])) if windows else (0, 0, 0)
        points[label] = {"minute": round((row["t"] - start) / 60, 1), "roles": _by_role(row),
                         "data_mb": sum(row["files"].values()) / 2**20,
                         "p50_ms": near[1], "p99_ms": near[2]}
    idle = [r for r in rows if r["t"] > end + 10]
    idle_cpu = ((_cpu(idle[-1]) - _cpu(idle[0])) / (idle[-1]["t"] - idle[0]["t"])
                if len(idle) >= 2 else None)
    queued = {k: v for k, v in (idle[-1]["metrics"] if idle else {}).items()
              if "queue_depth" in k and v}
    return {"points": points, "idle_cpu": idle_cpu, "idle_queued": queued}


def _exported_events(connection, target: str, since: float) -> int:
    """Events of the run (`lm-` ids, Locust's) in ExportEvents from `since` on."""
    from protos.tailor.v1 import profile_pb2 as ppb
    from protos.tailor.v1 import profile_pb2_grpc as pgrpc
    with connection.channel(target) as ch:
        return sum(e.event_id.startswith("lm-") for e in pgrpc.ProfileServiceStub(ch).ExportEvents(
            ppb.ExportEventsRequest(start=since - 60), timeout=600))


def _locust(args, target: str, connection, out: Path) -> int:
    cmd = [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locust_soak.py")),
           "--headless", "-u", str(args.users), "-r", str(max(1, args.users // 2)),
           "-t", f"{max(1, round(args.minutes * 60))}s", "--stop-timeout", "10", "--only-summary",
           "--host", target, "--rate", str(args.rate), "--batch", str(args.batch),
           "--user-count", "1500", "--item-count", "600", "--compose-users", "200",
           "--tls-ca", str(connection.tls_ca), "--token", connection.token,
           "--csv", str(out / "locust"), "--csv-full-history", "--slo", "*=60000"]
    with open(out / "locust.log", "w") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode


def _table(summary: dict) -> str:
    lines = ["| at | minute | process | n | RSS MB | anon MB | fds | threads | data MB | p50 ms | p99 ms |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, point in summary["points"].items():
        for role, agg in sorted(point["roles"].items()):
            lines.append(f"| {label} | {point['minute']} | {role} | {agg['n']} | {agg['rss_mb']:.0f} | "
                         f"{agg['anon_mb']:.0f} | {agg['fds']} | {agg['threads']} | "
                         f"{point['data_mb']:.0f} | {point['p50_ms']:.0f} | {point['p99_ms']:.0f} |")
    return "\n".join(lines)


def run(args) -> dict:
    """The soak (module doc); returns the summary also written to OUT/summary.json."""
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or ensure_bundle(args.work, 600, 1500, 30)
    secure = secured(out / "tls", ROLES)
    port, metrics_port, data = _free_port(), _free_port(), out / "data"
    flags = ["--port", str(port), "--data-dir", str(data), "--bundle", str(Path(bundle).resolve()),
             "--workers", "2", "--metrics-port", str(metrics_port), "--public-http-port",
             str(_free_port()), "--public-url", "https://soak.example", *secure.flags]
    target = f"127.0.0.1:{port}"
    with open(out / "server.log", "w") as log:
        server = start_server(flags, stderr=log)
    try:
        _wait_ready(target, server, connection=secure.connection)
        sampler = Sampler(out / "samples.jsonl", args.every, server.pid, data,
                          f"https://127.0.0.1:{metrics_port}/metrics", secure.connection.tls_ca)
        sampler.start()
        start = time.time()
        locust_rc = _locust(args, target, secure.connection, out)
        end = time.time()
        time.sleep(args.idle)
        sampler.stop()
        exported = _exported_events(secure.connection, target, start)
        t = time.monotonic()
        server.send_signal(signal.SIGINT)
        try:
            stop_rc = server.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            stop_rc = None  # killed below
        stop_s = time.monotonic() - t
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    totals = _locust_totals(out / "locust_stats.csv")
    calls, failures = totals.pop("Aggregated", (0, 0))
    track_calls, track_failures = totals.get(TRACK, (0, 0))
    track_ok = track_calls - track_failures
    summary = {**summarize(sampler.rows, start, end, out), "locust_rc": locust_rc,
               "calls": calls, "failures": failures, "events_accepted": track_ok * args.batch,
               "events_exported": exported,
               "events_lost": max(0, track_ok * args.batch - exported),
               "stop_rc": stop_rc, "stop_s": round(stop_s, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=positive(float), required=True, help="load time")
    p.add_argument("--users", type=positive(int), default=10, help="Locust users")
    p.add_argument("--rate", type=positive(float), default=20.0, help="calls/s per user, at most")
    p.add_argument("--batch", type=positive(int), default=10, help="events per TrackEvents")
    p.add_argument("--every", type=positive(float), default=30.0, help="seconds between samples")
    p.add_argument("--idle", type=float, default=120.0, help="seconds sampled after the load")
    p.add_argument("--out", type=Path, default=Path("soak-out"), help="samples, CSVs, summary")
    p.add_argument("--work", type=Path, default=Path(".bench"), help="cache for the demo bundle")
    p.add_argument("--bundle", type=Path, help="serve this bundle instead of the demo one")
    p.add_argument("--keep-data", action="store_true", help="keep OUT/data at the end")
    args = p.parse_args(argv)
    summary = run(args)
    print(_table(summary))
    print(f"idle CPU {summary['idle_cpu']} s/s, queued after the load {summary['idle_queued']}; "
          f"{summary['calls']} calls, {summary['failures']} failed; events accepted "
          f"{summary['events_accepted']}, exported {summary['events_exported']}, lost "
          f"{summary['events_lost']}; SIGINT: exit {summary['stop_rc']} in {summary['stop_s']} s")
    ok = (summary["failures"] == 0 and summary["locust_rc"] == 0 and summary["events_lost"] == 0
          and summary["stop_rc"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
