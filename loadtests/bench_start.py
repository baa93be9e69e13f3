"""What a server start costs: wall time to the first answer and CPU of the whole process tree.

    python -m loadtests.bench_start [--workers 1 2] [--rounds 3] [--compare-src DIR]

Every operator pays a start at each start and restart, and the test suite
pays it hundreds of times (its `ServerProcess` starts `python -m server` with 2 workers often).
For each round and each `--workers` N: start `python -m server --workers N --metrics-port M`
on free loopback ports with a new data dir and secrets dir, serving the tests' demo-sized bundle
(`tests/conftest.py` SMALL_WORLD, trained once under --work), poll gRPC health every
`POLL_SECONDS` on a new channel each time (as the tests do) until SERVING, and read then the
wall time since the Popen and the user + system CPU of the server's process tree
(`measure.tree_cpu_seconds`: the workers, the writers, every reaped child); then stop it
(SIGTERM) and start it again on the same data dir (a restart: no secrets or store to create).
Then the CPU of `python -m clients ping`, `python -m server --help` and `python -m training
--help` (getrusage of the waited child). Prints each figure's median over the rounds.

`--compare-src DIR` measures another source tree too (cwd and PYTHONPATH=DIR, kernels built
there), alternated with this one in every round, so before/after figures share the machine's
moments: on a shared machine, compare CPU, which others' load moves less than wall time.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .bench import _free_port, _wait_ready
from .measure import positive, source_tree, stop_on_sigterm, tree_cpu_seconds

SMALL_WORLD = ("--users", "1500", "--items", "600", "--days", "30", "--seed", "7")
"""The tests' demo world (tests/conftest.py): the bundle most test starts serve."""
POLL_SECONDS = 0.02
"""Pause between health checks: the wall figure is at most this late."""
COMMANDS = (("clients ping", ("clients", "ping", "--server")), ("server --help", ("server", "--help")),
            ("training --help", ("training", "--help")))
"""The short commands whose CPU is measured; `clients ping` gets the server's address."""


def _env(src: Path | None, tmp: Path) -> dict[str, str]:
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp / "secrets"), "OMP_WAIT_POLICY": "PASSIVE"}
    root = str((src or Path.cwd()).resolve())
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def ensure_bundle(work: Path) -> Path:
    """The demo-sized bundle under `work`, trained once (no report: the tests' own settings)."""
    bundles = work / "bundles"
    found = sorted(bundles.glob("*/manifest.json")) if bundles.exists() else []
    if found:
        return found[-1].parent
    data = work / "data"
    run = [sys.executable, "-m", "training"]
    subprocess.run([*run, "demo-data", "--out", str(data), *SMALL_WORLD], check=True)
    subprocess.run([*run, "train", "--interactions", str(data / "interactions.csv"), "--items",
                    str(data / "items.csv"), "--out", str(bundles), "--no-report"], check=True)
    return sorted(bundles.glob("*/manifest.json"))[-1].parent


def start_once(bundle: Path, data_dir: Path, workers: int, env: dict, cwd: Path | None,
               timeout: float = 120) -> tuple[float, float, str, subprocess.Popen]:
    """Start a server; (wall seconds, tree CPU seconds) at its first SERVING answer, its
    target and its process (left running)."""
    port = _free_port()
    argv = [sys.executable, "-m", "server", "--port", str(port), "--data-dir", str(data_dir),
            "--bundle", str(bundle), "--workers", str(workers), "--metrics-port", str(_free_port())]
    with open(f"{data_dir}.log", "a") as log:  # never an unread PIPE: it can block the server
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    target = f"127.0.0.1:{port}"
    try:
        _wait_ready(target, proc, timeout, poll=POLL_SECONDS)
    except (RuntimeError, TimeoutError):
        proc.kill()
        raise RuntimeError(f"server did not start; its log is {data_dir}.log") from None
    return time.perf_counter() - started, tree_cpu_seconds(proc.pid), target, proc


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def command_cpu(argv: list[str], env: dict, cwd: Path | None) -> float:
    """User + system CPU seconds of `python -m *argv` (exit status ignored: --help exits 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", *argv], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def measure_tree(src: Path | None, bundle: Path, workers: list[int], into: dict) -> None:
    """One round of one source tree: each start and command, appended to `into[name]`."""
    tmp = Path(tempfile.mkdtemp(prefix="tailor-bench-start-"))
    cwd = src.resolve() if src else None
    env = _env(src, tmp)
    try:
        for n in workers:
            data_dir = tmp / f"data{n}"
            for kind in ("first start", "restart"):
                wall, cpu, target, proc = start_once(bundle, data_dir, n, env, cwd)
                into.setdefault(f"{kind}, {n} worker(s)", []).append((wall, cpu))
                if kind == "restart" and n == workers[-1]:
                    for name, argv in COMMANDS:
                        extra = [target] if name == "clients ping" else []
                        into.setdefault(name, []).append((None, command_cpu([*argv, *extra], env, cwd)))
                _stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_medians(label: str, runs: dict) -> None:
    print(f"\n{label}: median over {len(next(iter(runs.values())))} round(s)")
    print(f"{'':<28}{'wall s':>9}{'CPU s':>9}   CPU of each round")
    for name, pairs in runs.items():
        walls = [w for w, _ in pairs if w is not None]
        wall = f"{statistics.median(walls):9.2f}" if walls else f"{'':>9}"
        cpus = [c for _, c in pairs]
        print(f"{name:<28}{wall}{statistics.median(cpus):9.2f}   "
              f"{', '.join(f'{c:.2f}' for c in cpus)}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_start", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=positive(int), nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=positive(int), default=3)
    p.add_argument("--work", type=Path, default=Path(".bench/start"), help="cache of the bundle")
    p.add_argument("--compare-src", type=source_tree, metavar="DIR",
                   help="also measure this source tree, alternated with this one each round")
    args = p.parse_args(argv)
    stop_on_sigterm()
    bundle = ensure_bundle(args.work).resolve()
    trees = {"this tree": None, **({f"{args.compare_src}": args.compare_src} if args.compare_src else {})}
    results: dict[str, dict] = {label: {} for label in trees}
    for i in range(args.rounds):
        for label, src in (trees.items() if i % 2 == 0 else reversed(trees.items())):
            measure_tree(src, bundle, args.workers, results[label])
    for label, runs in results.items():
        print_medians(label, runs)


if __name__ == "__main__":
    main()
