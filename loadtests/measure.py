"""How every benchmark measures an RPC: QPS and latency from the load generator, and the
server's CPU per call, each beside the empty RPC (DiagnosticsService Ping) in the same run.

Server CPU is the user + system time of the server's whole process tree (workers, writer
children, ...) read from /proc at the two ends of the load generator's window: `utime + stime`
of every live process in the tree, plus `cutime + cstime` (the time of children it has already
reaped), so a worker that exits during a run is still counted once. Linux only; resolution one
clock tick (usually 10 ms) per process, so runs of a few seconds keep the error well under 1%.
The window is the calls' own (`loadgen.run_load(probe=...)`): it opens when every generator
process has connected and warmed its connections (TLS handshakes and the warm-up calls are left
out) and closes when the last call has ended, before the connections close. What an idle server
burns in it (timers, sweeps) is still in it: `idle_cpu` shows how much, to judge that.

Starting the server from another source tree (`--server-src DIR` in every bench) runs
`python -m server` with cwd and PYTHONPATH set to DIR, so one run can take before/after figures
of two commits (e.g. a `git worktree` of the old commit, kernels built there with
`python setup.py build_ext --inplace`); the load generator and this module stay the current ones.

Each run also reads the machine's own counters (`/proc/stat`, all CPUs): `steal%`, the share of
the window's CPU time the hypervisor gave to other guests (a virtual machine on a shared host
runs slower then, and every figure of that run with it), printed in the table so runs taken on
a stolen machine can be told apart from the code's own changes.

`--plot FILE.png` (`add_plot_argument`, `write_latency_plot`) draws p50/p99 latency against
achieved QPS per RPC from the same rows (`loadtests.plot`; matplotlib, imported only then).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .loadgen import PING, LoadResult, ping_payloads, run_load

__all__ = ["FEW_CALLS", "tree_cpu_seconds", "machine_ticks", "cpu_line_ticks", "idle_cpu", "settle",
           "settle_all", "Measurement", "measure", "Comparison", "compare", "add_server_src_argument",
           "start_server", "print_table", "by_rpc",
           "add_plot_argument", "write_latency_plot"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FEW_CALLS = 1000
"""Fewer calls than this and a run's p99 is marked in `print_table`: ten calls or fewer above it."""


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime + stime + cutime + cstime in ticks) of `pid`, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 2:].split()  # the name may hold spaces and parentheses
    # after the name: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based in proc(5)
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid`, its live descendants and every child
    any of them has reaped."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    children: dict[int, list[int]] = {}
    for child, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(child)
    if pid not in stats:
        raise ProcessLookupError(f"no process {pid}")
    ticks, todo = 0, [pid]
    while todo:
        p = todo.pop()
        ticks += stats[p][1]
        todo.extend(children.get(p, ()))
    return ticks / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of every CPU since boot (`/proc/stat`'s first line)."""
    with open("/proc/stat", "rb") as fh:
        return cpu_line_ticks(fh.readline())


def cpu_line_ticks(line: bytes) -> tuple[int, int]:
    """(steal, total) of a `/proc/stat` "cpu" line: user nice system idle iowait irq softirq
    steal [guest guest_nice], the total without the guest fields (counted in user already)."""
    fields = [int(f) for f in line.split()[1:9]]
    return fields[7], sum(fields)


def idle_cpu(pid: int, seconds: float = 1.0) -> float:
    """CPU seconds per second the server tree burns with no calls (timers, sweeps, polling)."""
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    return (tree_cpu_seconds(pid) - before) / seconds


def settle(pid: int, below: float = 0.05, seconds: float = 1.0, timeout: float = 120.0) -> float:
    """Wait until the server tree burns less than `below` of a core over `seconds` with no
    calls (its start-up work done: a retention pass over a large store takes seconds), at
    most `timeout`; returns the last window's CPU seconds per second."""
    return settle_all([pid], below, seconds, timeout)[0]


def settle_all(pids: list[int], below: float = 0.05, seconds: float = 1.0,
               timeout: float = 120.0) -> list[float]:
    """`settle` for several servers in the same windows, until every one of them is under
    `below` (a bench's pair of servers waited one window after the other); each's last."""
    deadline = time.monotonic() + timeout
    while True:
        before = [tree_cpu_seconds(pid) for pid in pids]
        time.sleep(seconds)
        busy = [(tree_cpu_seconds(pid) - b) / seconds for pid, b in zip(pids, before)]
        if max(busy) < below or time.monotonic() >= deadline:
            return busy


@dataclass
class Measurement:
    """One load run and the server CPU it cost."""

    name: str
    load: LoadResult
    cpu_seconds: float
    rpc: str = ""
    """The method's name (the last part of its path), for grouping runs by RPC."""
    steal: float = 0.0
    """Share of the machine's CPU time stolen by the hypervisor during the run (0-1)."""

    @property
    def cpu_us_per_call(self) -> float:
        return self.cpu_seconds / self.load.calls * 1e6 if self.load.calls else float("nan")


def measure(name: str, server_pid: int, target: str, path: str, payloads: list[bytes],
            **load) -> Measurement:
    """`run_load(target, path, payloads, **load)` with the server tree's CPU and the machine's
    steal read at the ends of the calls' window."""
    result = run_load(target, path, payloads, **load,
                      probe=lambda: (tree_cpu_seconds(server_pid), machine_ticks()))
    (before, (steal, total)), (after, (steal_after, total_after)) = result.window
    return Measurement(name, result, after - before, path.rsplit("/", 1)[-1],
                       (steal_after - steal) / max(1, total_after - total))


@dataclass
class Comparison:
    """A method and the empty RPC, measured the same way against the same server."""

    method: Measurement
    ping: Measurement

    @property
    def qps_ratio(self) -> float:
        """method QPS / Ping QPS (1.0: the method costs no more than an empty call)."""
        return self.method.load.qps / self.ping.load.qps if self.ping.load.qps else float("nan")

    @property
    def cpu_ratio(self) -> float:
        """method CPU per call / Ping CPU per call (nan if Ping's run was under one clock tick)."""
        ping = self.ping.cpu_us_per_call
        return self.method.cpu_us_per_call / ping if ping > 0 else float("nan")


def compare(name: str, server_pid: int, target: str, path: str, payloads: list[bytes],
            **load) -> Comparison:
    """Ping, then the method, with the same generator settings (closed loop unless `rate`)."""
    ping = measure("Ping (empty RPC)", server_pid, target, PING, ping_payloads(), **load)
    return Comparison(measure(name, server_pid, target, path, payloads, **load), ping)


def print_table(rows: list[Measurement], comparison: Comparison | None = None,
                idle: float | None = None) -> None:
    """QPS, latency, server CPU per call and the machine's steal share of each run; then the
    method/Ping ratios. A p99 over fewer than `FEW_CALLS` calls is marked (and a note says
    what it is)."""
    print(f"{'rpc':<38} {'QPS':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/call':>11} {'errors':>6}"
          f" {'steal%':>6}")
    for m in rows:
        r = m.load
        p99 = f"{r.p99_ms:6.2f}*" if r.calls < FEW_CALLS else f"{r.p99_ms:7.2f}"
        print(f"{m.name:<38} {r.qps:8.0f} {r.p50_ms:7.2f} {p99} {m.cpu_us_per_call:11.1f} "
              f"{r.errors:6d} {100 * m.steal:6.1f}", flush=True)
    if any(m.load.calls < FEW_CALLS for m in rows):
        print(f"* p99 over fewer than {FEW_CALLS:,} calls: set by its {FEW_CALLS // 100} slowest "
              "calls or fewer (under 100 calls, by the slowest); longer runs for a steady p99")
    for m in rows:
        if m.load.sched_p99_ms:  # open loop: how late the generator ran behind its schedule
            print(f"{m.name:<38} generator lag p99 {m.load.lag_p99_ms:.2f} ms; "
                  f"p99 from schedule {m.load.sched_p99_ms:.2f} ms")
    if comparison is not None:
        c = comparison
        print(f"{c.method.name} / Ping: QPS x{c.qps_ratio:.2f}, server CPU per call "
              f"{c.method.cpu_us_per_call:.1f} / {c.ping.cpu_us_per_call:.1f} us = x{c.cpu_ratio:.2f}",
              flush=True)
    if idle is not None:
        print(f"idle server: {idle * 1e3:.1f} ms CPU per second (included in the windows above)")


def by_rpc(rows: list[Measurement], suffix: str = "") -> dict[str, list[Measurement]]:
    """The runs grouped by RPC (``name + suffix`` keys, in first-seen order)."""
    out: dict[str, list[Measurement]] = {}
    for m in rows:
        out.setdefault((m.rpc or m.name) + suffix, []).append(m)
    return out


def add_plot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="also draw p50/p99 latency vs achieved QPS per RPC to FILE.png "
                             "(needs matplotlib, the bench extra)")


def write_latency_plot(series: dict[str, list[Measurement]], path: Path, title: str) -> Path:
    """Draw ``series`` (name -> runs, e.g. `by_rpc`) to the PNG ``path``; prints where."""
    from .plot import save

    out = save(series, path, title)
    print(f"latency vs load plot: {out}", flush=True)
    return out


def positive(kind: type):
    """An argparse type: a number of `kind` above 0. A --duration of 0 measured nothing and
    ended the run on a ZeroDivisionError traceback; a --concurrency of 0 ran and printed
    figures of a load nobody asked for."""
    def parse(text: str):
        value = kind(text)  # not a number: argparse's "invalid ... value"
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def source_tree(text: str) -> Path:
    """An argparse type: a Tailor source tree to serve from (a directory holding
    server/__main__.py). Another path ended the bench on a FileNotFoundError traceback from
    subprocess, or later on a server that never answered."""
    path = Path(text)
    if not (path / "server" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a Tailor source tree (no "
                                         "server/__main__.py in it)")
    return path


def add_server_src_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server-src", type=source_tree, default=None, metavar="DIR",
                        help="run `python -m server` from this source tree (cwd and PYTHONPATH=DIR, "
                             "kernels built there) to compare two commits; default: this tree")


def start_server(argv: list[str], src: Path | None = None, env: dict | None = None,
                 stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """`python -m server *argv` (paths in argv must be absolute), from `src` if given."""
    stop_on_sigterm()
    full_env = {**os.environ, **(env or {})}
    cwd = None
    if src is not None:
        cwd = str(Path(src).resolve())
        full_env["PYTHONPATH"] = cwd + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "server", *argv], cwd=cwd, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def stop_on_sigterm() -> None:
    """A bench stopped by SIGTERM (`timeout`, a CI runner's cancel) unwinds as on Ctrl-C: its
    `finally` blocks stop the server and remove the data dir, which the signal's default
    action skips. Only from the main thread, and only over the default action."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
