"""The decision-log writer alone: CPU per logged decision, in process, before/after in one run.

    python -m loadtests.bench_decision_log [--mode plan|choose|choose-ids|both] [--rounds 3]
        [--slices 1 4] [--batch 16] [--server-src DIR]
    python -m loadtests.bench_decision_log --paired [--server-src DIR] [--mode choose|choose-ids]
        [--batch 1 4] [--pairs 2000] [--warm 500] [--confidence 0.95] [--rounds 3]

Calls the campaigns writer's batch functions (`server.campaigns.repository.writer_functions`,
as the writer child process calls them) on a new store with fsync and encryption at rest on, and
prints this process's CPU time (user + system, and the system share) and the bytes it sent to
storage (`/proc/self/io`: with fsync, what the page cache wrote back for it) per decision, and
its write calls a transaction (LMDB's page writes and meta page write), after a fifth of the
calls as warm-up:
- plan: PlanCampaign transactions of `--slices` slices of 250 new users each
  ("decision_batches"; the server commits `PLAN_SLICES_A_COMMIT` = 1 a transaction beside
  other writes, `PLAN_SLICES_ALONE` = 4 alone, up to 8 before stop 23), push, no caps (every
  user gets a data key, a decision record and a contact history); each `--slices` value is a
  line of its own;
- choose: 2,500 ChooseVariant-sized transactions of `--batch` decisions ("decisions"; 16 by
  default; each value a line of its own) over 4,096 warm users (each has a data key and
  `WARM_CONTACTS` contacts before the first call, as the server bench's reused users do) on
  email with two caps (email 50/day, any 100/week), so contact histories grow as under
  `bench_contact`. The server's ChooseVariant batches are small (2-6 decisions a commit at
  max), so `--batch 1 4 16` shows the fixed cost of a transaction: the CPU per decision times
  the batch, against the batch;
- choose-ids: the same, each decision with a new request id (`campaigns.requests`: what the
  Python client sends), the ids remembered for `TAILOR_LIMITS__REQUEST_ID_WINDOW_SECONDS`
  (set it to 1 to measure the steady state, where each new id also forgets expired ones).
No gRPC and no load generator: steadier than the server benches on a shared machine. With
`--server-src DIR`, every round runs that tree's writer too (a subprocess with PYTHONPATH=DIR),
alternating with this tree's. Separate runs of the same code spread +-15% on a shared machine:
`--paired` instead runs both trees' writers at once, in child processes taking one choose
transaction each in turn (`paired_child`), and prints each tree's mean and median thread CPU a
transaction, the share of pairs where each was cheaper, and the difference of means with its
bootstrap interval over pairs (`loadtests.writer_pairs`), which resolves a few percent. Without
`--server-src`, this tree against itself: what the bench's own noise leaves.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPS = (("email", 50, 86400.0), ("*", 100, 7 * 86400.0))
USERS = 4096
WARM_CONTACTS = 2
"""Decisions logged for every user before a choose run's first call (in transactions of
`WARM_BATCH`), so every batch size meets users with data keys and histories."""
WARM_BATCH = 16
"""ChooseVariant-sized: warming in transactions of 512 wrote past the data file's filled
margin on the young store (`store.growth`), left its pages in large folios, and every later
commit of one decision sent 330 KiB to storage instead of 70."""


def _ids(n: int) -> list[str]:
    raw = os.urandom(12 * n).hex()
    return [raw[24 * i:24 * i + 24] for i in range(n)]


def _tree_ids():
    """n -> decision ids as the tree's server makes them (time-ordered since plan-speed; random
    before)."""
    try:
        from server.campaigns.decision_ids import decision_ids
    except ImportError:
        return _ids
    return lambda n: decision_ids(n, time.time())


def _row(decision_id: str, user: str, now: float, i: int, channel: str, caps: tuple) -> tuple:
    return (decision_id, "bench", user, now, i % 10, 0.1, None, [], 0, f"v{i % 10}", "pending",
            now + 86400, False, channel, 0.0, "", caps, 1.0, 1.0)


def _written() -> tuple[int, int]:
    """(bytes this process sent to storage, its write calls) so far: `write_bytes` and `syscw`
    of /proc/self/io, (0, 0) elsewhere. A commit's write calls are LMDB's page writes (one
    `pwrite` a dirty page, one `writev` a run of adjacent ones) and its meta page's: the
    figure that fewer pages a commit lowers (docs/performance.md, stop 61)."""
    try:
        with open("/proc/self/io") as f:
            io = dict(line.split(": ") for line in f)
        return int(io["write_bytes"]), int(io["syscw"])
    except (OSError, KeyError, ValueError):
        return 0, 0


def run(mode: str, slices: int = 4, batch: int = 16) -> tuple[float, float, float, float]:
    """(CPU microseconds, KiB sent to storage, system CPU microseconds) per decision of this
    process's code (its `server` package), and its write calls a transaction (`_written`);
    plan transactions of `slices` slices of 250, choose
    transactions of `batch` decisions. Its temporary store (tens of MB) is removed however the
    run ends (a round stopped by Ctrl-C left it in /tmp)."""
    root = Path(tempfile.mkdtemp(prefix="tailor-bench-decision-log-"))
    try:
        return _measure(root, mode, slices, batch)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _measure(root: Path, mode: str, slices: int, batch: int
             ) -> tuple[float, float, float, float]:
    """`run` on a new store under `root`, closed however it ends."""
    store = _open(root)
    try:
        return _calls(store, mode, slices, batch)
    finally:
        store.close()


def _open(root: Path):
    """A new store under `root` as the server's writer opens one: fsync and encryption at
    rest on."""
    from server.security.secrets import Secrets
    from server.store import Store
    from server.store.crypto import MASTER_RING, STORE_ID_RING, StoreCrypto
    secrets = Secrets.load(root / "secrets", generate=True, names=(MASTER_RING, STORE_ID_RING))
    return Store(root / "store", map_size=4 << 30, sync=True,
                 crypto=StoreCrypto.from_secrets(secrets))


def _calls(store, mode: str, slices: int, batch: int) -> tuple[float, float, float, float]:
    """The warm-up and the measured calls of `run` on `store`."""
    from server.campaigns.repository import writer_functions
    fns = writer_functions(store)
    call, calls = ((_planner(fns, slices), 480 // slices) if mode == "plan"
                   else (_chooser(fns, mode, batch), 2500))
    for k in range(calls // 5):
        call(k)
    t0, (disk0, writes0), n = os.times(), _written(), 0
    for k in range(calls // 5, calls):
        n += call(k)
    t1, (disk, writes) = os.times(), _written()
    user, system = t1.user - t0.user, t1.system - t0.system
    return (1e6 * (user + system) / n, (disk - disk0) / 1024 / n, 1e6 * system / n,
            (writes - writes0) / (calls - calls // 5))


def _planner(fns: dict, slices: int):
    """plan(k) -> decisions logged: PlanCampaign transaction k, `slices` slices of 250 new
    users."""
    ids = _tree_ids()

    def plan(k: int) -> int:
        now = time.time()
        fns["decision_batches"]([[_row(d, str(k * 1000 + j * 250 + i), now, i, "push", ())
                                  for i, d in enumerate(ids(250))] for j in range(slices)])
        return 250 * slices
    return plan


def _chooser(fns: dict, mode: str, batch: int):
    """choose(k, size=batch) -> decisions logged: ChooseVariant-sized transaction k over
    `USERS` users, warmed here first (`WARM_CONTACTS` decisions each, in transactions of
    `WARM_BATCH`: data keys made, histories begun)."""
    users = [f"u{i}" for i in range(USERS)]
    ids = _tree_ids()

    def choose(k: int, size: int = batch) -> int:
        now = time.time()
        fns["decisions"]([_row(d, users[(k * size + i) % USERS], now, i, "email", CAPS)
                          + ((False, os.urandom(16).hex().encode()) if mode == "choose-ids" else ())
                          for i, d in enumerate(ids(size))])
        return size
    for k in range(USERS * WARM_CONTACTS // WARM_BATCH):
        choose(k, WARM_BATCH)
    return choose


def paired_child(mode: str, batch: int, warm: int) -> None:
    """One tree's side of a paired run (`loadtests.writer_pairs`, run in a child process
    with that tree's `server`): a new store, its users warmed and `warm` transactions of
    `batch` made, then "ready" on stdout; after that, for each line read from stdin, the next
    transaction and its thread CPU (`CLOCK_THREAD_CPUTIME_ID`, ns) on a line of stdout. The
    writer's work all runs in the calling thread (the growth fill's too); what runs beside it
    (a request id conversion on a new store: nothing) is not counted. Ends at the end of
    stdin, its store removed."""
    root = Path(tempfile.mkdtemp(prefix="tailor-bench-writer-pairs-"))
    try:
        store = _open(root)
        try:
            from server.campaigns.repository import writer_functions
            choose = _chooser(writer_functions(store), mode, batch)
            for k in range(warm):
                choose(k)
            print("ready", flush=True)
            k = warm
            while sys.stdin.readline():
                t0 = time.thread_time_ns()
                choose(k)
                print(time.thread_time_ns() - t0, flush=True)
                k += 1
        finally:
            store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _in(src: Path | None, mode: str, slices: int, batch: int
        ) -> tuple[float, float, float, float]:
    if src is None:
        return run(mode, slices, batch)
    # this file's `run` with the other tree's `server` (that tree may not have this bench)
    out = subprocess.run([sys.executable, "-c", "import runpy, sys; print(runpy.run_path("
                          "sys.argv[1])['run'](sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))",
                          __file__, mode, str(slices), str(batch)], cwd=src,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path(src).resolve())},
                         capture_output=True, text=True)
    us, kib, sys_us, writes = out.stdout.split("\n")[-2].strip("()").split(",")
    return float(us), float(kib), float(sys_us), float(writes)


def main(argv=None) -> int:
    from .measure import add_server_src_argument, positive
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_decision_log", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("plan", "choose", "choose-ids", "both"), default=None,
                   help="default: both, or choose with --paired")
    p.add_argument("--rounds", type=positive(int), default=3)
    p.add_argument("--slices", type=positive(int), nargs="+", default=None,
                   help="slices of 250 per plan transaction (default: the server's two)")
    p.add_argument("--batch", type=positive(int), nargs="+", default=[16],
                   help="decisions per choose transaction (default: 16)")
    p.add_argument("--paired", action="store_true",
                   help="this tree's writer against --server-src's (itself without it) commit "
                        "by commit, in turn (loadtests.writer_pairs)")
    p.add_argument("--pairs", type=positive(int), default=2000,
                   help="with --paired: transactions of each tree measured (default: 2000)")
    p.add_argument("--warm", type=int, default=500,
                   help="with --paired: transactions of each before the pairs (default: 500)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="with --paired: of the difference's interval (default: 0.95)")
    add_server_src_argument(p)
    args = p.parse_args(argv)
    if args.paired:
        _check_paired(p, args)
        return _paired(args)
    args.mode = args.mode or "both"
    if args.slices is None:
        from server.campaigns.repository import PLAN_SLICES_A_COMMIT, PLAN_SLICES_ALONE
        args.slices = [PLAN_SLICES_A_COMMIT, PLAN_SLICES_ALONE]
    modes = [("plan", n, 0) for n in args.slices] if args.mode in ("plan", "both") else []
    choose = args.mode if args.mode != "both" else "choose"
    modes += [(choose, 0, b) for b in args.batch] if args.mode != "plan" else []
    for r in range(1, args.rounds + 1):
        for mode, slices, batch in modes:
            name = f"plan x{slices}" if slices else f"{mode} x{batch}"
            for label, src in ((("before", args.server_src),) if args.server_src else ()) + (
                    ("this tree", None),):
                load = os.getloadavg()[0]
                us, kib, sys_us, writes = _in(src, mode, slices, batch)
                per_txn = f", {us * batch:7.1f} us a transaction" if batch else ""
                print(f"round {r} {name:13s} {label:9s}: {us:6.1f} us CPU ({sys_us:6.1f} system)"
                      f"{per_txn}, {kib:6.1f} KiB to storage per decision, {writes:5.2f} write "
                      f"calls a transaction (load average {load:.1f})", flush=True)
    return 0


def _check_paired(p: argparse.ArgumentParser, args) -> None:
    """Usage errors of --paired: before the children warm their stores, not after."""
    args.mode = args.mode or "choose"
    if args.mode not in ("choose", "choose-ids"):
        p.error("--paired compares ChooseVariant-sized transactions: --mode choose or choose-ids")
    if args.pairs < 2:
        p.error(f"argument --pairs: {args.pairs} is too few for an interval (2 or more)")
    if args.warm < 0:
        p.error(f"argument --warm: {args.warm} is below 0")
    if not 0 < args.confidence < 1:
        p.error(f"argument --confidence: {args.confidence} is not between 0 and 1")


def _paired(args) -> int:
    """`--paired`: each round, each batch size, this tree (B) against the other (A)."""
    from .writer_pairs import across_rounds, commit_pairs, paired_cost, report
    this = Path(__file__).resolve().parents[1]
    other = args.server_src or this
    print(f"this tree: {this}; before: {other}", flush=True)
    rounds = {batch: ([], []) for batch in args.batch}
    for r in range(1, args.rounds + 1):
        for batch in args.batch:
            load = os.getloadavg()[0]
            b, a = commit_pairs(this, other, args.mode, batch, args.pairs, args.warm)
            cost = paired_cost(b, a, confidence=args.confidence)
            rounds[batch][0].append(cost.relative)
            rounds[batch][1].append(cost.se_relative)
            print(f"round {r} {args.mode} x{batch}, {args.pairs} pairs (load average {load:.1f}"
                  f" -> {os.getloadavg()[0]:.1f}):", *report(cost, ("this tree", "before")),
                  sep="\n", flush=True)
    for batch, (xs, errors) in rounds.items() if args.rounds > 1 else ():
        mean, (low, high) = across_rounds(xs, errors, args.confidence)
        print(f"{args.mode} x{batch} over {args.rounds} rounds: this tree - before "
              f"{100 * mean:+.1f}% [{100 * low:+.1f}, {100 * high:+.1f}] ({100 * args.confidence:g}%"
              " t interval over rounds, each on new stores: the figure to quote)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
